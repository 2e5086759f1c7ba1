"""`TrainConfig`: every option of a training run, checked when it is made (flags, JSON or YAML).

A bad value is a ValueError (TypeError for a wrong type) naming the option, what it must be and what
came, before anything is built or read; `python -m avfast.train --help` shows each field's comment.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.config import PRESETS, ModelConfig, preset
from .._precision import FLOAT_PRECISIONS as PRECISIONS  # training autocasts: the float precisions of the one table
from .negatives import METHODS

CROP_CONTENTS = ("persistent", "scenes")  # the long clips crops are cut from (make_clip(transient=...))

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Every option of `python -m avfast.train` (flags or a JSON/YAML file with these keys)."""

    out: str = "runs/tiny"                       # run folder: checkpoints/, metrics.jsonl, loss.png, final/
    preset: str = "tiny"                         # model preset (avfast.models.PRESETS)
    model: dict = field(default_factory=dict)    # ModelConfig overrides, e.g. {"fusion": "cmcpe"}
    steps: int = 2000                            # total optimizer steps (a resumed run continues up to it)
    batch_size: int = 8                          # global batch (split across DDP ranks)
    lr: float = 1e-4                             # Adam; x lr_decay every lr_decay_every steps, floor lr_min
    lr_decay: float = 0.8                        # learning-rate factor applied every lr_decay_every steps
    lr_decay_every: int = 80_000                 # steps between learning-rate decays
    lr_min: float = 2e-5                         # the decayed learning rate never goes below this
    warmup: int = 0                              # linear warm-up steps
    grad_clip: float = 1.0                       # max global grad norm (0: off)
    eta: float = 5e-5                            # contrastive weight; 0 = nCMMD (no negatives)
    num_video_negatives: int = 1                 # video negatives per sample (each with its true audio)
    num_audio_negatives: int = 1                 # audio negatives per sample (each with its true video)
    negative_methods: tuple = METHODS            # ways to make negatives: shift, segment_swap, swap
    independent_timesteps: bool = False          # Sony baseline Eq. 9 (needed for timestep adjustment, gamma != 1)
    clean_prob: float = 0.0                      # chance a sample gets one modality clean (t = 0); eta must be 0
    weight_video: float = 1.0                    # weight of the video term of the loss
    weight_audio: float = 1.0                    # weight of the audio term of the loss
    ema_decay: float = 0.999                     # EMA of the weights (warmed up as min(decay, (1+s)/(10+s)))
    precision: str = "fp32"                      # fp32, bf16 or fp16 autocast
    gradient_checkpointing: bool = False         # recompute activations in backward (less memory, more time)
    data: str = "synthetic"                      # "synthetic" clips, or a folder of video clips with sound (mp4, ...)
    autoencoder: str = ""                        # latent models: a FrameCodec folder (python -m avfast.train.autoencoder) or an sd-vae-ft-mse folder
    cache_dir: str = ""                          # where prepared clips are cached ("": ~/.cache/avfast/train-clips)
    num_clips: int = 2048                        # synthetic clips (deterministic by index)
    crop_prob: float = 0.0                       # share of synthetic clips cut from 3-window clips (events up to the edges; for long clips)
    crop_content: str = "persistent"             # the long clips crops are cut from: persistent (balls in every frame) or scenes (a ball between the flashes around its hit)
    seed: int = 0                                # initial weights and every step's draws
    init: str = ""                               # start from this model folder's weights (a checkpoint's EMA) instead of random ones; a resumed run ignores it
    save_every: int = 250                        # steps between checkpoints (and the last step)
    keep: int = 2                                # checkpoints kept (0: all)
    log_every: int = 10                          # steps between rows of metrics.jsonl
    resume: bool = True                          # continue from <out>/checkpoints/latest if present
    device: str = "auto"                         # auto (cuda:LOCAL_RANK if CUDA is available, else cpu), cpu, cuda[:N]
    threads: int = 0                             # torch.set_num_threads (0: leave as is)
    progress: bool = True                        # show a tqdm progress bar

    def __post_init__(self) -> None:
        self._check_types()
        self.negative_methods = tuple(self.negative_methods)
        checks = [
            (self.steps >= 1, "steps must be >= 1", "steps"),
            (self.batch_size >= 1, "batch_size must be >= 1", "batch_size"),
            (self.lr > 0, "lr must be > 0", "lr"), (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]", "lr_decay"),
            (self.lr_decay_every >= 1, "lr_decay_every must be >= 1", "lr_decay_every"),
            (self.lr_min >= 0, "lr_min must be >= 0", "lr_min"), (self.warmup >= 0, "warmup must be >= 0", "warmup"),
            (self.grad_clip >= 0, "grad_clip must be >= 0", "grad_clip"), (self.eta >= 0, "eta must be >= 0", "eta"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)", "ema_decay"),
            (self.num_video_negatives >= 0, "num_video_negatives must be >= 0", "num_video_negatives"),
            (self.num_audio_negatives >= 0, "num_audio_negatives must be >= 0", "num_audio_negatives"),
            (bool(self.negative_methods) and set(self.negative_methods) <= set(METHODS)
             and len(set(self.negative_methods)) == len(self.negative_methods),
             f"negative_methods must be distinct names from {', '.join(METHODS)}", "negative_methods"),
            (self.weight_video >= 0 and self.weight_audio >= 0, "weight_video and weight_audio must be >= 0",
             "weight_video, weight_audio"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}", "precision"),
            (0 <= self.clean_prob <= 1, "clean_prob must be in [0, 1]", "clean_prob"),
            (not (self.clean_prob > 0 and self.eta > 0), "clean_prob > 0 needs eta = 0 (the contrastive loss has "
                                                         "no clean-condition terms)", "clean_prob, eta"),
            (self.eta == 0 or self.num_video_negatives + self.num_audio_negatives > 0,
             "eta > 0 needs at least one negative", "eta, num_video_negatives, num_audio_negatives"),
            (self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}", "preset"),
            (self.data == "synthetic" or Path(self.data).is_dir(),
             "data must be 'synthetic' or an existing folder of video clips (no folder at that path)", "data"),
            (not self.autoencoder or Path(self.autoencoder).is_dir(),
             "autoencoder must be '' or a local folder with the autoencoder's weights (no folder at that path)",
             "autoencoder"),
            (not self.init or (Path(self.init) / "config.json").is_file(),
             "init must be '' or a model folder (config.json + model.safetensors, or a training checkpoint with "
             "ema.safetensors)", "init"),
            (self.num_clips >= 1, "num_clips must be >= 1", "num_clips"),
            (0 <= self.crop_prob <= 1, "crop_prob must be in [0, 1]", "crop_prob"),
            (self.crop_content in CROP_CONTENTS, f"crop_content must be one of {', '.join(CROP_CONTENTS)}", "crop_content"),
            (self.save_every >= 1, "save_every must be >= 1", "save_every"),
            (self.keep >= 0, "keep must be >= 0", "keep"), (self.log_every >= 1, "log_every must be >= 1", "log_every"),
            (self.threads >= 0, "threads must be >= 0", "threads"),
            (self.device in DEVICES or self.device.startswith("cuda:") and self.device[5:].isdigit(),
             "device must be auto, cpu, cuda or cuda:N", "device"),
        ]
        for ok, what, names in checks:
            if not ok:
                self._fail(what, names)
        mcfg = self.model_config()
        if mcfg.video_space == "latent" and not self.autoencoder:
            self._fail(f"the {self.preset!r} model works on autoencoder latents (video_space='latent'); "
                       f"autoencoder must name a local folder of its weights (e.g. sd-vae-ft-mse)", "autoencoder")

    def _fail(self, what: str, names: str) -> None:
        got = ", ".join(f"{n}={getattr(self, n)!r}" for n in names.split(", "))
        raise ValueError(f"TrainConfig: {what}; got {got}")

    def _check_types(self) -> None:
        import math

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = type(f.default_factory() if f.default is dataclasses.MISSING else f.default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
                continue
            if kind is float and isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"TrainConfig: {f.name} must be a finite number; got {value!r}")
            if kind is tuple and isinstance(value, list):
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                expected = {float: "a number", int: "an integer", bool: "true or false", str: "a string",
                            dict: "a mapping of ModelConfig fields", tuple: "a list"}[kind]
                raise TypeError(f"TrainConfig: {f.name} must be {expected}; got {value!r} "
                                f"({type(value).__name__})")

    def model_config(self) -> ModelConfig:
        """The preset with the `model` overrides applied (checked by ModelConfig)."""
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise ValueError(f"TrainConfig: model has unknown ModelConfig field(s) {unknown} (known: "
                             f"{', '.join(sorted(known))}); got model={self.model!r}")
        try:
            return preset(self.preset).replace(**self.model)
        except ValueError as e:
            raise ValueError(f"TrainConfig: model={self.model!r}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["negative_methods"] = list(self.negative_methods)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "TrainConfig":
        return options_from_dict(cls, d, source, "training")


def options_from_dict(cls, d: dict[str, Any], source: str, what: str):
    """An options dataclass from a mapping (flags, JSON or YAML): unknown names refused, numbers that YAML 1.1
    read as strings (1e-4 without a dot) turned back into floats. Shared by training and distillation."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown {what} option(s) {unknown}; known: {sorted(known)}")
    d = dict(d)
    for name, value in d.items():
        if isinstance(known[name].default, float) and isinstance(value, str):
            try:
                d[name] = float(value)
            except ValueError:
                raise TypeError(f"{source}: {name} must be a number; got {value!r}") from None
    return cls(**d)
