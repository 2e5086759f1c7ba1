"""`FrameCodec`: the small frame autoencoder trained here and shipped beside the default model.

    codec = load_autoencoder("avfast/models/default/autoencoder")
    z = codec.encode(video)        # [B, 3, F, 32, 32] in [-1, 1] -> [B, 4, F, 8, 8], about unit variance
    video = codec.decode(z)        # and back

Why it exists: the pixel-space `tiny` model passed part of the input noise straight through its
4x4-patch output layer (its x0 prediction of a real clip noised to t = 100 kept ~35 % of the noise's
high-frequency energy), and every sampler step left that noise in the clip: generated frames carried
~25x the pixel residual of the data. CMMD's answer is latent diffusion (CMMD §3: SD-VAE latents);
the SD VAE is a 84 M-parameter download and needs frames of >= 64 px, so the default uses this codec
instead: a per-frame conv autoencoder (÷4, 4 latent channels) trained on the synthetic frames in a few
minutes (`python -m avfast.train.autoencoder`). Its decoder draws every pixel the user sees, and it is
trained on latents with added noise, so a diffusion model's small latent errors decode to clean frames
rather than speckle.

The folder layout is the models' own: `config.json` (an `AutoencoderConfig`) + `model.safetensors`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import FrameAutoencoder

CONFIG_VERSION = 1


@dataclass
class AutoencoderConfig:
    """The frame codec's architecture and its latent scale (1 / std of the training latents)."""

    image_channels: int = 3
    latent_channels: int = 4
    channels: tuple = (32, 64, 64)     # widths at full, 1/2 and 1/4 resolution
    norm_groups: int = 8
    size: int = 32                     # the frame size it was trained on (any multiple of 4 works)
    scaling_factor: float = 1.0        # set after training: latents * scaling_factor have unit std
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        problems = []
        if self.image_channels < 1 or self.latent_channels < 1:
            problems.append(f"image_channels and latent_channels must be >= 1, got {self.image_channels}, "
                            f"{self.latent_channels}")
        if len(self.channels) != 3 or any(c < 1 or c % self.norm_groups for c in self.channels):
            problems.append(f"channels must be 3 widths divisible by norm_groups={self.norm_groups}, "
                            f"got {self.channels}")
        if not self.scaling_factor > 0:
            problems.append(f"scaling_factor must be > 0, got {self.scaling_factor}")
        if self.version > CONFIG_VERSION:
            problems.append(f"version {self.version} is newer than this avfast reads ({CONFIG_VERSION})")
        if problems:
            raise ValueError("AutoencoderConfig: " + "; ".join(problems))

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path) -> "AutoencoderConfig":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"autoencoder config {p} is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"autoencoder config {p} must hold a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"autoencoder config {p}: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


class _Res(nn.Module):
    def __init__(self, c: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class _Up(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: no transposed-conv checkerboard in the drawn frames."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x):
        return self.conv(_nearest_x2(x))


def _nearest_x2(x: torch.Tensor) -> torch.Tensor:
    """F.interpolate(x, scale_factor=2, mode="nearest"), bit for bit, as a broadcast copy: torch's CPU nearest
    kernel on contiguous NCHW took ~6x longer here, and it was the largest part of decoding a clip's frames."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class FrameCodec(FrameAutoencoder):
    """Per-frame conv autoencoder, ÷4 spatially, `latent_channels` channels (see the module docstring)."""

    downsample = 4

    def __init__(self, config: AutoencoderConfig | None = None, max_frames_per_chunk: int = 256,
                 progress: bool = False):
        super().__init__(max_frames_per_chunk, progress)
        self.config = cfg = config or AutoencoderConfig()
        self.latent_channels = cfg.latent_channels
        self.scaling_factor = cfg.scaling_factor
        c0, c1, c2 = cfg.channels
        g = cfg.norm_groups
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.image_channels, c0, 3, padding=1), _Res(c0, g),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1), _Res(c1, g),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), _Res(c2, g),
            nn.GroupNorm(g, c2), nn.SiLU(), nn.Conv2d(c2, cfg.latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, c2, 3, padding=1), _Res(c2, g),
            _Up(c2, c1), _Res(c1, g),
            _Up(c1, c0), _Res(c0, g),
            nn.GroupNorm(g, c0), nn.SiLU(), nn.Conv2d(c0, cfg.image_channels, 3, padding=1),
        )

    def _encode_frames(self, x):
        return self.encoder(x)

    def _decode_frames(self, z):
        return self.decoder(z)

    def save_pretrained(self, directory, state_dict: dict | None = None) -> Path:
        """`directory/config.json` + `directory/model.safetensors`, each written atomically."""
        from .._io import atomic_write_bytes, state_dict_bytes

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = self.state_dict() if state_dict is None else state_dict
        atomic_write_bytes(d / "model.safetensors", state_dict_bytes(state, {"format": "pt", "avfast": "FrameCodec"}))
        atomic_write_bytes(d / "config.json", self.config.to_json().encode())
        return d


def load_autoencoder(directory, device: torch.device | str = "cpu") -> FrameCodec:
    """The `FrameCodec` saved in `directory` (config.json + model.safetensors), checked before loading."""
    from .._io import load_state_file
    from .._state_dict import state_dict_problems

    d = Path(directory)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"load_autoencoder: expected a folder with config.json + model.safetensors, "
                                f"got {d}")
    codec = FrameCodec(AutoencoderConfig.from_json(d / "config.json"))
    state = load_state_file(d / "model.safetensors")
    problems = state_dict_problems(codec.state_dict(), state)
    if problems:
        raise ValueError(f"weights in {d / 'model.safetensors'} do not match the autoencoder its config "
                         f"describes: " + "; ".join(problems) + ". Nothing was loaded.")
    codec.load_state_dict({k: v.float() for k, v in state.items()})
    return codec.to(device).eval()


SD_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")   # a Stable Diffusion VAE (diffusers layout)


def autoencoder_from_folder(directory, device: torch.device | str = "cpu") -> FrameAutoencoder:
    """A `FrameCodec` folder (model.safetensors) or a Stable Diffusion VAE folder (diffusers layout).
    Anything else is one clear error naming the folder and what it holds, before any loader runs."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"autoencoder: {str(d)!r} is {'a file' if d.exists() else 'not there'}; expected "
                                f"the autoencoder's folder")
    if (d / "model.safetensors").is_file():
        return load_autoencoder(d, device)
    if not all((d / name).is_file() for name in SD_VAE_FILES):
        held = sorted(p.name for p in d.iterdir())
        shown = ", ".join(held[:8]) + (f", ... ({len(held)} entries)" if len(held) > 8 else "") if held else "nothing"
        raise ValueError(f"autoencoder: {str(d)!r} is neither avfast's frame codec (config.json + model.safetensors) "
                         f"nor a Stable Diffusion VAE ({' + '.join(SD_VAE_FILES)}); it holds {shown}")
    from .autoencoder import StableDiffusionVAE

    return StableDiffusionVAE.from_pretrained(d, progress=False).to(device)
