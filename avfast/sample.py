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

from ._cli import THREADS_HELP, CliError, Parser, guarded, one_line_warnings, program, use_threads
from ._precision import PRECISIONS
from .diffusion.sampling import CONDITION_MODES, TASKS
from .diffusion.solvers import SAMPLERS
from .diffusion.timesteps import SPACINGS
from .diffusion.windowed import WINDOW_NOISES
from .models.config import REFINE_WORDS, parse_refine

__all__ = ["PROG", "RUNTIMES", "build_parser", "check_checkpoint", "main", "run"]

PROG = "python -m avfast.sample"


def _runtimes() -> tuple[str, ...]:
    from .pipeline import RUNTIMES as names

    return names


RUNTIMES = _runtimes()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG,
                                description="Generate video with sound (joint), sound for a video (v2a) or video "
                                            "for a sound (a2v) and write mp4 files.")
    p.add_argument("--checkpoint", metavar="DIR", help="model folder (config.json + model.safetensors); "
                   "default: the package's trained default model; default:teacher the model it was distilled from")
    p.add_argument("--task", choices=TASKS, default="joint")
    p.add_argument("--input", metavar="FILE", help="the condition for v2a (mp4) or a2v (mp4 with sound, or wav/flac/ogg)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps; default: a distilled model's own step count (config distilled_steps; 4 for "
                        "the shipped default), else 25 (avfast.Pipeline's default, as python -m avfast.demo). A "
                        "distilled model refuses fewer steps or a count its own does not divide")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="default: a distilled model's own sampler, else dpmpp2m (avfast.Pipeline's default)")
    p.add_argument("--spacing", choices=SPACINGS, default="trailing")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic); > 0 samples with "
                   "ddim unless --sampler says otherwise")
    p.add_argument("--guidance", type=float, default=0.0, help="reconstruction guidance λ for v2a/a2v (0 = replacement)")
    p.add_argument("--condition-mode", choices=CONDITION_MODES, default=None,
                   help="how the v2a / a2v condition reaches the model: replace (forward-noised) or clean (at t = 0); "
                        "default: the model's own (config condition_mode; clean for the shipped default)")
    p.add_argument("--gamma", type=float, default=None,
                   help="timestep adjustment γ (1 = none); default: the model's own (config sampling_gamma: 0.05 for "
                        "the shipped default; else a distilled model's γ, else 1)")
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
    p.add_argument("--window", type=int, metavar="F",
                   help="with --seconds: video frames per window (default the model's config long_window, else its "
                        "own frames: 36 for the shipped default; longer windows give each window more context, with "
                        "memory that grows with the window, not the clip; docs/long-clips.md)")
    p.add_argument("--window-noise", choices=WINDOW_NOISES,
                   help="with --seconds: the windows' starting noise, independent (default: drawn for the whole "
                        "clip) or shared (every window starts from a permutation of the first window's noise, "
                        "FreeNoise-style)")
    p.add_argument("--refine", nargs="+", choices=REFINE_WORDS, default=None, metavar="TASK",
                   help="--task joint in passes: after the joint pass, redraw one modality for the other, in order "
                        "(v2a: the sound for the joint video; a2v: the video for the sound); none: the joint pass "
                        "alone. Default: the model's own (config joint_refine); see docs/sampling.md")
    p.add_argument("--out", metavar="DIR", default="samples")
    p.add_argument("--vocoder", metavar="WEIGHTS", help="MelGAN .safetensors; default: Griffin-Lim (lower quality)")
    p.add_argument("--autoencoder", metavar="DIR", help="frame autoencoder of a latent-space model (avfast's frame "
                   "codec or a Stable Diffusion VAE folder); default: the model folder's autoencoder/")
    p.add_argument("--runtime", default="torch", help=f"denoiser backend: {', '.join(RUNTIMES)}")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="network precision: autocast for the PyTorch runtimes, the export's precision for the "
                        "exported ones (openvino bf16: the fp32 graph on its bf16 kernels); default fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
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
    use_threads(args.threads)  # set now: the checks below load the vocoder and read --input already
    if args.gamma is not None:  # here, before resolving a distilled model's settings warns about a γ it refuses
        from .diffusion.timesteps import check_gamma

        try:
            check_gamma(args.gamma)
        except ValueError as e:
            raise CliError(f"--gamma: {e}") from None
    args.seconds = _seconds(args.seconds, args.task)
    if args.seconds is None and (args.overlap is not None or args.window_batch is not None
                                 or args.window is not None):
        raise CliError("--overlap, --window-batch and --window shape the windows of a long clip; give --seconds too")
    if args.seconds is None and args.window_noise is not None:
        raise CliError("--window-noise is the starting noise of a long clip's windows; give --seconds too")
    if args.overlap is not None and args.overlap < 0:
        raise CliError(f"--overlap must be >= 0 video frames (and less than the model's window), got {args.overlap}")
    if args.window_batch is not None and args.window_batch < 1:
        raise CliError(f"--window-batch must be >= 1, got {args.window_batch}")
    if args.window is not None and args.window < 1:
        raise CliError(f"--window must be >= 1 video frames, got {args.window}")
    if args.refine is not None and args.task != "joint":
        raise CliError(f"--refine redraws a modality of a joint clip; --task {args.task} already keeps its condition")
    args.refine = parse_refine(args.refine)
    if args.task == "joint" and args.input is not None:
        raise CliError("--input is a condition for --task v2a or a2v; --task joint takes none")
    if args.task != "joint" and args.input is None:
        raise CliError(f"--task {args.task} needs --input FILE (the {'video' if args.task == 'v2a' else 'sound'} "
                       f"to condition on)")
    args.model_folder = check_checkpoint(args.checkpoint)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {args.out!r} is a file; give a folder for the mp4 files")
    from ._deps import check_installed

    check_installed(["av"], f"{PROG} (writing mp4 files)")
    _check_inputs(args)


