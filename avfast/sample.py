"""`python -m avfast.sample`: generate mp4 files with sound from the command line (a thin user of `avfast.Pipeline`).

    python -m avfast.sample --task v2a --input clip.mp4 --steps 50 --sampler dpmpp2m --out OUT/
    python -m avfast.sample --checkpoint DIR --task joint --batch 4 --runtime openvino --precision bf16
    python -m avfast.sample --task joint --seconds 10 --overlap 6 --out OUT/        # a long clip (one mp4)
    python -m avfast.sample --task v2a --input long.mp4 --seconds all --out OUT/     # sound for all of it

It parses the arguments, builds `avfast.Pipeline.from_pretrained(--checkpoint or the package's default)`,
calls it once and writes one mp4 with sound per clip, then prints ms per function evaluation.

The sampler itself is `avfast.diffusion.sample(denoiser, ...)`, a plain function. This module used to be
callable as `avfast.sample(...)`; it is not any more (a module named like a function hid which was which).
`from avfast.sample import sample` still gives the function, with a DeprecationWarning, for one release.
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import torch

from ._cli import CliError, guarded, program
from ._precision import PRECISIONS
from .diffusion.sampling import CONDITION_MODES, TASKS
from .diffusion.solvers import SAMPLERS
from .diffusion.timesteps import SPACINGS

__all__ = ["PROG", "RUNTIMES", "build_parser", "main", "run"]

PROG = "python -m avfast.sample"


def _runtimes() -> tuple[str, ...]:
    from .pipeline import RUNTIMES as names

    return names


RUNTIMES = _runtimes()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG,
                                description="Generate video with sound (joint), sound for a video (v2a) or video "
                                            "for a sound (a2v) and write mp4 files.")
    p.add_argument("--checkpoint", metavar="DIR", help="model folder (config.json + model.safetensors); "
                   "default: the package's trained default model")
    p.add_argument("--task", choices=TASKS, default="joint")
    p.add_argument("--input", metavar="FILE", help="the condition for v2a (mp4) or a2v (mp4 with sound, or wav/flac/ogg)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps; default: a distilled model's own step count (config distilled_steps), "
                        "else 200. A distilled model refuses fewer steps or a count its own does not divide")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="default: a distilled model's own sampler, else ddim")
    p.add_argument("--spacing", choices=SPACINGS, default="trailing")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic)")
    p.add_argument("--guidance", type=float, default=0.0, help="reconstruction guidance λ for v2a/a2v (0 = replacement)")
    p.add_argument("--condition-mode", choices=CONDITION_MODES, default="replace")
    p.add_argument("--gamma", type=float, default=None,
                   help="timestep adjustment γ (1 = none); default: a distilled model's own, else 1")
    p.add_argument("--cfg-scale", type=float, nargs="+", default=[1.0], metavar="S",
                   help="classifier-free guidance scale: one for both modalities, or video then audio")
    p.add_argument("--label", type=int, help="class label (models trained with labels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1, help="clips in one batch (seeds seed .. seed+batch-1)")
    p.add_argument("--seconds", metavar="S",
                   help="the clip's duration in seconds, beyond the model's window if wanted (overlapping windows "
                        "denoised together; docs/long-clips.md), or 'all' for v2a/a2v: the whole --input; "
                        "default: the model's own length (a longer --input is cut to it)")
    p.add_argument("--overlap", type=int, metavar="K",
                   help="with --seconds: video frames shared by neighbouring windows, 0 <= K < the model's frames "
                        "(default a third of them)")
    p.add_argument("--window-batch", type=int, metavar="N",
                   help="with --seconds: windows per model call (default 8; peak memory does not grow with the "
                        "duration)")
    p.add_argument("--out", metavar="DIR", default="samples")
    p.add_argument("--vocoder", metavar="WEIGHTS", help="MelGAN .safetensors; default: Griffin-Lim (lower quality)")
    p.add_argument("--autoencoder", metavar="DIR", help="frame autoencoder of a latent-space model (avfast's frame "
                   "codec or a Stable Diffusion VAE folder); default: the model folder's autoencoder/")
    p.add_argument("--runtime", default="torch", help=f"denoiser backend: {', '.join(RUNTIMES)}")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="network precision: autocast for the PyTorch runtimes, the export's precision for the "
                        "exported ones (openvino bf16: the fp32 graph on its bf16 kernels); default fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _seconds(text: str | None, task: str) -> float | str | None:
    """--seconds: a finite number > 0, or 'all' (v2a / a2v)."""
    if text is None:
        return None
    if text == "all":
        if task == "joint":
            raise CliError("--seconds all takes the length of --input; --task joint has none: give a number")
        return "all"
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"--seconds must be a number of seconds > 0 or 'all', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise CliError(f"--seconds must be a finite number of seconds > 0, got {text!r}")
    return value


def _check(args: argparse.Namespace) -> None:
    """Everything that can be refused before a model is loaded."""
    if args.runtime not in RUNTIMES:
        raise CliError(f"--runtime: {args.runtime!r} is not available; this build has {', '.join(RUNTIMES)}")
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    args.seconds = _seconds(args.seconds, args.task)
    if args.seconds is None and (args.overlap is not None or args.window_batch is not None):
        raise CliError("--overlap and --window-batch shape the windows of a long clip; give --seconds too")
    if args.overlap is not None and args.overlap < 0:
        raise CliError(f"--overlap must be >= 0 video frames (and less than the model's window), got {args.overlap}")
    if args.window_batch is not None and args.window_batch < 1:
        raise CliError(f"--window-batch must be >= 1, got {args.window_batch}")
    if args.task == "joint" and args.input is not None:
        raise CliError("--input is a condition for --task v2a or a2v; --task joint takes none")
    if args.task != "joint" and args.input is None:
        raise CliError(f"--task {args.task} needs --input FILE (the {'video' if args.task == 'v2a' else 'sound'} "
                       f"to condition on)")
    if args.checkpoint is not None and not Path(args.checkpoint).is_dir():
        raise CliError(f"--checkpoint: {args.checkpoint!r} is not a folder (expected config.json + model.safetensors)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {args.out!r} is a file; give a folder for the mp4 files")
    from ._deps import check_installed

    check_installed(["av"], f"{PROG} (writing mp4 files)")


def run(args: argparse.Namespace) -> list[Path]:
    from . import models
    from .pipeline import Pipeline

    _check(args)
    try:
        pipe = Pipeline.from_pretrained(args.checkpoint or "default", device=args.device, runtime=args.runtime,
                                        precision=args.precision, autoencoder=args.autoencoder,
                                        vocoder=args.vocoder, progress=not args.no_progress)
    except models.DefaultModelUnavailable:
        raise CliError("no trained default model ships with this avfast yet; pass --checkpoint DIR") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # before sampling: an unwritable --out fails fast
    cfg = args.cfg_scale[0] if len(args.cfg_scale) == 1 else tuple(args.cfg_scale)
    condition = {} if args.task == "joint" else {"video" if args.task == "v2a" else "audio": args.input}
    steps, sampler = args.steps, args.sampler
    if not pipe.config.distilled:  # this program's defaults for a model that is not a distilled student
        steps, sampler = 200 if steps is None else steps, sampler or "ddim"
    clips = pipe(args.task, **condition, steps=steps, sampler=sampler, seed=args.seed, batch=args.batch,
                 eta=args.eta, spacing=args.spacing, guidance=args.guidance, condition_mode=args.condition_mode,
                 gamma=args.gamma, cfg=cfg, labels=args.label, seconds=args.seconds, overlap=args.overlap,
                 window_batch=args.window_batch)
    written = []
    for clip in clips:
        written.append(clip.save(out / f"{args.task}_seed{clip.seeds[0]}.mp4"))
        print(f"wrote {written[-1]}")
    audio_source = ("the input sound" if args.task == "a2v" else
                    f"MelGAN vocoder ({args.vocoder})" if not pipe.vocoder.is_fallback else
                    "Griffin-Lim fallback (no --vocoder given; lower quality)")
    print(f"audio: {audio_source}")
    if clips.windows:
        print(f"{clips.duration:g} s: {clips.windows} overlapping windows of {pipe.config.frames} frames per step, "
              f"largest model call {clips.peak_batch} inputs")
    print(f"{args.task}, {clips.sampler}, {clips.steps} steps, runtime {args.runtime} on {pipe.device}: "
          f"{clips.calls} denoiser calls in {clips.seconds:.2f} s = {1000 * clips.seconds / clips.calls:.1f} ms/FE "
          f"(sampling loop included), {clips.seconds / args.batch:.2f} s per clip (batch {args.batch}, decoding "
          f"excluded)")
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        run(args)

    return guarded(PROG, work)


def __getattr__(name: str):
    """One release of `from avfast.sample import sample` / `Autocast` (moved to their layers)."""
    moved = {"sample": ("avfast.diffusion.sample", "diffusion.sampling", "sample"),
             "Autocast": ("avfast._precision.Autocast", "_precision", "Autocast")}
    if name in moved:
        new, module, attr = moved[name]
        warnings.warn(f"avfast.sample.{name} is deprecated and will be removed in the next release; use {new}",
                      DeprecationWarning, stacklevel=2)
        import importlib

        return getattr(importlib.import_module(f"avfast.{module}"), attr)
    raise AttributeError(f"module 'avfast.sample' has no attribute {name!r}")


if __name__ == "__main__":
    # Run the imported `avfast.sample`, not this __main__ copy (no runpy double-import warning).
    from avfast.sample import main as _main

    program(_main)
