"""`DistillConfig`: every option of a progressive distillation run, checked when it is made.

The stage schedule: the teacher samples with `start_steps` DDIM steps; stage s trains a student for
start_steps / 2^(s+1) steps (each of its steps matches two of its teacher's), so the stages run
start_steps → start_steps/2 → ... → `steps`. `stage_steps` gives each stage's optimizer steps (one
number: every stage the same), and the stages follow each other in one run: stage s covers the run's
steps [sum of the earlier stages, + its own). Stage 0's student starts from the teacher's weights, and
each next stage's teacher and student both start from the previous stage's EMA weights.

γ (Sony's timestep adjustment): a student is distilled on the per-modality grids that the sampler
walks for ONE γ (`gamma`, recorded as the student's `distilled_gamma`). It cannot serve several: every
γ maps the first step's t = T to (T, T), where students of different γ need different jumps, and the
U-Net has no γ input to tell them apart. Distil one student per γ (γ = 1: none, the default).

Tasks: each sample of a batch is, with the given probabilities, joint generation, v2a/a2v with
replacement (the condition forward-noised to the step's timesteps with its own fixed noise, as the
sampler does) or v2a/a2v with the clean condition (at t = 0; teachers trained with clean_prob > 0);
the conditional cases are split evenly between v2a and a2v. The student learns the generated
modalities' steps only (the condition's prediction is never used by the sampler).

Classifier-free guidance: not distilled. avfast's training data has no class labels, so its models
have num_classes = 0 (the default model too) and classifier-free guidance does not apply to them;
a teacher with num_classes > 0 is refused.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .._precision import FLOAT_PRECISIONS as PRECISIONS
from ..train.config import CROP_CONTENTS, DEVICES, options_from_dict

SAMPLERS = ("ddim",)


class Stage(NamedTuple):
    index: int
    student_steps: int   # the student's step count (the teacher's is twice that)
    start: int           # the run's steps [start, stop) belong to this stage
    stop: int


@dataclass
class DistillConfig:
    """Every option of `python -m avfast.distill` (flags or a JSON/YAML file with these keys)."""

    teacher: str = "default"                     # the teacher: a model folder (config.json + model.safetensors) or "default"
    out: str = "runs/distill"                    # run folder: checkpoints/, stages/<N>-steps/, final/, metrics.jsonl, loss.png
    steps: int = 4                               # the student's sampler steps (the last stage's)
    start_steps: int = 16                        # the teacher's DDIM steps at stage 0: steps x 2^k, k >= 1 (k stages)
    stage_steps: tuple = (500,)                  # optimizer steps per stage: one number for every stage, or one per stage
    stop_at: int = 0                             # stop after this many of the run's steps (0: the schedule's end); rerun to go on
    sampler: str = "ddim"                        # the sampler distilled (deterministic DDIM on the trailing grid)
    gamma: float = 1.0                           # timestep adjustment the student serves (one gamma per student)
    replace_prob: float = 0.25                   # share of samples that are v2a/a2v with replacement
    clean_prob: float = 0.25                     # share that are v2a/a2v with the clean condition (t = 0); the rest joint
    batch_size: int = 8                          # global batch (split across DDP ranks)
    lr: float = 1e-4                             # Adam; annealed linearly to 0 over each stage
    grad_clip: float = 1.0                       # max global grad norm (0: off)
    ema_decay: float = 0.999                     # EMA of the weights, restarted (and warmed up) at each stage
    precision: str = "fp32"                      # fp32, bf16 or fp16 autocast (teacher and student)
    data: str = "synthetic"                      # "synthetic" clips, or a folder of video clips with sound
    autoencoder: str = ""                        # latent teachers: the frame autoencoder folder ("": the teacher folder's autoencoder/)
    cache_dir: str = ""                          # where prepared clips are cached ("": ~/.cache/avfast/train-clips)
    num_clips: int = 2048                        # synthetic clips (deterministic by index)
    crop_prob: float = 0.0                       # share of synthetic clips cut from 3-window clips (as train's --crop-prob)
    crop_content: str = "persistent"             # the long clips crops are cut from: persistent (balls in every frame) or scenes (a ball between the flashes around its hit)
    seed: int = 0                                # every step's draws
    save_every: int = 250                        # steps between checkpoints (and each stage's last step)
    keep: int = 2                                # checkpoints kept (0: all)
    log_every: int = 10                          # steps between rows of metrics.jsonl
    resume: bool = True                          # continue from <out>/checkpoints/latest if present
    device: str = "auto"                         # auto, cpu, cuda[:N]
    threads: int = 0                             # torch.set_num_threads (0: leave as is)
    progress: bool = True                        # show a tqdm progress bar

    def __post_init__(self) -> None:
        self._check_types()
        self.stage_steps = tuple(self.stage_steps)
        checks = [
            (self.steps >= 1, "steps must be >= 1", "steps"),
            (self.start_steps >= 2 * self.steps and _is_power_of_two(self.start_steps / self.steps),
             f"start_steps must be steps x 2^k with k >= 1 (each stage halves the step count: "
             f"{', '.join(str(self.steps * 2 ** k) for k in range(1, 5))}, ...)", "start_steps, steps"),
            (bool(self.stage_steps) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                            for n in self.stage_steps),
             "stage_steps must be one or more integers >= 1", "stage_steps"),
            (self.stop_at >= 0, "stop_at must be >= 0 (0: run the whole schedule)", "stop_at"),
            (self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)} (progressive distillation "
                                       f"matches deterministic DDIM steps)", "sampler"),
            (self.gamma > 0, "gamma must be > 0", "gamma"),
            (0 <= self.replace_prob <= 1 and 0 <= self.clean_prob <= 1 and self.replace_prob + self.clean_prob <= 1,
             "replace_prob and clean_prob must be in [0, 1] with a sum <= 1 (the rest is joint)",
             "replace_prob, clean_prob"),
            (self.batch_size >= 1, "batch_size must be >= 1", "batch_size"),
            (self.lr > 0, "lr must be > 0", "lr"), (self.grad_clip >= 0, "grad_clip must be >= 0", "grad_clip"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)", "ema_decay"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}", "precision"),
            (self.teacher == "default" or Path(self.teacher).is_dir(),
             "teacher must be 'default' or a model folder (config.json + model.safetensors; no folder at that path)",
             "teacher"),
            (self.data == "synthetic" or Path(self.data).is_dir(),
             "data must be 'synthetic' or an existing folder of video clips (no folder at that path)", "data"),
            (not self.autoencoder or Path(self.autoencoder).is_dir(),
             "autoencoder must be '' or a local folder with the autoencoder's weights (no folder at that path)",
             "autoencoder"),
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
        if len(self.stage_steps) not in (1, self.num_stages):
            self._fail(f"stage_steps must give one number for every stage or one per stage: {self.start_steps} -> "
                       f"{self.steps} steps is {self.num_stages} stage(s)", "stage_steps, start_steps, steps")

    # ------------------------------------------------------------------ the schedule
    @property
    def num_stages(self) -> int:
        return round(math.log2(self.start_steps / self.steps))

    def stages(self) -> list[Stage]:
        """The stage schedule: each stage's student step count and its range of the run's steps."""
        lengths = self.stage_steps * self.num_stages if len(self.stage_steps) == 1 else self.stage_steps
        out, start = [], 0
        for s, n in enumerate(lengths):
            out.append(Stage(s, self.start_steps >> (s + 1), start, start + n))
            start += n
        return out

    @property
    def total_steps(self) -> int:
        return self.stages()[-1].stop

    # ------------------------------------------------------------------ checks and I/O
    def _fail(self, what: str, names: str) -> None:
        got = ", ".join(f"{n}={getattr(self, n)!r}" for n in names.split(", "))
        raise ValueError(f"DistillConfig: {what}; got {got}")

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = type(f.default_factory() if f.default is dataclasses.MISSING else f.default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
                continue
            if kind is float and isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"DistillConfig: {f.name} must be a finite number; got {value!r}")
            if kind is tuple and isinstance(value, (list, int)) and not isinstance(value, bool):
                setattr(self, f.name, tuple(value) if isinstance(value, list) else (value,))
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                expected = {float: "a number", int: "an integer", bool: "true or false", str: "a string",
                            tuple: "a list of integers"}[kind]
                raise TypeError(f"DistillConfig: {f.name} must be {expected}; got {value!r} ({type(value).__name__})")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stage_steps"] = list(self.stage_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "DistillConfig":
        return options_from_dict(cls, d, source, "distillation")


def _is_power_of_two(x: float) -> bool:
    return x >= 1 and float(x).is_integer() and (int(x) & (int(x) - 1)) == 0
