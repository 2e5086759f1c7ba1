"""`ModelConfig`: everything that fixes a joint U-Net's shape, as a JSON-round-tripping dataclass.

The presets follow CMMD's Table 4: base channels 128, multipliers (1, 2, 3, 4), video
downsampling H/2, W/2 (frames kept), audio T/2, attention dim 64, heads = channels // 64, a cosine
schedule of 1000 steps and v-prediction. `tiny` is the package's CPU-trainable default.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The newest config format this avfast reads; a config from a newer version is refused on load. Bumped
# when the meaning of a field changes or a field is added. A config records the OLDEST version that holds
# it, so configs without the newer fields stay readable by older avfast:
#   1  the architecture and data layout
#   2  + distilled_steps, distilled_sampler, distilled_gamma (a progressively distilled student)
#   3  + joint_refine (a joint clip's conditional passes after the joint one), condition_mode (how a v2a / a2v
#        condition reaches the model by default)
#   4  + sampling_gamma (the timestep adjustment γ a call samples at when it gives none)
#   5  + long_window (the video frames per window a long clip is sampled with when a call gives none)
CONFIG_VERSION = 5
DISTILLED_SAMPLERS = ("ddim",)
DISTILLED_FIELDS = ("distilled_steps", "distilled_sampler", "distilled_gamma")
REFINE_PASSES = ("v2a", "a2v")  # the conditional tasks a joint pass can be followed by
REFINE_WORDS = REFINE_PASSES + ("none",)  # what a --refine option takes: passes, or none (one joint pass)
CONDITION_MODES = ("replace", "clean")
# What was measured on a model's weights (its distilled step grid, the γ and the long-clip window chosen on
# held-out clips): a fine-tune resets these, since they do not hold for new weights.
MEASURED_FIELDS = DISTILLED_FIELDS + ("sampling_gamma", "long_window")
# What a config says about sampling, not about the weights: two configs that differ only here hold the same network.
SAMPLING_FIELDS = MEASURED_FIELDS + ("joint_refine", "condition_mode")
FUSIONS = ("easy", "cmcpe", "cross_attention", "none")
VIDEO_SPACES = ("pixels", "latent")
ATTENTION_KINDS = ("spatial_temporal", "joint")


@dataclass
class ModelConfig:
    """The joint U-Net's architecture and the data layout it was built for."""

    # data layout (without batch): video [video_channels, frames, height, width], audio [mel_bins, audio_length]
    video_channels: int = 4
    frames: int = 18
    height: int = 16
    width: int = 16
    mel_bins: int = 80
    audio_length: int = 112
    video_space: str = "latent"        # "pixels": RGB in [-1, 1]; "latent": scaled autoencoder latents (÷8)
    mel_center: float = -1.75          # model audio = (log10-mel - mel_center) / mel_scale, about [-1, 1]
    mel_scale: float = 3.25
    fps: float = 10.0
    sample_rate: int = 16_000
    # U-Net
    patch_size: int = 1                # > 1: video enters as non-overlapping p x p patches (pixel unshuffle)
    base_channels: int = 128
    audio_base_channels: int = 0       # 0: the same as base_channels (the paper); wider keeps 80 mel bins intact
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1, 2, 3)   # levels (0 = full resolution) with attention
    attention_kind: str = "spatial_temporal"       # video attention: spatial then temporal, or joint
    head_dim: int = 64
    norm_groups: int = 32
    dropout: float = 0.0
    fusion: str = "easy"
    cmcpe_dim: int = 128                # width of the CMC-PE connector features
    num_classes: int = 0                # > 0: class-label conditioning with a learned null label (-1)
    num_train_steps: int = 1000
    prediction: str = "v"
    gradient_checkpointing: bool = False
    # a student of `python -m avfast.distill` (0 / "": not distilled): the step count, sampler and
    # timestep adjustment it was distilled for (its grid is the trailing one); samplers use them when
    # no `steps` is given (avfast.diffusion.distilled)
    distilled_steps: int = 0
    distilled_sampler: str = ""
    distilled_gamma: float = 1.0
    # how a joint clip is sampled by default (avfast.Pipeline's refine=): () one joint pass; ("v2a",) the
    # joint pass, then the sound redrawn for its video. A sampling setting, not architecture, like distilled_*
    joint_refine: tuple[str, ...] = ()
    # how a v2a / a2v condition reaches the model unless a call says: "replace" (forward-noised, CMMD's) or
    # "clean" (at t = 0: models trained with clean conditions, `--clean-prob` > 0, which the training run records)
    condition_mode: str = "replace"
    # the timestep adjustment γ (Sony's Eq. 8; video on m(t), audio on n(t)) a call samples at when it gives
    # none, chosen on held-out validation clips (None: a student's distilled_gamma, else 1). A student may
    # sample best off the γ it was distilled at: the shipped default's is 0.05 (docs/sampling.md)
    sampling_gamma: float | None = None
    # the video frames per window of a long clip (avfast.Pipeline's window= when a call gives none; 0: `frames`,
    # the model's own), chosen on held-out long clips: the shipped default's is 36, two of its windows
    # (docs/long-clips.md, "Longer windows")
    long_window: int = 0
    version: int = 1                   # the oldest config format that holds this config (see CONFIG_VERSION)

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_levels = tuple(int(x) for x in self.attention_levels)
        if isinstance(self.joint_refine, (list, tuple)):
            self.joint_refine = tuple(self.joint_refine)
        if isinstance(self.distilled_gamma, int) and not isinstance(self.distilled_gamma, bool):
            self.distilled_gamma = float(self.distilled_gamma)
        if isinstance(self.sampling_gamma, int) and not isinstance(self.sampling_gamma, bool):
            self.sampling_gamma = float(self.sampling_gamma)
        if self.distilled_steps and isinstance(self.version, int) and self.version < 2:
            self.version = 2  # the distilled_* fields are version 2's
        if (self.joint_refine or self.condition_mode != "replace") and isinstance(self.version, int) \
                and self.version < 3:
            self.version = 3  # joint_refine and condition_mode are version 3's
        if self.sampling_gamma is not None and isinstance(self.version, int) and self.version < 4:
            self.version = 4  # sampling_gamma is version 4's
        if self.long_window and isinstance(self.version, int) and self.version < 5:
            self.version = 5  # long_window is version 5's
        _check_config(self)

    @property
    def long_window_frames(self) -> int:
        """The video frames per window a long clip is sampled with when a call gives none: `long_window`, else
        the model's own `frames`."""
        return self.long_window or self.frames

    @property
    def distilled(self) -> bool:
        """Whether this is a distilled student (see `distilled_steps`)."""
        return self.distilled_steps > 0

    # ------------------------------------------------------------------ derived
    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        return (self.video_channels, self.frames, self.height, self.width)

    @property
    def audio_shape(self) -> tuple[int, int]:
        return (self.mel_bins, self.audio_length)

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if not self.distilled:  # a version-1 config: without the version-2 fields, so older avfast reads it
            for k in DISTILLED_FIELDS:
                del d[k]
        if not self.joint_refine:  # likewise version 3's fields
            del d["joint_refine"]
        if self.condition_mode == "replace":
            del d["condition_mode"]
        if self.sampling_gamma is None:  # version 4's
            del d["sampling_gamma"]
        if not self.long_window:  # version 5's
            del d["long_window"]
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "ModelConfig":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        version = d.get("version", CONFIG_VERSION)
        if not isinstance(version, int) or version > CONFIG_VERSION or version < 1:
            raise ValueError(f"{source}: config version {version!r} is not one this avfast understands "
                             f"(1..{CONFIG_VERSION}); upgrade avfast to load it")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "ModelConfig":
        p = Path(path_or_text)
        if isinstance(path_or_text, Path) or (len(str(path_or_text)) < 4096 and p.suffix == ".json"):
            if not p.is_file():
                raise FileNotFoundError(f"config: no file at {p}")
            try:
                d = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"config: {p} is not valid JSON ({e})") from None
            return cls.from_dict(d, str(p))
        return cls.from_dict(json.loads(str(path_or_text)))


