"""`avfast.sample(model, ...)` and the command line `python -m avfast.sample`.

    video, audio = avfast.sample(model, task="v2a", condition=latents, steps=50, sampler="dpmpp2m")
    python -m avfast.sample --checkpoint DIR --task v2a --input clip.mp4 --steps 50 --sampler dpmpp2m --out OUT/

This module is both: it is made callable (`avfast.sample(...)` calls `sample`), and
`from avfast.sample import sample` gives the function itself. The sampler lives in
`avfast.diffusion.sampling`; this file adds the command line: it loads a checkpoint (or the
package's default model), turns `--input` into the condition in model space, decodes the result
(autoencoder for latent models, MelGAN with `--vocoder` or a labelled Griffin-Lim fallback) and
writes one mp4 with sound per clip.
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .diffusion.sampling import CONDITION_MODES, TASKS, sample
from .diffusion.solvers import SAMPLERS
from .diffusion.timesteps import SPACINGS

__all__ = ["RUNTIMES", "main", "sample"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Autocast:
    """A PyTorch denoiser under `torch.autocast(dtype)`, handing fp32 back: the sampler keeps its state in
    fp32 and only the network runs in 16 bits (autograd still works, so reconstruction guidance does)."""

    def __init__(self, denoiser: Any, dtype: torch.dtype) -> None:
        self.denoiser, self.dtype = denoiser, dtype
        self.supports_grad = getattr(denoiser, "supports_grad", True)

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        kwargs = {} if labels is None else {"labels": labels}
        with torch.autocast(v_t.device.type, dtype=self.dtype):
            out = self.denoiser(v_t, a_t, t_v, t_a, **kwargs)
        return tuple(o.float() for o in out)


def _in_precision(denoiser: Any, args: argparse.Namespace) -> Any:
    dtype = PRECISIONS[args.precision]
    return denoiser if dtype is None else Autocast(denoiser, dtype)


def _torch_runtime(model: torch.nn.Module, args: argparse.Namespace) -> Any:
    return _in_precision(model, args)


# Denoiser backends by --runtime name: each takes the loaded torch model and the parsed arguments
# and returns a Denoiser (`avfast.diffusion.protocol`). The export issue adds its runtimes here.
RUNTIMES: dict[str, Callable[[torch.nn.Module, argparse.Namespace], Any]] = {"torch": _torch_runtime}


def _avfast_runtime(name: str) -> Callable[[torch.nn.Module, argparse.Namespace], Any]:
    """An `avfast.runtime` backend; exported ones are exported (and cached) for this batch of denoiser calls."""

    def make(model: torch.nn.Module, args: argparse.Namespace) -> Any:
        from . import runtime

        cfg_batch = 2 if args.label is not None and any(s != 1.0 for s in args.cfg_scale) else 1  # CFG: one 2B call
        if name in runtime.TORCH_RUNTIMES:  # PyTorch: autocast around the model
            return _in_precision(runtime.create(name, model), args)
        try:  # exported: a graph in that precision (OpenVINO bf16: the fp32 graph on its bf16 kernels)
            return runtime.create(name, model, batch_size=cfg_batch * args.batch, device=args.device,
                                  precision=args.precision, progress=not args.no_progress)
        except runtime.RuntimeUnavailable as e:
            raise CliError(f"--runtime {name}: {e}") from None

    return make


def _register_avfast_runtimes() -> None:
    from .runtime import NAMES  # light: the runtime packages themselves are imported when one is created

    RUNTIMES.update({name: _avfast_runtime(name) for name in NAMES})


_register_avfast_runtimes()


class _Counted:
    """Counts the denoiser evaluations of a run (for ms/FE) and forwards what samplers look at."""

    def __init__(self, denoiser: Any) -> None:
        self.denoiser, self.calls = denoiser, 0
        self.supports_grad = getattr(denoiser, "supports_grad", True)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.denoiser(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m avfast.sample",
                                description="Generate video with sound (joint), sound for a video (v2a) or video "
                                            "for a sound (a2v) and write mp4 files.")
    p.add_argument("--checkpoint", metavar="DIR", help="model folder (config.json + model.safetensors); "
                   "default: the package's trained default model")
    p.add_argument("--task", choices=TASKS, default="joint")
    p.add_argument("--input", metavar="FILE", help="the condition for v2a (mp4) or a2v (mp4 with sound, or wav/flac/ogg)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    p.add_argument("--spacing", choices=SPACINGS, default="trailing")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic)")
    p.add_argument("--guidance", type=float, default=0.0, help="reconstruction guidance λ for v2a/a2v (0 = replacement)")
    p.add_argument("--condition-mode", choices=CONDITION_MODES, default="replace")
    p.add_argument("--gamma", type=float, default=1.0, help="timestep adjustment γ (1 = none)")
    p.add_argument("--cfg-scale", type=float, nargs="+", default=[1.0], metavar="S",
                   help="classifier-free guidance scale: one for both modalities, or video then audio")
    p.add_argument("--label", type=int, help="class label (models trained with labels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1, help="clips in one batch (seeds seed .. seed+batch-1)")
    p.add_argument("--out", metavar="DIR", default="samples")
    p.add_argument("--vocoder", metavar="WEIGHTS", help="MelGAN .safetensors; default: Griffin-Lim (lower quality)")
    p.add_argument("--autoencoder", metavar="DIR", help="Stable Diffusion VAE folder, for latent-space models")
    p.add_argument("--runtime", default="torch", help=f"denoiser backend: {', '.join(RUNTIMES)}")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="network precision: autocast for the PyTorch runtimes, the export's precision for the "
                        "exported ones (openvino bf16: the fp32 graph on its bf16 kernels); default fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _load_model(checkpoint: str | None, device: str) -> torch.nn.Module:
    from . import models

    if checkpoint is None:
        try:
            return models.default(device=device).eval()
        except models.DefaultModelUnavailable:
            raise CliError("no trained default model ships with this avfast yet; pass --checkpoint DIR") from None
    if not Path(checkpoint).is_dir():
        raise CliError(f"--checkpoint: {checkpoint!r} is not a folder (expected config.json + model.safetensors)")
    return models.from_pretrained(checkpoint, device=device).eval()


def _load_autoencoder(config, path: str | None, device: str):
    if config.video_space != "latent":
        return None
    if path is None:
        raise CliError("this model generates autoencoder latents; pass --autoencoder DIR (a Stable Diffusion VAE)")
    from .data import StableDiffusionVAE

    return StableDiffusionVAE.from_pretrained(path).to(device)


def _pixel_size(config, autoencoder) -> int:
    if config.height != config.width:
        raise CliError(f"the command line reads square frames; this model's are {config.height}x{config.width}")
    return config.height * (autoencoder.downsample if autoencoder is not None else 1)


def _read_condition(args, config, autoencoder, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition in model space [1, ...], the same condition as data: pixels [3, F, H, W] or waveform [N])."""
    from .data import load_audio, read_video
    from .models import codec

    if args.input is None:
        raise CliError(f"--task {args.task} needs --input FILE (the {'video' if args.task == 'v2a' else 'sound'} "
                       f"to condition on)")
    path = args.input
    if args.task == "v2a":
        clip = read_video(path, fps=config.fps, size=_pixel_size(config, autoencoder), sample_rate=config.sample_rate,
                          max_frames=config.frames)
        if clip.video.shape[1] < config.frames:
            raise CliError(f"--input: {path!r} has {clip.video.shape[1]} frames at {config.fps:g} fps; the model "
                           f"needs {config.frames}")
        pixels = clip.video.to(device)
        return codec.video_to_model(pixels[None], config, autoencoder), pixels
    from .data.mel import MelConfig

    n = config.audio_length * MelConfig(sample_rate=config.sample_rate, n_mels=config.mel_bins).hop_length
    if Path(path).suffix.lower() in AUDIO_SUFFIXES:
        wave = load_audio(path, sample_rate=config.sample_rate, resample=True)
    else:
        wave = read_video(path, fps=config.fps, size=None, sample_rate=config.sample_rate).audio
        if wave is None:
            raise CliError(f"--input: {path!r} has no audio stream to condition on")
    if wave.shape[0] < n:
        raise CliError(f"--input: {path!r} has {wave.shape[0] / config.sample_rate:.2f} s of sound; the model "
                       f"needs {n / config.sample_rate:.2f} s")
    wave = wave[:n].to(device)
    return codec.audio_to_model(wave[None], config)[..., :config.audio_length], wave


