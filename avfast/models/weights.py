"""Weights I/O: `config.json` + `model.safetensors` in a folder. Never pickle.

Saving writes each file under a temporary name in the target folder, fsyncs it and renames it, so an
interrupted save never leaves a half-written file under the real name. `check_state_dict` checks every
tensor (missing, unexpected, mis-shaped, wrong dtype kind) against a model *before* anything is copied
into it. This module knows no network class: building the model from a folder is
`avfast.models.pretrained.from_pretrained`, which sits above both.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .._io import atomic_write_bytes, load_state_file, state_dict_bytes  # noqa: F401 (re-exported)
from .._state_dict import state_dict_problems

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes, in name order (device and layout independent)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().contiguous().cpu()
        h.update(f"{k}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_pretrained(model: torch.nn.Module, directory, state_dict: dict | None = None) -> Path:
    """Writes `directory/config.json` and `directory/model.safetensors` (atomically, each)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state_dict is None else state_dict
    atomic_write_bytes(d / WEIGHTS_NAME, state_dict_bytes(state, {"format": "pt", "avfast": "JointUNet"}))
    atomic_write_bytes(d / CONFIG_NAME, model.config.to_json().encode())
    return d


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raises one ValueError listing every missing, unexpected and mis-shaped tensor."""
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise ValueError(f"weights in {source} do not match the model its config describes: " + "; ".join(problems)
                         + ". Nothing was loaded.")


def __getattr__(name: str):
    # Weights I/O does not import the network: from_pretrained (config -> JointUNet -> weights) lives in
    # avfast/models/pretrained.py, above both. The old import path works for one release.
    if name == "from_pretrained":
        import warnings

        from . import pretrained  # deprecated alias, one release (an allowed edge in tests/test_layering.py)

        warnings.warn("avfast.models.weights.from_pretrained moved to avfast.models.from_pretrained "
                      "(avfast.models.pretrained); the old name is removed in the next release", DeprecationWarning,
                      stacklevel=2)
        return pretrained.from_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
