"""The exporter's data files in the repository's `export/` folder: deployment profiles per preset and the
list of ONNX operators TensorRT's parser supports."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

# avfast/export/data.py -> the repository root's export/ folder (also the default output folder's parent).
EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"
PROFILES_FILE = EXPORT_DIR / "profiles.json"
TRT_OPS_FILE = EXPORT_DIR / "tensorrt_onnx_ops.json"
DEFAULT_OUT = EXPORT_DIR / "out"


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"avfast.export needs its data file {path}, which is missing (it ships in the "
                                f"repository's export/ folder; run from a checkout of avfast)")
    return json.loads(path.read_text())


@functools.cache
def profiles() -> dict[str, dict[str, Any]]:
    """Preset name -> its deployment profile (batch, frames, audio_length, precision, opset, dynamic_batch, ...)."""
    return _load(PROFILES_FILE)["profiles"]


def profile(preset: str) -> dict[str, Any]:
    table = profiles()
    if preset not in table:
        raise ValueError(f"unknown preset {preset!r}; export/profiles.json has {', '.join(table)}")
    return dict(table[preset])


@functools.cache
def tensorrt_ops() -> dict[str, Any]:
    """{"opset_range": [lo, hi], "operators": {op: [types]}, ...} from export/tensorrt_onnx_ops.json."""
    return _load(TRT_OPS_FILE)