def parse_refine(words: list[str] | None) -> tuple[str, ...] | None:
    """A --refine option's words (each of REFINE_WORDS) as Pipeline's refine=: None (not given: the model's
    own), () for 'none' (one joint pass), else the passes in order."""
    if words is None:
        return None
    if "none" in words and len(words) > 1:
        raise ValueError(f"--refine none (the joint pass alone) takes no other pass, got {' '.join(words)}")
    return () if list(words) == ["none"] else tuple(words)


def _check_config(c: ModelConfig) -> None:
    def need(cond: bool, what: str, got: Any) -> None:
        if not cond:
            raise ValueError(f"ModelConfig.{what}, got {got!r}")

    for name in ("video_channels", "frames", "height", "width", "mel_bins", "audio_length", "base_channels",
                 "head_dim", "norm_groups", "num_train_steps", "cmcpe_dim", "patch_size"):
        v = getattr(c, name)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1", v)
    need(isinstance(c.audio_base_channels, int) and c.audio_base_channels >= 0,
         "audio_base_channels must be an integer >= 0 (0: base_channels)", c.audio_base_channels)
    need(c.num_res_blocks >= 1, "num_res_blocks must be >= 1", c.num_res_blocks)
    need(len(c.channel_mult) >= 1 and all(m >= 1 for m in c.channel_mult),
         "channel_mult must be a non-empty tuple of integers >= 1", c.channel_mult)
    need(all(0 <= lv < len(c.channel_mult) for lv in c.attention_levels),
         f"attention_levels must index levels 0..{len(c.channel_mult) - 1}", c.attention_levels)
    need(c.fusion in FUSIONS, f"fusion must be one of {FUSIONS}", c.fusion)
    need(c.video_space in VIDEO_SPACES, f"video_space must be one of {VIDEO_SPACES}", c.video_space)
    need(c.attention_kind in ATTENTION_KINDS, f"attention_kind must be one of {ATTENTION_KINDS}",
         c.attention_kind)
    need(c.prediction == "v", "prediction must be 'v' (CMMD predicts v)", c.prediction)
    need(c.num_classes >= 0, "num_classes must be >= 0", c.num_classes)
    need(isinstance(c.distilled_steps, int) and not isinstance(c.distilled_steps, bool) and c.distilled_steps >= 0,
         "distilled_steps must be an integer >= 0 (0: not distilled)", c.distilled_steps)
    need(c.distilled_sampler in (DISTILLED_SAMPLERS if c.distilled_steps else ("",)),
         f"distilled_sampler must be one of {DISTILLED_SAMPLERS} for a distilled model (distilled_steps > 0) and "
         f"'' otherwise", c.distilled_sampler)
    need(isinstance(c.distilled_gamma, float) and math.isfinite(c.distilled_gamma) and c.distilled_gamma > 0,
         "distilled_gamma must be a finite number > 0", c.distilled_gamma)
    need(isinstance(c.joint_refine, tuple) and all(p in REFINE_PASSES for p in c.joint_refine),
         f"joint_refine must be a list of tasks, each one of {REFINE_PASSES}", c.joint_refine)
    need(c.condition_mode in CONDITION_MODES, f"condition_mode must be one of {CONDITION_MODES}", c.condition_mode)
    need(c.sampling_gamma is None or (isinstance(c.sampling_gamma, float) and math.isfinite(c.sampling_gamma)
                                      and c.sampling_gamma > 0),
         "sampling_gamma must be None or a finite number > 0", c.sampling_gamma)
    need(isinstance(c.long_window, int) and not isinstance(c.long_window, bool) and c.long_window >= 0,
         "long_window must be an integer >= 0 (video frames per window of a long clip; 0: frames)", c.long_window)
    need(0.0 <= c.dropout < 1.0, "dropout must be in [0, 1)", c.dropout)
    need(c.mel_scale > 0 and c.fps > 0 and c.sample_rate > 0, "mel_scale, fps and sample_rate must be > 0",
         (c.mel_scale, c.fps, c.sample_rate))
    bases = (c.base_channels, c.audio_base_channels or c.base_channels)
    for lv in c.attention_levels:
        for base in bases:
            ch = base * c.channel_mult[lv]
            need(ch % c.head_dim == 0, f"channels at attention level {lv} ({ch}) must be divisible by head_dim "
                 f"({c.head_dim})", c.head_dim)
    for m in c.channel_mult:
        for base in bases:
            ch = base * m
            need(ch % c.norm_groups == 0, f"every level's channels ({ch}) must be divisible by norm_groups",
                 c.norm_groups)


