"""`python -m avfast.demo`: the package's main job on its embedded default model, in about a minute on a CPU.

Three clips from the package's trained default model (`avfast.Pipeline.from_pretrained("default")`):
  v2a    sound for the bundled synthetic clip (avfast/assets/demo_clip.mp4)
  a2v    video for the bundled sound (avfast/assets/demo_sound.wav)
  joint  video and sound together from noise
Each is written as an mp4 with sound, scored with AV-Align (the Sony baseline's IoU form; the bundled clip's own
score is printed as the ceiling), and drawn in one figure that lines up the audio onsets with the
visual motion. Prints ms per function evaluation and seconds per clip. The same seed, settings and
--threads write the same bytes (sampler noise and Griffin-Lim phase both come from the seed; another thread
count sums in another order, which can move a pixel by one level).

The bundled files were made by `make_assets()` from held-out synthetic clips (seed 1: the default
model was trained on seed 0's clips only).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from ._cli import THREADS_HELP, CliError, Parser, guarded, one_line_warnings, program, use_threads
from ._figures import save_figure

PROG = "python -m avfast.demo"
ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_CLIP = ASSETS / "demo_clip.mp4"
DEMO_SOUND = ASSETS / "demo_sound.wav"
# What the demo imports on its way: video I/O (av), the bundled sound (soundfile), AV-Align's optical
# flow (cv2) and the figure (matplotlib). Checked before any work, so a missing one costs one line.
NEEDS = ("av", "soundfile", "cv2", "matplotlib")


@dataclass
class DemoClip:
    task: str
    path: Path
    pixels: torch.Tensor  # [3, F, H, W] in [-1, 1]
    wave: torch.Tensor    # [N]
    seconds: float
    calls: int
    score: float | None = None
    onsets: list | None = None
    peaks: list | None = None
    flow: list | None = None


def make_assets(directory: Path = ASSETS) -> None:
    """Writes the bundled demo clip (video + sound) and demo sound from held-out synthetic clips."""
    from .data import save_audio, write_video
    from .models import preset
    from .train.data import SyntheticAVDataset

    cfg = preset("tiny")
    held_out = SyntheticAVDataset(cfg, num_clips=2, seed=1, cache=False)
    directory.mkdir(parents=True, exist_ok=True)
    clip = held_out.clip(0)
    write_video(directory / DEMO_CLIP.name, clip.video, fps=clip.fps, audio=clip.audio, sample_rate=clip.sample_rate)
    save_audio(directory / DEMO_SOUND.name, held_out.clip(1).audio, clip.sample_rate)


def _score(clip: DemoClip, fps: float, sr: int) -> None:
    """AV-Align of the clip's file as written (H.264 + AAC), read as `python -m avfast.metrics av-align` reads
    it (each file at its own size), so the table's score is the file's: scored before encoding it differed."""
    from .data.video import read_video
    from .metrics import av_align

    written = read_video(clip.path, fps=fps, size=None, sample_rate=sr)
    r = av_align(written.video, written.audio, fps=fps, sample_rate=sr)
    clip.score, clip.onsets, clip.peaks, clip.flow = r.score, r.audio_onsets, r.video_peaks, r.flow_magnitude


def _figure(clips: list[DemoClip], reference: DemoClip, path: Path, fps: float, sr: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [reference] + clips
    fig, axes = plt.subplots(2 * len(rows), 1, figsize=(9, 2.1 * len(rows)), dpi=110,
                             gridspec_kw={"height_ratios": [1, 1.4] * len(rows)})
    for i, c in enumerate(rows):
        strip, ax = axes[2 * i], axes[2 * i + 1]
        frames = ((c.pixels.clamp(-1, 1) + 1) / 2).permute(2, 1, 3, 0)  # [H, F, W, 3]
        strip.imshow(frames.reshape(frames.shape[0], -1, 3).numpy(), aspect="auto", interpolation="nearest")
        strip.set_axis_off()
        label = "bundled clip (ground truth)" if c is reference else c.task
        strip.set_title(f"{label}: AV-Align {c.score:.2f}", fontsize=9, loc="left")
        duration = c.pixels.shape[1] / fps
        flow = np.asarray(c.flow)
        t_flow = np.arange(len(flow)) / fps
        ax.plot(t_flow, flow / max(flow.max(), 1e-6), color="tab:blue", label="visual motion (flow)")
        wave = c.wave.numpy()
        hop = 160
        env = np.sqrt(np.convolve(wave ** 2, np.ones(hop) / hop, mode="same"))[::hop]
        ax.plot(np.arange(len(env)) * hop / sr, env / max(env.max(), 1e-6), color="tab:red", alpha=0.6,
                label="audio envelope")
        for t in c.peaks:
            ax.axvline(t, color="tab:blue", ls="-", lw=1.5, alpha=0.7)
        for t in c.onsets:
            ax.axvline(t, color="tab:red", ls="--", lw=1.2)
        ax.set_xlim(0, duration)
        ax.set_yticks([])
        if i == 0:
            ax.legend(loc="upper right", fontsize=7, frameon=False)
        if i == len(rows) - 1:
            ax.set_xlabel("time (s): solid blue = motion peaks, dashed red = audio onsets")
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, checkpoint: str | None = None, steps: int | None = None, sampler: str | None = None, seed: int = 0,
        condition_mode: str = "clean", progress: bool = True, threads: int = 0) -> list[DemoClip]:
    """The demo's three clips, scores and figure in `out`. checkpoint: a model folder, or "default" /
    "default:teacher" (None: "default"). threads: torch threads (0: torch's default)."""
    from ._deps import check_installed
    from .pipeline import Pipeline
    from .sample import check_checkpoint

    from ._cli import check_out_folder

    check_installed(NEEDS, PROG)
    check_out_folder(out)  # a file, or a place nothing can be written: one line before any work
    if steps is not None and steps < 1:
        raise CliError(f"--steps must be >= 1, got {steps}")
    if seed < 0:
        raise CliError(f"--seed must be >= 0, got {seed}")
    check_checkpoint(checkpoint)
    use_threads(threads)
    pipe = Pipeline.from_pretrained(checkpoint or "default", progress=progress)
    fps, sr = pipe.config.fps, pipe.config.sample_rate
    out.mkdir(parents=True, exist_ok=True)

    ref_pixels, ref_wave = pipe.read_video(DEMO_CLIP), pipe.read_audio(DEMO_CLIP)
    sound = pipe.read_audio(DEMO_SOUND)
    jobs = [("v2a", {"video": ref_pixels, "condition_mode": condition_mode}),
            ("a2v", {"audio": sound, "condition_mode": condition_mode}),
            ("joint", {})]
    # One untimed call first, so that s/clip and ms/FE are the steady state, not the first call's one-time
    # costs (thread pool, allocator, the first kernels' dispatch), which fell on v2a, the first task.
    pipe("joint", steps=steps, sampler=sampler, seed=seed, progress=False)
    clips = []
    for task, inputs in jobs:
        made = pipe(task, **inputs, steps=steps, sampler=sampler, seed=seed, progress=progress)
        path = made.save(out / f"{task}.mp4")
        clip = DemoClip(task, path, made.pixels[0], made.waveform[0], made.seconds, made.calls)
        _score(clip, fps, sr)
        clips.append(clip)
    reference = DemoClip("reference", DEMO_CLIP, ref_pixels[0], ref_wave[0], 0.0, 0)
    _score(reference, fps, sr)
    figure = out / "demo.png"
    _figure(clips, reference, figure, fps, sr)

    print(f"\nmodel: {'default' if checkpoint is None else checkpoint} ({pipe.model.num_parameters / 1e6:.2f} M "
          f"parameters), {made.sampler} {made.steps} steps{'' if made.gamma == 1 else f' at γ = {made.gamma:g}'}"
          f"{''.join(f', joint then {p}' for p in made.passes)}, audio "
          f"decoded by Griffin-Lim (no MelGAN weights ship)")
    print(f"{'task':<7} {'file':<28} {'AV-Align':>8} {'s/clip':>7} {'ms/FE':>7}   (after one untimed warm-up call)")
    for c in clips:
        print(f"{c.task:<7} {str(c.path):<28} {c.score:>8.3f} {c.seconds:>7.2f} {1000 * c.seconds / c.calls:>7.1f}")
    print(f"{'ceiling':<7} {'(bundled clip, real sound)':<28} {reference.score:>8.3f}")
    print(f"figure: {figure}")
    return clips


def main(argv=None) -> int:
    ap = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    ap.add_argument("--checkpoint", help="a model folder instead of the embedded default; default:teacher the "
                    "model the default was distilled from")
    ap.add_argument("--steps", type=int, default=None,
                    help="sampler steps; default: a distilled model's own step count (4 for the embedded default), "
                         "else 25 (avfast.Pipeline's default, as python -m avfast.sample)")
    ap.add_argument("--sampler", default=None, choices=("ddim", "dpmpp2m"),
                    help="default: a distilled model's own sampler, else dpmpp2m (avfast.Pipeline's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--condition-mode", default="clean", choices=("clean", "replace"),
                    help="how v2a/a2v give the model its condition (the default model was trained for 'clean')")
    ap.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    def work() -> None:
        with one_line_warnings(PROG):  # a distilled model's notes as `prog: warning: ...`, no source lines
            run(Path(args.out), args.checkpoint, args.steps, args.sampler, args.seed, args.condition_mode,
                not args.no_progress, args.threads)

    return guarded(PROG, work)


if __name__ == "__main__":
    program(main)
