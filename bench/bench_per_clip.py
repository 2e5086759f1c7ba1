"""Seconds per clip (issue 20, item 5): one `avfast.Pipeline` call making one clip at the distilled step count.

A clip is the whole call: the denoiser's steps (4 DDIM evaluations, the shipped default's
`distilled_steps` and `distilled_sampler`), the video decode (the preset's frame autoencoder) and the
vocoder (Griffin-Lim, the Pipeline's fallback: no MelGAN weights are shipped). Two models:

- `tiny-latent`: the shipped default, `avfast.models.default()` with its real weights and its frame codec
  (`avfast/models/default/autoencoder/`), 18 frames of 32x32 pixels, 1.8 s of sound;
- `tiny-latent teacher`: the model the default was distilled from (`default:teacher`), at its own 25
  DPM-Solver++ steps: the same run's reference for the distilled default's speed-up (issue 20: >= 5x);
- `paper-128`: random weights (time does not depend on them) with a Stable Diffusion VAE of
  sd-vae-ft-mse's architecture, also random (`diffusers.AutoencoderKL` built from the published config:
  no weights are downloaded), 18 frames of 128x128 pixels, 1.8 s of sound. Its decode is the full
  SD-VAE decoder on every frame.

The default and paper-128 run at the default's step count and sampler, whatever the model's own config says. Tasks: joint
(both modalities from noise, one pass), joint+v2a (the shipped default's own joint clip: that pass, then the sound
redrawn for its video, twice the evaluations) and v2a (a random 18-frame video in, sound out: the video encode, the
audio-only steps and Griffin-Lim; no video decode). Precisions: fp32, and bf16 (the Pipeline's
`precision="bf16"`: autocast around the denoiser; the frame autoencoder and Griffin-Lim stay fp32, as
the Pipeline runs them). Each row's extra fields: `evaluations` (denoiser evaluations of one clip, from
`Clip.calls`), `sampling_s` (the sampler loop alone, `Clip.seconds`, median over the rounds) and the
rest of the call (`decode_s`: codecs and vocoder, median of call minus sampling).

MM-Diffusion's own 20-step DPM-Solver joint sampler is quoted by issue 20 at ~190 s per clip in bf16
on this CPU (MM_DIFFUSION_S below). It is not run here (its code and weights are not available on this
machine): the ratio `× MM-Diffusion` divides that quoted figure by the row's median, it is not a ratio
of one run.

    AVFAST_BENCH_SUMMARY=/tmp/per_clip pytest bench/bench_per_clip.py --benchmark-only -q -p no:cacheprovider
    python -m bench.report --merge /tmp/per_clip.json   # its rows replace this file's rows in bench/results/cpu.json
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
import torch

from avfast import models
from avfast.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` importable however pytest is started
from conftest import warm_up  # noqa: E402

MM_DIFFUSION_S = 190.0     # issue 20: MM-Diffusion's 20-step DPM-Solver joint sampler, bf16, this CPU (quoted)
MM_DIFFUSION_STEPS = 20
ROUNDS = {"tiny-latent": 10, "tiny-latent teacher": 5, "paper-128": 3}
MODELS = ("tiny-latent", "tiny-latent teacher", "paper-128")
TEACHER_STEPS, TEACHER_SAMPLER = 25, "dpmpp2m"  # the teacher's own sampling (issue 20's reference row)
# "joint": one joint pass; "joint+v2a": the shipped default's own joint clip, the joint pass then the sound redrawn
# for its video (its config's joint_refine; docs/sampling.md), run for the default only
TASKS = ("joint", "joint+v2a", "v2a")
REFINE = {"joint": (), "joint+v2a": ("v2a",)}
DTYPES = ("fp32", "bf16")

# sd-vae-ft-mse's architecture (its config.json): what CMMD decodes paper-128's latents with.
SD_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                     layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=256)


def distilled_settings() -> tuple[int, str]:
    """The shipped default's distilled step count and sampler (4, "ddim")."""
    cfg = models.default().config
    return int(cfg.distilled_steps), str(cfg.distilled_sampler)


def random_sd_vae():
    """A Stable Diffusion VAE with sd-vae-ft-mse's architecture and random weights (decode time only)."""
    import diffusers

    from avfast.data.autoencoder import StableDiffusionVAE

    torch.manual_seed(0)
    return StableDiffusionVAE(diffusers.AutoencoderKL(**SD_VAE_CONFIG), progress=False)


def make_pipeline(model: str, precision: str) -> Pipeline:
    if model == "tiny-latent":
        return Pipeline.from_pretrained("default", precision=precision, progress=False)
    if model == "tiny-latent teacher":
        return Pipeline.from_pretrained("default:teacher", precision=precision, progress=False)
    if model == "paper-128":
        torch.manual_seed(0)
        return Pipeline(models.create("paper-128").eval(), autoencoder=random_sd_vae(), precision=precision,
                        progress=False)
    raise ValueError(f"per-clip bench: unknown model {model!r}")


_PIPES: dict[tuple[str, str], Pipeline] = {}


def pipeline(model: str, precision: str) -> Pipeline:
    if (model, precision) not in _PIPES:
        _PIPES.clear()  # one model in memory at a time
        _PIPES[model, precision] = make_pipeline(model, precision)
    return _PIPES[model, precision]


# joint+v2a is the shipped default's own joint clip; the teacher and paper-128 sample joint clips in one pass
CASES = [(m, t) for m in MODELS for t in TASKS if t != "joint+v2a" or m == "tiny-latent"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model,task", CASES)
def test_seconds_per_clip(benchmark, model, task, dtype):
    steps, sampler = (TEACHER_STEPS, TEACHER_SAMPLER) if model.endswith("teacher") else distilled_settings()
    pipe = pipeline(model, dtype)
    torch.manual_seed(1)
    video = (torch.rand(3, pipe.config.frames, pipe.frame_size, pipe.frame_size) * 2 - 1) if task == "v2a" else None
    passes = {"refine": REFINE[task]} if task in REFINE else {}
    clips = []

    def run():
        clips.append(pipe(task.split("+")[0], video=video, steps=steps, sampler=sampler, seed=0, **passes))

    benchmark.group = f"per clip {model} {task} {steps} steps"
    benchmark.extra_info.update(impl="pipeline", dtype=dtype, model=model, task=task, steps=steps, sampler=sampler,
                                mm_diffusion_s=MM_DIFFUSION_S, mm_diffusion_steps=MM_DIFFUSION_STEPS,
                                frame_size=pipe.frame_size, frames=pipe.config.frames,
                                audio_s=pipe.num_samples / pipe.config.sample_rate,
                                video_codec=type(pipe.autoencoder).__name__, vocoder=pipe.vocoder.method)
    warm_up(run, calls=1)
    clips.clear()
    benchmark.pedantic(run, rounds=ROUNDS[model], iterations=1)
    timed = clips[:]  # the timed rounds (the wrapper's peak-memory and FLOP calls come after)
    if timed and benchmark.stats is not None and getattr(benchmark.stats, "stats", None) is not None:
        calls = {c.calls for c in timed}
        assert len(calls) == 1, calls
        sampling = statistics.median(c.seconds for c in timed)
        total = statistics.median(benchmark.stats.stats.data)
        benchmark.extra_info.update(evaluations=calls.pop(), sampling_s=sampling, decode_s=max(total - sampling, 0.0))
    elif timed:
        benchmark.extra_info.update(evaluations=timed[0].calls)
    for clip in timed:
        assert torch.isfinite(clip.pixels).all() and torch.isfinite(clip.waveform).all()
        assert clip.steps == steps and clip.sampler == sampler