def _vocoder(args, config):
    import warnings

    from .data import Vocoder
    from .data.mel import MelConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback is labelled in our own output instead
        return Vocoder(args.vocoder, MelConfig(sample_rate=config.sample_rate, n_mels=config.mel_bins))


def run(args: argparse.Namespace) -> list[Path]:
    from .data import write_video
    from .models import codec

    if args.runtime not in RUNTIMES:
        raise CliError(f"--runtime: {args.runtime!r} is not available; this build has {', '.join(RUNTIMES)}")
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    if args.task == "joint" and args.input is not None:
        raise CliError("--input is a condition for --task v2a or a2v; --task joint takes none")
    model = _load_model(args.checkpoint, args.device)
    config = model.config
    autoencoder = _load_autoencoder(config, args.autoencoder, args.device)
    condition = data = None
    if args.task != "joint":
        condition, data = _read_condition(args, config, autoencoder, args.device)
    vocoder = _vocoder(args, config)  # before sampling: a bad --vocoder fails fast
    denoiser = _Counted(RUNTIMES[args.runtime](model, args))
    cfg = args.cfg_scale[0] if len(args.cfg_scale) == 1 else tuple(args.cfg_scale)
    param = next(model.parameters())

    if param.is_cuda:
        torch.cuda.synchronize(param.device)
    start = time.perf_counter()
    video, audio = sample(denoiser, task=args.task, condition=condition, steps=args.steps, sampler=args.sampler,
                          seed=args.seed, batch_size=args.batch, eta=args.eta, spacing=args.spacing,
                          guidance=args.guidance, condition_mode=args.condition_mode, gamma=args.gamma,
                          cfg_scale=cfg, labels=args.label, video_shape=config.video_shape,
                          audio_shape=config.audio_shape, progress=not args.no_progress, device=param.device,
                          dtype=param.dtype)
    if param.is_cuda:
        torch.cuda.synchronize(param.device)
    seconds = time.perf_counter() - start

    with torch.no_grad():
        pixels = data.expand(args.batch, *data.shape) if args.task == "v2a" else codec.video_from_model(video, config,
                                                                                                      autoencoder)
        waves = (data.expand(args.batch, *data.shape) if args.task == "a2v"
                 else vocoder(codec.audio_from_model(audio, config)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(args.batch):
        path = out / f"{args.task}_seed{args.seed + i}.mp4"
        write_video(path, pixels[i].float().cpu(), fps=config.fps, audio=waves[i].float().cpu().clamp(-1, 1),
                    sample_rate=config.sample_rate)
        written.append(path)
        print(f"wrote {path}")
    audio_source = ("the input sound" if args.task == "a2v" else
                    f"MelGAN vocoder ({args.vocoder})" if not vocoder.is_fallback else
                    "Griffin-Lim fallback (no --vocoder given; lower quality)")
    print(f"audio: {audio_source}")
    print(f"{args.task}, {args.sampler}, {args.steps} steps, runtime {args.runtime} on {param.device}: "
          f"{denoiser.calls} denoiser calls in {seconds:.2f} s = {1000 * seconds / denoiser.calls:.1f} ms/FE "
          f"(sampling loop included), {seconds / args.batch:.2f} s per clip (batch {args.batch}, decoding excluded)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (CliError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


class _CallableModule(types.ModuleType):
    """`avfast.sample(...)` calls `sample(...)` although `avfast.sample` is this module."""

    def __call__(self, *args, **kwargs):
        return sample(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    from avfast.heap import keep_large_allocations_on_the_heap

    keep_large_allocations_on_the_heap()  # a program, not a library call: see avfast/heap.py
    # Run the imported `avfast.sample`, not this __main__ copy, so runtimes registered in its RUNTIMES count.
    from avfast.sample import main as _main

    sys.exit(_main())
