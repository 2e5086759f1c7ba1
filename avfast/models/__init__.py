"""The joint video–audio U-Net (CMMD), its presets and weights I/O.

    model = avfast.models.create("tiny")                  # or "paper-128", "paper-512", a ModelConfig
    v_pred, a_pred = model(v_t, a_t, t_v, t_a)            # v-prediction, one timestep per modality
    model.save_pretrained("ckpt/"); avfast.models.from_pretrained("ckpt/")
    avfast.models.default()                               # the trained tiny model shipped in the package
"""
from __future__ import annotations

from pathlib import Path

from .config import FUSIONS, PRESETS, ModelConfig, preset
from .pretrained import from_pretrained
from .unet import JointUNet
from .weights import save_pretrained, weights_checksum

DEFAULT_DIR = Path(__file__).resolve().parent / "default"


class DefaultModelUnavailable(FileNotFoundError):
    """The package's trained default model is not in this installation."""


def create(config: "str | ModelConfig" = "tiny", **overrides) -> JointUNet:
    """A freshly initialised model from a preset name or a ModelConfig; keyword overrides replace fields
    (e.g. `create("paper-128", frames=36, fusion="cmcpe")`)."""
    if isinstance(config, str):
        cfg = preset(config)
    elif isinstance(config, ModelConfig):
        cfg = config
    else:
        raise TypeError(f"create: expected a preset name ({', '.join(PRESETS)}) or a ModelConfig, "
                        f"got {type(config).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    return JointUNet(cfg)


def default(device="cpu") -> JointUNet:
    """The trained `tiny` model shipped inside the package (see the README for the command that trained it)."""
    if not (DEFAULT_DIR / "model.safetensors").is_file():
        raise DefaultModelUnavailable(
            f"this avfast installation has no trained default model (expected {DEFAULT_DIR}/model.safetensors); "
            f"pass a checkpoint folder instead")
    return from_pretrained(DEFAULT_DIR, device=device)


__all__ = ["DEFAULT_DIR", "DefaultModelUnavailable", "FUSIONS", "JointUNet", "ModelConfig", "PRESETS", "create",
           "default", "from_pretrained", "preset", "save_pretrained", "weights_checksum"]
