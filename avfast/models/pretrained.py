"""A model from a folder: `config.json` -> JointUNet -> `model.safetensors`, loaded whole or not at all.

Sits above both the network (unet.py) and weights I/O (weights.py), so neither imports the other's way
back: the weights are checked against a model built on the meta device *before* anything is copied.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ModelConfig
from .unet import JointUNet
from .weights import CONFIG_NAME, WEIGHTS_NAME, check_state_dict, load_state_file


def from_pretrained(directory, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                    weights: str = WEIGHTS_NAME) -> JointUNet:
    """Builds the model from `directory/config.json` and loads `directory/<weights>` into it."""
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


EMA_WEIGHTS_NAME = "ema.safetensors"  # a training checkpoint's EMA weights (checkpoints/step-*/, final/)


def weights_name(directory) -> str:
    """The weights a folder's model is: a training checkpoint's EMA when it has one, else model.safetensors."""
    return EMA_WEIGHTS_NAME if (Path(directory) / EMA_WEIGHTS_NAME).is_file() else WEIGHTS_NAME


def load_model_folder(directory, device: torch.device | str = "cpu") -> JointUNet:
    """A model folder (config.json + model.safetensors) or a training checkpoint (its EMA weights)."""
    d = Path(directory)
    if not (d / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{d} is not a model folder ({CONFIG_NAME} + {WEIGHTS_NAME}, or a training "
                                f"checkpoint with {EMA_WEIGHTS_NAME})")
    return from_pretrained(d, device=device, weights=weights_name(d))
