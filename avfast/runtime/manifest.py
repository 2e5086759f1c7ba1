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


def first_step_graph(graph_path: str | Path, first_step: Any = None,
                     manifest: dict[str, Any] | None = None) -> tuple[Path, float] | None:
    """(path, t_min) of an int8 export's first-step graph (see avfast.runtime.base), or None.

    `first_step`: None reads the manifest's `quantization.first_step`; False: none (the main graph for every
    call); a dict {"onnx": file name next to the graph, "t_min": float} gives it (the export does, before
    its manifest exists). `manifest`: the graph's manifest where the caller has read it already."""
    if first_step is False:
        return None
    if first_step is None:
        manifest = read_manifest(graph_path) if manifest is None else manifest
        first_step = ((manifest or {}).get("quantization") or {}).get("first_step")
        if not first_step:
            return None
    if not isinstance(first_step, dict) or "onnx" not in first_step or "t_min" not in first_step:
        raise ValueError(f"`first_step` must be None, False or a dict with 'onnx' and 't_min', got {first_step!r}")
    path = Path(graph_path).with_name(str(first_step["onnx"]))
    if not path.is_file():
        raise FileNotFoundError(f"the int8 export {graph_path} names a first-step graph {path.name} that is not "
                                f"there; copy it with the export or export again")
    return path, float(first_step["t_min"])
