"""The joint video–audio U-Net (CMMD), its presets and weights I/O.

    model = avfast.models.create("tiny")                  # or "paper-128", "paper-512", a ModelConfig
    v_pred, a_pred = model(v_t, a_t, t_v, t_a)            # v-prediction, one timestep per modality
    model.save_pretrained("ckpt/"); avfast.models.from_pretrained("ckpt/")
    avfast.models.default()                               # the shipped default (distilled for few steps)
    avfast.models.default("teacher")                      # the model it was distilled from
"""
from __future__ import annotations

from pathlib import Path

from .config import FUSIONS, PRESETS, ModelConfig, preset
from .pretrained import from_pretrained
from .unet import JointUNet
from .weights import save_pretrained, weights_checksum

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
DEFAULT_MODELS = ("student", "teacher")  # default() / default("teacher"); names "default" / "default:teacher"


def default_folder(which: str = "student") -> Path:
    """The folder of the shipped default ("student": the distilled model the demo uses) or of its teacher."""
    if which not in DEFAULT_MODELS:
        raise ValueError(f"default: expected one of {', '.join(DEFAULT_MODELS)}, got {which!r}")
    return DEFAULT_DIR if which == "student" else DEFAULT_DIR / "teacher"


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


def default(which: str = "student", device="cpu") -> JointUNet:
    """The trained model shipped inside the package: the distilled student (its config records the step
    count and sampler it was distilled for, which sampling uses when no steps are given), or with
    "teacher" the model it was distilled from. See docs/training.md for the commands that made both."""
    if isinstance(which, str) and (which in ("cpu", "cuda") or which.startswith("cuda:")):
        which, device = "student", which  # default("cuda"): the old signature's device
    folder = default_folder(which)
    if not (folder / "model.safetensors").is_file():
        raise DefaultModelUnavailable(
            f"this avfast installation has no trained default model (expected {folder}/model.safetensors); "
            f"pass a checkpoint folder instead")
    return from_pretrained(folder, device=device)


def resolve_model_name(name: "str | Path") -> Path:
    """"default" / "default:teacher" -> the shipped folders; anything else is a folder path."""
    if str(name) == "default":
        return default_folder("student")
    if str(name) == "default:teacher":
        return default_folder("teacher")
    return Path(name)


def checkpoint_folder(name: "str | Path | None") -> Path:
    """The model folder a checkpoint argument names: a folder, or "default" / "default:teacher" (None:
    "default"), checked before anything loads. DefaultModelUnavailable for a shipped model this installation
    lacks; FileNotFoundError for a path that is no folder or a folder without config.json."""
    name = "default" if name is None else name
    folder = resolve_model_name(name)
    if folder != Path(name):  # a shipped model's name, not a path
        if not (folder / "model.safetensors").is_file():
            raise DefaultModelUnavailable(f"this avfast installation has no trained default model (expected "
                                          f"{folder}/model.safetensors); pass a model folder")
    elif not folder.is_dir():
        raise FileNotFoundError(f"{str(name)!r} is not a folder (expected config.json + model.safetensors, or "
                                f"default / default:teacher)")
    elif not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(name)!r} has no config.json (expected config.json + model.safetensors)")
    return folder


__all__ = ["DEFAULT_DIR", "DefaultModelUnavailable", "checkpoint_folder", "FUSIONS", "JointUNet", "ModelConfig", "PRESETS", "create",
           "default", "default_folder", "DEFAULT_MODELS", "resolve_model_name", "from_pretrained", "preset", "save_pretrained", "weights_checksum"]