def check_checkpoint(checkpoint: str | None) -> Path:
    """The model folder --checkpoint gives: a folder, or the names "default" and "default:teacher" of the
    shipped models (resolved as Pipeline.from_pretrained resolves them), absent: "default". Refuses, in
    one line, a path that is no folder and a shipped model this installation lacks (the demo's too)."""
    from .models import DefaultModelUnavailable, checkpoint_folder

    try:
        return checkpoint_folder(checkpoint)
    except DefaultModelUnavailable:
        raise CliError("no trained default model ships with this avfast yet; pass --checkpoint DIR") from None
    except FileNotFoundError as e:
        raise CliError(f"--checkpoint: {e}") from None


def _guided(args: argparse.Namespace) -> bool:
    """--cfg-scale asks for classifier-free guidance (a scale other than 1, for either modality)."""
    return any(scale != 1.0 for scale in args.cfg_scale)


def _check_inputs(args: argparse.Namespace) -> None:
    """The device, runtime, numbers, files and folders of a request, before any model is loaded (issue 21:
    each is one line, not a traceback or a refusal after minutes of work). Leaves the model's config in
    `args.model_config` and a MelGAN vocoder, when given, loaded in `args.vocoder_module`."""
    from ._cli import check_device, check_finite, check_out_folder
    from .runtime.available import check_available
    from .runtime import RuntimeUnavailable

    args.device = str(check_device(args.device))
    try:
        check_available(args.runtime, args.device, args.precision)
    except RuntimeUnavailable as e:
        raise CliError(f"--runtime {args.runtime}: {e}") from None
    # --steps, --gamma, --guidance, --eta: the sampler's own checks (avfast.diffusion), before any sampling
    if len(args.cfg_scale) > 2:
        raise CliError(f"--cfg-scale takes one scale, or two (video, audio), got {len(args.cfg_scale)}")
    for scale in args.cfg_scale:
        check_finite(scale, "--cfg-scale")
    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    check_out_folder(args.out)
    if args.input is not None:
        _check_input(args)
    if args.autoencoder is not None and not Path(args.autoencoder).is_dir():
        raise CliError(f"--autoencoder: {args.autoencoder!r} is {'a file' if Path(args.autoencoder).exists() else 'not there'}; "
                       f"give the autoencoder's folder")
    from .models.config import ModelConfig

    folder = args.model_folder  # _check: the --checkpoint folder (with a config.json), or the shipped model
    try:
        args.model_config = ModelConfig.from_json(folder / "config.json")
    except UnicodeDecodeError:
        raise CliError(f"--checkpoint: {folder / 'config.json'} is not a text file (not UTF-8 JSON)") from None
    except (ValueError, TypeError, OSError) as e:
        raise CliError(f"--checkpoint: {folder / 'config.json'}: {e}") from None
    if _guided(args) and args.label is None:
        # guidance compares the labelled prediction with the null label's: no label, nothing to guide towards
        raise CliError("--cfg-scale: classifier-free guidance needs --label N (the class to guide towards)"
                       if args.model_config.num_classes else
                       "--cfg-scale: this model was trained without class labels, so it has no classifier-free "
                       "guidance; leave --cfg-scale at 1")
    if args.label is not None:
        classes = args.model_config.num_classes
        if classes == 0:
            raise CliError("--label: this model was trained without class labels")
        if not -1 <= args.label < classes:
            raise CliError(f"--label must be in 0..{classes - 1} (or -1, the null label), got {args.label}")
    args.vocoder_module = None
    if args.vocoder is not None:
        from .data.mel import MelConfig
        from .pipeline import make_vocoder

        mel = MelConfig(sample_rate=args.model_config.sample_rate, n_mels=args.model_config.mel_bins)
        try:
            args.vocoder_module = make_vocoder(args.vocoder, mel)
        except (ValueError, KeyError, OSError) as e:
            raise CliError(f"--vocoder: {str(e).removeprefix('vocoder weights: ')}") from None