# Table 4 sizes. paper-128: 128x128 frames through the SD VAE (÷8) -> 4x16x16 latents, 18 frames,
# 80x112 mel. paper-512: 512x512 frames -> 4x64x64 latents.
PRESETS: dict[str, ModelConfig] = {
    "paper-128": ModelConfig(),
    "paper-512": ModelConfig(height=64, width=64, attention_levels=(2, 3)),
    # tiny: RGB pixels at 32x32 (no autoencoder to train or ship, and a person can see the clip), entering
    # as 4x4 patches (48 values per patch at 8x8 positions: a sixteenth of the convolution work of
    # full-resolution pixels, which is what makes an hour of CPU training possible). Each branch starts
    # wider than its input (video 64 > 48 patch values, audio 128 > 80 mel bins): a narrower stem cannot
    # carry per-pixel noise through the network, and a model that cannot see the noise cannot remove it.
    "tiny": ModelConfig(video_channels=3, height=32, width=32, video_space="pixels", patch_size=4,
                        base_channels=64, audio_base_channels=128, channel_mult=(1, 1), attention_levels=(0, 1),
                        head_dim=32, norm_groups=16, cmcpe_dim=64),
    # tiny-latent: the shipped default. tiny's network on the latents of the frame codec trained here
    # (avfast.data.FrameCodec: 32x32 RGB -> 4x8x8, ÷4), so the codec's decoder draws every pixel: the pixel
    # model's 4x4-patch output passed input noise through and its clips were speckled (~25x the data's
    # pixel residual). Same token grid (8x8) as tiny, so the same cost per evaluation.
    "tiny-latent": ModelConfig(video_channels=4, height=8, width=8, video_space="latent", patch_size=1,
                               base_channels=64, audio_base_channels=128, channel_mult=(1, 1),
                               attention_levels=(0, 1), head_dim=32, norm_groups=16, cmcpe_dim=64),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
