"""Weights I/O: `config.json` + `model.safetensors` in a folder. Never pickle.

Saving writes each file under a temporary name in the target folder, fsyncs it and renames it, so an
interrupted save never leaves a half-written file under the real name. Loading checks every tensor
(missing, unexpected, mis-shaped, wrong dtype kind) against the model built from the config *before*
anything is copied into it: a model is either loaded whole or not at all.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .._io import atomic_write_bytes, load_state_file, state_dict_bytes  # noqa: F401 (re-exported)
from .._state_dict import state_dict_problems
from .config import ModelConfig

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


def from_pretrained(directory, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                    weights: str = WEIGHTS_NAME):
    """Builds the model from `directory/config.json` and loads `directory/<weights>` into it."""
    from .unet import JointUNet

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"from_pretrained: no folder at {d} (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    cfg_path = d / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"from_pretrained: {d} has no {CONFIG_NAME}")
    config = ModelConfig.from_json(cfg_path)
    state = load_state_file(d / weights)
    with torch.device("meta"):
        probe = JointUNet(config)
    check_state_dict(probe, state, str(d / weights))
    model = JointUNet(config)
    model.load_state_dict(state, strict=True)
    model = model.to(device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