def _check_input(args: argparse.Namespace) -> None:
    """--input is a readable file; a sound (a2v) is finite."""
    path = Path(args.input)
    if path.is_dir():
        raise CliError(f"--input: {args.input!r} is a folder; give a {'video' if args.task == 'v2a' else 'sound or video'} file")
    if not path.is_file():
        raise CliError(f"--input: no file at {args.input!r}")
    if args.task == "a2v":
        from .pipeline import AUDIO_SUFFIXES

        if path.suffix.lower() in AUDIO_SUFFIXES:
            from .data.video import load_audio

            try:
                wave = load_audio(path, resample=True)
            except ValueError as e:
                raise CliError(f"--input: {e}") from None
            if not bool(torch.isfinite(wave).all()):
                raise CliError(f"--input: {args.input!r} has NaN or infinite samples; give a sound with finite samples")


def clips_per_call(config, batch: int, device: str, frame_size: int | None = None, cfg: bool = False) -> int:
    """How many of `batch` clips one pipeline call may make within this machine's memory (estimated on the
    meta device: avfast.models.memory): all of them when they fit, else fewer (the clips are then made
    and written in pieces, so memory stays bounded: clip i is the same whatever the pieces). Refuses in
    one line, naming the size, when a single clip does not fit. Half the available memory is the budget:
    the estimate is a lower bound (allocator slack, codecs and files come on top)."""
    from ._memory import GiB, available_bytes
    from .models.memory import model_peak_bytes

    have = available_bytes(device)
    if have is None:
        return batch
    calls = 2 if cfg else 1
    size = frame_size or config.height
    out_bytes = 2 * 4 * (3 * config.frames * size * size + config.audio_length * 160 * 2)  # pixels, sound, copies
    state_bytes = 6 * 4 * (_numel(config.video_shape) + _numel(config.audio_shape))  # sampler state per clip
    one = model_peak_bytes(config, calls) + out_bytes + state_bytes
    if one > have:
        def size_of(n: int) -> str:
            return f"{n / GiB:.1f} GiB" if n >= GiB // 10 else f"{n / (1 << 20):.0f} MiB"

        raise CliError(f"one clip of {config.frames} frames at {size}x{size} needs about {size_of(one)} of memory "
                       f"(estimated), more than the {size_of(have)} available on {torch.device(device).type}; use a "
                       f"model with fewer frames")
    if batch == 1 or 2 * one * batch <= have:  # clearly fits (the network's peak grows less than linearly)
        return batch
    per = model_peak_bytes(config, 2 * calls) - model_peak_bytes(config, calls) + out_bytes + state_bytes
    return max(1, min(batch, int((have // 2 - (one - per)) // max(per, 1))))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def run(args: argparse.Namespace) -> list[Path]:
    from . import models
    from .pipeline import Pipeline

    _check(args)
    try:
        pipe = Pipeline.from_pretrained(args.checkpoint or "default", device=args.device, runtime=args.runtime,
                                        precision=args.precision, autoencoder=args.autoencoder,
                                        vocoder=args.vocoder_module, progress=not args.no_progress)
    except models.DefaultModelUnavailable:
        raise CliError("no trained default model ships with this avfast yet; pass --checkpoint DIR") from None
    out = Path(args.out)  # checked writable before any work (_check_inputs), made when the first clip is ready
    cfg = args.cfg_scale[0] if len(args.cfg_scale) == 1 else tuple(args.cfg_scale)
    condition = {} if args.task == "joint" else {"video" if args.task == "v2a" else "audio": args.input}
    steps, sampler = args.steps, args.sampler   # None: the Pipeline's defaults (eta > 0: ddim), as the demo and the API
    use_cfg = args.label is not None and _guided(args)
    chunk = clips_per_call(pipe.config, args.batch, args.device, pipe.frame_size, use_cfg)
    if isinstance(args.seconds, (int, float)):   # a long clip's own memory grows with its duration
        from ._memory import long_clips_that_fit

        fits = long_clips_that_fit(pipe.config, float(args.seconds), args.device, pipe.frame_size, "--seconds")
        chunk = chunk if fits is None else min(chunk, fits)
    if chunk < args.batch:
        print(f"{args.batch} clips do not fit in memory at once: making and writing them {chunk} at a time")
    written, calls, seconds = [], 0, 0.0
    for start in range(0, args.batch, chunk):  # clip i from seed + i, whatever the pieces
        try:
            clips = pipe(args.task, **condition, steps=steps, sampler=sampler, seed=args.seed + start,
                         batch=min(chunk, args.batch - start), eta=args.eta, spacing=args.spacing,
                         guidance=args.guidance, condition_mode=args.condition_mode, gamma=args.gamma, cfg=cfg,
                         labels=args.label, seconds=args.seconds, overlap=args.overlap,
                         window_batch=args.window_batch, window_noise=args.window_noise, window=args.window,
                         refine=args.refine)
        except ValueError as e:
            if _too_short(e, args):
                raise CliError(f"--input: {e} (use --seconds all to make {'sound' if args.task == 'v2a' else 'video'} "
                               f"for the whole input)") from None
            raise
        calls, seconds = calls + clips.calls, seconds + clips.seconds
        out.mkdir(parents=True, exist_ok=True)
        for clip in clips:
            written.append(clip.save(out / f"{args.task}_seed{clip.seeds[0]}.mp4"))
            print(f"wrote {written[-1]}")
    clips.calls, clips.seconds = calls, seconds
    audio_source = ("the input sound" if args.task == "a2v" else
                    f"MelGAN vocoder ({args.vocoder})" if not pipe.vocoder.is_fallback else
                    "Griffin-Lim fallback (no --vocoder given; lower quality)")
    print(f"audio: {audio_source}")
    if clips.windows > 1:
        print(f"{clips.duration:g} s: {clips.windows} overlapping windows of {clips.window_frames} frames per step, "
              f"largest model call {clips.peak_batch} inputs")
    elif clips.windows == 1:   # shorter than a window, or exactly one: the model runs once on the whole clip
        n = clips.pixels.shape[2]
        print(f"{clips.duration:g} s: one window of {n} frame{'' if n == 1 else 's'}")
    passes = "".join(f" then {p}" for p in clips.passes)
    gamma = "" if clips.gamma == 1 else f", γ = {clips.gamma:g}"
    print(f"{args.task}{passes}, {clips.sampler}, {clips.steps} steps{' per pass' if passes else ''}{gamma}, "
          f"runtime {args.runtime} on {pipe.device}: "
          f"{clips.calls} {'function evaluations of the whole clip' if clips.windows else 'denoiser calls'} in "
          f"{clips.seconds:.2f} s = {1000 * clips.seconds / clips.calls:.1f} ms/FE "
          f"(sampling loop included), {clips.seconds / args.batch:.2f} s per clip (batch {args.batch}, decoding "
          f"excluded)")
    return written


def _too_short(error: ValueError, args: argparse.Namespace) -> bool:
    """Whether `error` is the pipeline's refusal of an --input shorter than the model's clip ("... has 10
    frames ...; the model needs 18"): --seconds all then makes a clip of the input's own length."""
    return args.seconds is None and args.input is not None and "; the model needs" in str(error)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        with one_line_warnings(PROG):  # a distilled model's notes as `prog: warning: ...`, no source lines
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
