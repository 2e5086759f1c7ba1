"""The exporter's data files, shipped inside the package (avfast/export/*.json, package data): deployment
profiles per preset and the list of ONNX operators TensorRT's parser supports. Also the default output
folder, `export/out` under the current directory (never inside the installed package)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent
PROFILES_FILE = DATA_DIR / "profiles.json"
TRT_OPS_FILE = DATA_DIR / "tensorrt_onnx_ops.json"
# Relative: resolved against the current directory when the export runs (in a checkout's root, the
# repository's git-ignored export/out/).
DEFAULT_OUT = Path("export") / "out"


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"avfast.export needs its data file {path}, which is missing from this installation "
                                f"(it ships as package data in avfast/export/; reinstall avfast)")
    return json.loads(path.read_text())


@functools.cache
def profiles() -> dict[str, dict[str, Any]]:
    """Preset name -> its deployment profile (batch, frames, audio_length, precision, opset, dynamic_batch, ...)."""
    return _load(PROFILES_FILE)["profiles"]


def profile(preset: str) -> dict[str, Any]:
    table = profiles()
    if preset not in table:
        raise ValueError(f"unknown preset {preset!r}; avfast/export/profiles.json has {', '.join(table)}")
    return dict(table[preset])


@functools.cache
def tensorrt_ops() -> dict[str, Any]:
    """{"opset_range": [lo, hi], "operators": {op: [types]}, ...} from avfast/export/tensorrt_onnx_ops.json."""
    return _load(TRT_OPS_FILE)
