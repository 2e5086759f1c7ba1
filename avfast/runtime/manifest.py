"""The manifest `<name>.json` written next to `<name>.onnx` by `python -m avfast.export`.

It records what the graph is (preset, ModelConfig, shapes, dtypes, opset, input/output names, the
weights' checksum), how it was checked (parity figures) and how fast it ran (ms/FE per runtime, with
the machine). Runtimes read it back for the model config and the batch range of a dynamic graph.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..models.config import ModelConfig
from .base import IOSpec

FORMAT = "avfast-export"
VERSION = 1


def manifest_path(graph_path: str | Path) -> Path:
    """`dir/name.onnx` or `dir/name.engine` -> `dir/name.json`."""
    return Path(graph_path).with_suffix(".json")


def read_manifest(graph_path: str | Path) -> dict[str, Any] | None:
    """The manifest next to a graph or engine, or None when there is none."""
    path = manifest_path(graph_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"manifest {path} is not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an avfast export manifest (no \"format\": \"{FORMAT}\")")
    if data.get("version", 0) > VERSION:
        raise ValueError(f"{path} has manifest version {data['version']}; this avfast reads up to {VERSION}")
    return data


def spec_and_config(graph_path: str | Path, graph_spec: IOSpec) -> tuple[IOSpec, ModelConfig | None]:
    """Completes the spec read from a graph with its manifest: the model config and a dynamic batch's range."""
    data = read_manifest(graph_path)
    if data is None:
        return graph_spec, None
    config = ModelConfig.from_dict(data["config"], str(manifest_path(graph_path)))
    spec = graph_spec
    if spec.batch is None and data.get("batch_range"):
        lo, hi = data["batch_range"]
        spec = dataclasses.replace(spec, batch_range=(int(lo), int(hi)))
    return dataclasses.replace(spec, num_train_steps=config.num_train_steps), config
