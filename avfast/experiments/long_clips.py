"""`python -m avfast.experiments.long_clips`: are long clips (overlapping windows) as good as one window?

    python -m avfast.experiments.long_clips --model default --clips 16 --seconds 7.2 --out bench/results/long_clips
    python -m avfast.experiments.long_clips --model runs/x/final --clips 4 --seconds 7.2 --steps 8 --out /tmp/lc

Held-out synthetic clips (`avfast.data.synthetic.make_clip`; clip i drawn from a generator seeded from
--data-seed and i, never 0, the training data's seed) of two lengths:
  long     --seconds (7.2 by default: four windows' worth), events spread over the whole clip: as many
           events per window-length as the training clips have (1-3), placed at random with the
           training clips' minimum gap. --content scenes (the default): each ball is in view only between
           the flashes around its hit (`make_clip(transient=True)`: the flashes cut the clip into scenes of
           1-3 balls), so a long clip shows about as many balls at a time as a training clip and its windows
           look like training clips. --content persistent: every ball in every frame (each hangs until its
           event, then rests), about 4 at a time in a 7.2-s clip, more than any training clip holds.
  window   the model's own length (1.8 s for the default), 1-3 events, as in training.
  cut      the long clips' own content one window at a time: each window of the long layout sampled
           alone (the plain call on its seconds of the real input; joint from noise) and the windows cut
           together at the middle of their overlaps: what one window of the model does on the long clips'
           own content, paired with the long clips.
Each task (v2a: sound for the real video; a2v: video for the real sound; joint: both from noise) runs
through `avfast.Pipeline`: the long clips with `seconds=` (windows denoised together, see
docs/long-clips.md), the window clips plainly; the same sampler, steps and seeds. Measures, with 95 %
bootstrap CIs over clips (`avfast.experiments.stats`):
  AV-Align        over the whole clip, generated and real, for both lengths; the ratio long / window of
                  the generated clips' means (the issue's bar: >= 0.9), and of the real clips' (how much
                  the metric itself moves with length), with independent resampling of the two sets;
                  and long / cut, paired over the same clips (does denoising the windows together lose
                  anything against the same windows sampled alone?).
  beat hit rate   v2a: generated sound's beats against the real sound's, ±100 / ±500 ms, long / window.
  seams           per long generated clip: frame-to-frame change (mean |x_f - x_f-1|, video of a2v /
                  joint) and audio energy change (|Δ dB| of the per-mel-column RMS, sound of v2a /
                  joint) at the window joins (the transitions at every window's first and last frame /
                  column inside the clip) against the same measure away from joins (>= 2 frames /
                  8 columns from any join). Reported: the mean at joins, the mean and standard deviation
                  away, their difference in units of that deviation (z, with a CI over clips) and the
                  same z on the real clips at the same positions (what content alone gives). No seam:
                  |z| within the real clips' spread (|z| < 1).
  drift           what windows cannot share: the mean colour of the clip's first window against its
                  last (mean |Δ| over RGB), generated and real. The synthetic clips keep one background
                  for the whole clip; a generated long clip need not (each window sees only its own
                  ~2 s, so the scene and objects may change from window to window).
  s/clip          sampling + decoding time per clip, long and window.
--window F samples the long clips (and their cut windows) with windows of F video frames instead of the
model's own (Pipeline's window=; default its config long_window, else its frames); the window clips stay at
the model's length. --window-clips N makes the
window rows of N clips instead of --clips (they cost a fifth of a long clip, and their spread is most of the
bar's CI).
--window-noise shared starts the long clips' windows from shared noise (each window's noise a permutation
of the first window's, FreeNoise-style; `avfast.diffusion.windowed.shared_window_noise`); the window clips
are unchanged.
Output in --out: long_clips.json, long_clips.md, long_clips.png (per-frame residual mean |x -
median3x3(x)| and optical-flow magnitude along a long a2v and joint clip, and the joint clip's audio
energy, window joins and overlaps marked). `--docs` puts the tables between the long_clips markers of every
file of README.md and docs/*.md that holds them (docs/long-clips.md); `--report-only` redoes the tables (and
--docs) from <out>/long_clips.json without sampling.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..diffusion.windowed import WINDOW_NOISES
from ..models.config import REFINE_WORDS, parse_refine
from .pooled import RESAMPLES as POOLED_RESAMPLES
from .pooled import pooled_ci

TASKS = ("v2a", "a2v", "joint")
CONTENTS = ("scenes", "persistent")  # long clips' balls: between the flashes around their hit, or always in view
DEFAULT_OUT = "bench/results/long_clips"
JSON_NAME, TABLE_NAME, FIGURE_NAME = "long_clips.json", "long_clips.md", "long_clips.png"
TOLERANCES = {"hit_100ms": 0.1, "hit_500ms": 0.5}
MAX_EVENTS = 3          # per window-length, as the training clips (avfast.train.data)
MIN_GAP = 6             # frames between events (make_clip's default)
AWAY_FRAMES = 2         # a transition this far from every join counts as "away"
AWAY_COLUMNS = 8        # mel columns (128 ms)
DOC_BLOCK = re.compile(r"(<!-- long_clips:begin -->\n)(.*?)(<!-- long_clips:end -->)", flags=re.S)
DOC_MARKERS = "<!-- long_clips:begin --> ... <!-- long_clips:end -->"
CANNOT_DO_OPENING = "What windows cannot do:"
CUT_SEED_STRIDE = 1_000_003  # window k of the cut-together clips samples from seed + clip + k * this


@dataclass
class LongClipSettings:
    model: str = "default"
    clips: int = 16
    seconds: float = 7.2
    overlap: int | None = None
    steps: int | None = None      # None: the model's own (a distilled student's step count, else 25)
    sampler: str | None = None    # None: the model's own (a distilled student's sampler, else dpmpp2m)
    seed: int = 0
    data_seed: int = 2
    batch: int = 4
    condition_mode: str = "clean"
    tasks: tuple[str, ...] = TASKS
    threads: int = 0
    progress: bool = True
    window_noise: str = "independent"   # the long clips' starting noise (avfast.diffusion.windowed)
    refine: tuple[str, ...] | None = None  # joint's passes after the joint one (Pipeline's refine=; None: the model's)
    gamma: float | None = None    # timestep adjustment γ of every task (None: the model's own, config sampling_gamma)
    content: str = "scenes"       # the long clips' balls (CONTENTS): make_clip(transient=True) for scenes
    window: int | None = None     # video frames per window of the long clips (Pipeline's window=; None: the model's
    #                               config long_window, else its frames, recorded as resolved)
    window_clips: int | None = None  # clips of the window row (None: --clips); its CI narrows the bar's denominator

    def __post_init__(self) -> None:
        for name in ("clips", "steps", "batch"):
            value = getattr(self, name)
            if name == "steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")
        if self.clips < 2:
            raise ValueError(f"--clips must be >= 2 (bootstrap intervals need two clips or more), got {self.clips}")
        if not math.isfinite(self.seconds) or self.seconds <= 0:
            raise ValueError(f"--seconds must be a finite number > 0, got {self.seconds!r}")
        if self.data_seed == 0:
            raise ValueError("--data-seed 0 made the training clips; use a held-out seed (e.g. 2)")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"--overlap must be >= 0 frames, got {self.overlap}")
        if self.sampler not in (None, "ddim", "dpmpp2m"):
            raise ValueError(f"--sampler must be 'ddim' or 'dpmpp2m', got {self.sampler!r}")
        if self.condition_mode not in ("clean", "replace"):
            raise ValueError(f"--condition-mode must be 'clean' or 'replace', got {self.condition_mode!r}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"--tasks must be some of {', '.join(TASKS)}, got {', '.join(self.tasks) or 'none'}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or self.window < 1):
            raise ValueError(f"--window must be an integer >= 1 (video frames per window), got {self.window!r}")
        if self.window_clips is not None and (isinstance(self.window_clips, bool)
                                              or not isinstance(self.window_clips, int) or self.window_clips < 2):
            raise ValueError(f"--window-clips must be an integer >= 2, got {self.window_clips!r}")
        if self.gamma is not None and (isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float))
                                       or not 0 < self.gamma < math.inf):
            raise ValueError(f"--gamma must be a finite number > 0 (1 = no timestep adjustment), got {self.gamma!r}")
        if self.content not in CONTENTS:
            raise ValueError(f"--content must be 'scenes' or 'persistent', got {self.content!r}")
        if self.window_noise not in WINDOW_NOISES:
            raise ValueError(f"--window-noise must be 'independent' or 'shared', got {self.window_noise!r}")
        from ..pipeline import check_refine

        if self.refine is not None:
            self.refine = check_refine(tuple(self.refine), "joint")


# --- held-out clips ---------------------------------------------------------------------------------

def held_out_clips(pipe, seconds: float, n: int, data_seed: int, offset: int = 0, transient: bool = False):
    """n clips of `seconds` at the pipeline's frame size: (pixels [n, 3, F, S, S], waves [n, N], event times,
    event kinds, balls in view per frame, and per clip its balls as (first frame in view, last, hit frame)).
    transient=False: every ball of a clip is in view in every frame (it hangs until its event, then rests),
    as in a training clip, so a long clip's windows show all of its balls, more than a training clip holds;
    transient=True: a ball only between the flashes around its hit (`make_clip(transient=True)`). Balls in
    view: the mean over frames of the balls (partly) in view.

    Clip i: generator seeded data_seed * 1_000_003 + offset + i; 1-3 events per window-length of the clip
    (summed over its window-lengths), placed at random over the whole clip."""
    from ..data.synthetic import make_clip
    from ..diffusion.windowed import audio_columns_for_seconds, frames_for_seconds

    if data_seed == 0:
        raise ValueError("held_out_clips: seed 0 made the training clips")
    cfg = pipe.config
    frames = frames_for_seconds(cfg, seconds)
    samples = audio_columns_for_seconds(cfg, seconds) * pipe.mel.hop_length
    lengths = max(1, round(frames / cfg.frames))          # window-lengths in the clip
    fit = max(1, (frames - 6) // MIN_GAP + 1)              # make_clip: 3 frames at each end, MIN_GAP between
    pixels, waves, events, kinds, balls, ball_spans = [], [], [], [], [], []
    for i in range(n):
        g = torch.Generator().manual_seed(data_seed * 1_000_003 + offset + i)
        n_events = int(sum(torch.randint(1, MAX_EVENTS + 1, (lengths,), generator=g)))
        clip = make_clip(duration=frames / cfg.fps, fps=int(cfg.fps), sample_rate=cfg.sample_rate,
                         size=pipe.frame_size, n_events=min(n_events, fit), kinds="mixed", min_gap_frames=MIN_GAP,
                         generator=g, transient=transient)
        wave = clip.audio[:samples]
        pixels.append(clip.video[:, :frames])
        waves.append(torch.nn.functional.pad(wave, (0, samples - wave.shape[0])))
        events.append(clip.event_times)
        kinds.append(clip.event_kinds)
        balls.append(sum(min(hi, frames - 1) - lo + 1 for lo, hi in clip.ball_frames if lo < frames) / frames)
        hits = [round(t * cfg.fps) for t, k in zip(clip.event_times, clip.event_kinds) if k == "hit"]
        ball_spans.append([(lo, hi, hit) for (lo, hi), hit in zip(clip.ball_frames, hits)])
    return torch.stack(pixels), torch.stack(waves), events, kinds, balls, ball_spans


# --- measures -----------------------------------------------------------------------------------------

def frame_change(pixels: torch.Tensor) -> np.ndarray:
    """[B, 3, F, H, W] -> [B, F-1]: mean |x_f - x_{f-1}| of each transition f-1 -> f."""
    return (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().mean(dim=(1, 3, 4)).numpy()


def column_energy_db(waves: torch.Tensor, hop: int) -> np.ndarray:
    """[B, N] -> [B, N // hop]: RMS of each mel column's hop of samples, in dB."""
    n = waves.shape[1] // hop
    frames = waves[:, : n * hop].reshape(waves.shape[0], n, hop).double()
    return (10 * torch.log10(frames.square().mean(dim=2) + 1e-10)).numpy()


def join_positions(layout) -> tuple[list[int], list[int]]:
    """Transition indices at window edges inside the clip: video transitions f-1 -> f (index f-1 of
    `frame_change`) and audio column steps c-1 -> c (index c-1 of the |Δ dB| series)."""
    video, audio = set(), set()
    ws = layout.windows
    for k, w in enumerate(ws):
        if k > 0:
            video.add(w.frame_start - 1)
            audio.add(w.audio_start - 1)
        if k + 1 < len(ws):
            video.add(w.frame_stop - 1)
            audio.add(w.audio_stop - 1)
    return sorted(video), sorted(audio)


def _away(length: int, joins: list[int], distance: int) -> np.ndarray:
    idx = np.arange(length)
    if not joins:
        return idx
    d = np.min(np.abs(idx[:, None] - np.asarray(joins)[None, :]), axis=1)
    return idx[d >= distance]


def seam_scores(series: np.ndarray, joins: list[int], distance: int) -> dict:
    """Per clip: mean at joins, mean and sd away from them, z = (join - away) / sd_away. series [B, T]."""
    away = _away(series.shape[1], joins, distance)
    at = series[:, joins].mean(axis=1)
    mean_away, sd_away = series[:, away].mean(axis=1), series[:, away].std(axis=1) + 1e-12
    return {"at_joins": at.tolist(), "away_mean": mean_away.tolist(), "away_sd": sd_away.tolist(),
            "z": ((at - mean_away) / sd_away).tolist(), "joins": len(joins), "away": int(away.size)}


def balls_outside_windows(ball_spans: list[list[tuple[int, int, int]]], layout) -> dict:
    """What a window of the layout must show without hearing why: window-ball pairs (a ball in view in some
    frame of the window) whose hit frame lies outside the window (the ball hangs for a later window's hit, or
    rests after an earlier one's). A training clip has none (each ball hangs from frame 0 and falls in the
    clip); a2v windows are conditioned on their own seconds of sound only. ball_spans: per clip, per ball
    (first frame in view, last, hit frame), as `held_out_clips` returns them."""
    pairs = outside = 0
    for spans in ball_spans:
        for lo, hi, hit in spans:
            for w in layout.windows:
                if max(lo, w.frame_start) <= min(hi, w.frame_stop - 1):
                    pairs += 1
                    outside += not w.frame_start <= hit < w.frame_stop
    return {"pairs": pairs, "hit_outside": outside, "share": outside / pairs if pairs else None}


def window_drift(pixels: torch.Tensor, window: int) -> list[float]:
    """Mean |Δ| of the mean RGB colour between the clip's first and last `window` frames."""
    first = pixels[:, :, :window].mean(dim=(2, 3, 4))
    last = pixels[:, :, -window:].mean(dim=(2, 3, 4))
    return (first - last).abs().mean(dim=1).tolist()


def _ci(values) -> dict | None:
    from .stats import bootstrap_ci

    values = [v for v in values if v is not None]
    return bootstrap_ci(values).to_dict() if len(values) >= 2 else None


def _z_spread(z: list[float]) -> dict:
    """The median seam z and the share of clips above 2: a near-static clip's sd away from joins is tiny, so
    one such clip can move the mean z by a whole unit (the mean's CI says so, not where most clips lie)."""
    z = np.asarray(z, dtype=float)
    return {"median": float(np.median(z)), "over_2": float(np.mean(z > 2.0))}


def _paired_ratio(numerator: list[float], denominator: list[float]) -> dict | None:
    """mean / mean over the same clips, with a paired bootstrap CI (clip i's two scores drawn together)."""
    from .stats import bootstrap_ratio_ci

    interval = bootstrap_ratio_ci(numerator, denominator)
    return None if interval is None else interval.to_dict()


def _ratio(long: list[float], window: list[float]) -> dict | None:
    from .stats import bootstrap_independent_ratio_ci

    interval = bootstrap_independent_ratio_ci(long, window)
    return None if interval is None else interval.to_dict()


# --- the run ------------------------------------------------------------------------------------------

def _pipeline(model: str):
    from ..pipeline import Pipeline
    from .finetune import base_weights_file
    from .quality import model_folder

    folder = model_folder(model)
    return folder, Pipeline.from_pretrained(folder, weights=base_weights_file(folder), progress=False)


def _generate(pipe, task: str, pixels, waves, settings: LongClipSettings, long: bool):
    out_p, out_w, seconds, windows, peak = [], [], 0.0, 0, 0
    n = pixels.shape[0]
    for start in range(0, n, settings.batch):
        stop = min(start + settings.batch, n)
        given = {"v2a": {"video": pixels[start:stop]}, "a2v": {"audio": waves[start:stop]},
                 "joint": {"batch": stop - start, "refine": settings.refine}}[task]
        extra = dict(seconds="all" if task != "joint" else settings.seconds, overlap=settings.overlap,
                     window_noise=settings.window_noise, window=settings.window) if long else {}
        t0 = time.perf_counter()
        clip = pipe(task, steps=settings.steps, sampler=settings.sampler, seed=settings.seed + start,
                    gamma=settings.gamma, condition_mode=settings.condition_mode,
                    progress=settings.progress and long, **given, **extra)
        seconds += time.perf_counter() - t0
        out_p.append(clip.pixels.float().clamp(-1, 1))
        out_w.append(clip.waveform.float())
        windows, peak = clip.windows, max(peak, clip.peak_batch)
    return torch.cat(out_p), torch.cat(out_w), seconds, windows, peak


def cut_spans(layout) -> list[tuple[int, int]]:
    """The frames each window keeps when windows sampled one at a time are cut together: window k from the
    middle of its overlap with window k-1 to the middle of its overlap with window k+1 (every frame of the
    clip once, each inside the window that keeps it)."""
    ws = layout.windows
    cuts = [0] + [(a.frame_stop + b.frame_start) // 2 for a, b in zip(ws, ws[1:])] + [layout.frames]
    return list(zip(cuts, cuts[1:]))


def cut_join_positions(layout, fps: float, sample_rate: int, hop: int) -> tuple[list[int], list[int]]:
    """Where the cut-together clips change window, as `join_positions` indexes: video transition lo-1 -> lo at
    each cut frame lo, audio column steps around its cut sample (the step into the column holding it, and out
    of that column too when the cut falls inside it)."""
    video, audio = [], set()
    for lo, _ in cut_spans(layout)[1:]:
        video.append(lo - 1)
        sample = round(lo / fps * sample_rate)
        column = sample // hop
        audio.add(column - 1)
        if sample % hop:
            audio.add(column)
    return video, sorted(c for c in audio if 0 <= c < layout.audio_length - 1)


def _generate_cut(pipe, task: str, pixels, waves, settings: LongClipSettings, layout):
    """The long clips' content one window at a time: each window of the layout sampled alone (the plain
    pipeline call on that window's seconds of the real input: v2a its frames, a2v its sound; joint from
    noise), then the windows cut together at the middle of their overlaps (`cut_spans`: hard cuts, no
    shared state). What one window of the model does on the long clips' own content, to set the long
    clip against the same kind of windows; `window` clips are the training kind."""
    hop, fps, sr = pipe.mel.hop_length, float(pipe.config.fps), int(pipe.config.sample_rate)
    n, samples = pixels.shape[0], waves.shape[1]
    out_p, out_w = torch.empty_like(pixels), torch.zeros_like(waves)
    spans = cut_spans(layout)
    seconds = 0.0
    for k, (w, (lo, hi)) in enumerate(zip(layout.windows, spans)):
        a0 = w.audio_start * hop
        s_lo = 0 if lo == 0 else min(samples, round(lo / fps * sr))
        s_hi = samples if hi == layout.frames else min(samples, round(hi / fps * sr))
        for start in range(0, n, settings.batch):
            stop = min(start + settings.batch, n)
            given = {"v2a": {"video": pixels[start:stop, :, w.frame_start:w.frame_stop]},
                     "a2v": {"audio": waves[start:stop, a0:w.audio_stop * hop]},
                     "joint": {"batch": stop - start, "refine": settings.refine}}[task]
            if settings.window is not None:   # one window of its own length (the model's own: the plain call)
                given |= {"seconds": "all" if task != "joint" else (w.frame_stop - w.frame_start) / fps,
                          "window": settings.window}
            t0 = time.perf_counter()
            clip = pipe(task, steps=settings.steps, sampler=settings.sampler, gamma=settings.gamma,
                        seed=settings.seed + start + CUT_SEED_STRIDE * k, condition_mode=settings.condition_mode,
                        progress=False, **given)
            seconds += time.perf_counter() - t0
            made_p, made_w = clip.pixels.float().clamp(-1, 1), clip.waveform.float()
            if made_p.shape[2] != w.frame_stop - w.frame_start or made_w.shape[1] < s_hi - a0:
                raise RuntimeError(f"window {k}: the plain call made {made_p.shape[2]} frames and "
                                   f"{made_w.shape[1]} samples, the window needs {w.frame_stop - w.frame_start} "
                                   f"and {s_hi - a0}")
            out_p[start:stop, :, lo:hi] = made_p[:, :, lo - w.frame_start:hi - w.frame_start]
            out_w[start:stop, s_lo:s_hi] = made_w[:, s_lo - a0:s_hi - a0]
    return out_p, out_w, seconds


def save(results: dict, out: Path) -> None:
    """The results and their table into `out`, each file written whole (a stopped run keeps the last pair)."""
    from .._io import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / JSON_NAME, (json.dumps(results, indent=1) + "\n").encode())
    atomic_write_bytes(out / TABLE_NAME, markdown(results).encode())


def run(settings: LongClipSettings, out: Path, paired: tuple[dict, str] | None = None) -> dict:
    """Samples and scores the long and window clips of `settings`, writes `out`; `paired`: another run's results
    and folder name, to add this run's scores over its (`paired_with`)."""
    from ..diffusion.windowed import window_shapes, windowed
    from ..metrics import av_align, beat_hit_rate
    from ..models.weights import weights_checksum

    if settings.threads:
        torch.set_num_threads(settings.threads)
    log = print if settings.progress else (lambda *a, **k: None)
    folder, pipe = _pipeline(settings.model)
    cfg, hop = pipe.config, pipe.mel.hop_length
    if settings.steps is None or settings.sampler is None or settings.gamma is None:  # the model's own, recorded
        from ..diffusion.distilled import resolve

        own = resolve(cfg, settings.steps, settings.sampler, None, settings.gamma, default_steps=25,
                      default_sampler="dpmpp2m", warn=False)
        settings = replace(settings, steps=own.steps, sampler=own.sampler, gamma=own.gamma)
    if settings.refine is None:   # the model's own joint passes, recorded as resolved
        settings = replace(settings, refine=tuple(cfg.joint_refine))
    if settings.window is None:   # the model's own long-clip window, recorded as resolved
        settings = replace(settings, window=cfg.long_window_frames)
    fps, sr, n = float(cfg.fps), int(cfg.sample_rate), settings.clips
    window_seconds = cfg.frames / fps
    if settings.overlap is not None and settings.overlap >= settings.window:
        raise ValueError(f"--overlap must be less than the window's {settings.window} frames, got {settings.overlap}")
    long_real = held_out_clips(pipe, settings.seconds, n, settings.data_seed,
                               transient=settings.content == "scenes")
    win_real = held_out_clips(pipe, window_seconds, settings.window_clips or n, settings.data_seed, offset=500_000)
    video_shape, audio_shape = window_shapes(cfg, settings.window)
    layout = windowed(pipe.model, seconds=settings.seconds, overlap=settings.overlap, video_shape=video_shape,
                      audio_shape=audio_shape).layout
    v_joins, a_joins = join_positions(layout)

    def scores(pixels, waves):
        """Per clip: AV-Align and its event counts (pooled per row in the summary: `pooled_av_align`)."""
        results = [av_align(p, w, fps=fps, sample_rate=sr) for p, w in zip(pixels, waves)]
        return {"av_align": [r.score for r in results], "av_align_counts": [list(r.counts) for r in results],
                "peaks": [[round(t, 4) for t in r.video_peaks] for r in results],
                "onsets": [[round(t, 4) for t in r.audio_onsets] for r in results]}

    results: dict = {
        "settings": asdict(settings),
        "model": {"folder": str(folder), "sha256": weights_checksum(pipe.model.state_dict()),
                  "video_space": cfg.video_space, "window_frames": cfg.frames, "window_seconds": window_seconds},
        "vocoder": pipe.vocoder.method,
        "layout": {"frames": layout.frames, "audio_length": layout.audio_length, "overlap": layout.overlap,
                   "window_frames": layout.window_frames, "window_audio": layout.window_audio,
                   "windows": [[w.frame_start, w.frame_stop, w.audio_start, w.audio_stop] for w in layout.windows],
                   "video_joins": v_joins, "audio_joins": a_joins},
        "real": {
            "long": {**scores(long_real[0], long_real[1]), "events": [len(e) for e in long_real[2]],
                     "balls": long_real[4],
                     "balls_outside_windows": balls_outside_windows(long_real[5], layout),
                     "drift": window_drift(long_real[0], cfg.frames)},
            "window": {**scores(win_real[0], win_real[1]), "events": [len(e) for e in win_real[2]],
                       "balls": win_real[4]},
        },
        "tasks": {},
    }
    joined = len(layout.windows) > 1   # one window (the clip no longer than it) has no joins, so no seams
    if joined:
        results["real"]["seams"] = {
            "video": seam_scores(frame_change(long_real[0]), v_joins, AWAY_FRAMES),
            "audio": seam_scores(np.abs(np.diff(column_energy_db(long_real[1], hop), axis=1)), a_joins, AWAY_COLUMNS)}
    figure_clips: dict = {}
    for task in settings.tasks:
        entry: dict = {}
        for name, (real_p, real_w, *_), long in (("window", win_real, False), ("long", long_real, True)):
            pixels, waves, seconds, windows, peak = _generate(pipe, task, real_p, real_w, settings, long)
            rows = real_p.shape[0]
            row = {**scores(pixels, waves), "seconds_per_clip": seconds / rows, "windows": windows,
                   "peak_batch": peak}
            if task == "v2a":
                hits = [beat_hit_rate(w, r, sr, tuple(TOLERANCES.values())).hit_rates for w, r in zip(waves, real_w)]
                row |= {k: [h[t] for h in hits] for k, t in TOLERANCES.items()}
            if long:
                if task != "v2a" and joined:
                    row["seams_video"] = seam_scores(frame_change(pixels), v_joins, AWAY_FRAMES)
                if task != "v2a":
                    row["drift"] = window_drift(pixels, cfg.frames)
                if task != "a2v" and joined:
                    row["seams_audio"] = seam_scores(np.abs(np.diff(column_energy_db(waves, hop), axis=1)),
                                                     a_joins, AWAY_COLUMNS)
                if task != "v2a":
                    figure_clips[task] = (pixels[0], waves[0])
            entry[name] = row
            log(f"{task} {name}: {rows} clips, {seconds / rows:.2f} s/clip" + (f", {windows} windows" if long else ""))
        if len(layout.windows) > 1:   # the long clips' content, one window at a time, cut together
            pixels, waves, seconds = _generate_cut(pipe, task, long_real[0], long_real[1], settings, layout)
            row = {**scores(pixels, waves), "seconds_per_clip": seconds / n}
            if task == "v2a":
                hits = [beat_hit_rate(w, r, sr, tuple(TOLERANCES.values())).hit_rates
                        for w, r in zip(waves, long_real[1])]
                row |= {k: [h[t] for h in hits] for k, t in TOLERANCES.items()}
            cv, ca = cut_join_positions(layout, fps, sr, hop)
            if task != "v2a":
                row["seams_video"] = seam_scores(frame_change(pixels), cv, AWAY_FRAMES)
            if task != "a2v":
                row["seams_audio"] = seam_scores(np.abs(np.diff(column_energy_db(waves, hop), axis=1)), ca,
                                                 AWAY_COLUMNS)
            entry["cut"] = row
            log(f"{task} cut: {n} clips, {seconds / n:.2f} s/clip, {len(layout.windows)} windows one at a time")
        results["tasks"][task] = entry
    results["summary"] = summarize(results)
    if paired is not None:
        results["paired_with"] = paired_with(results, *paired)
    save(results, out)
    figure(figure_clips, layout, fps, hop, sr, out / FIGURE_NAME, results)
    return results


def peak_regions(peaks: list[list[float]], onsets: list[list[float]], layout: dict, fps: float) -> dict:
    """Where a row's video flow peaks lie and whether a sound onset matches them (within a frame, as AV-Align
    matches): per region of the window layout (`overlap`: frames two windows share; `single`: the others),
    the peaks with and without an onset, and the unmatched ones per second of that region. Denoised windows
    that disagree in an overlap are cross-faded, and Farnebäck reads a cross-fade of two drawings as motion
    (a ball fading in made a flow peak of its own in `make_clip`'s tests): such peaks have no sound."""
    windows = layout["windows"]
    shared = {f for a, b in zip(windows, windows[1:]) for f in range(b[0], a[1])}
    counts = {region: {"matched": 0, "unmatched": 0} for region in ("overlap", "single")}
    for clip_peaks, clip_onsets in zip(peaks, onsets):
        for t in clip_peaks:
            region = "overlap" if round(t * fps) in shared else "single"
            matched = any(abs(t - a) < 1.0 / fps for a in clip_onsets)
            counts[region]["matched" if matched else "unmatched"] += 1
    frames = {"overlap": len(shared), "single": layout["frames"] - len(shared)}
    for region, c in counts.items():
        seconds = frames[region] / fps * len(peaks)
        c["frames_per_clip"] = frames[region]
        c["unmatched_per_second"] = c["unmatched"] / seconds if seconds else None
    return counts


def summarize(results: dict) -> dict:
    fps = results["model"]["window_frames"] / results["model"]["window_seconds"]
    summary: dict = {"real": {
        "av_align_long": _ci(results["real"]["long"]["av_align"]),
        "av_align_window": _ci(results["real"]["window"]["av_align"]),
        "av_align_ratio": _ratio(results["real"]["long"]["av_align"], results["real"]["window"]["av_align"]),
        "drift": _ci(results["real"]["long"]["drift"]),
    }}
    if "seams" in results["real"]:
        summary["real"] |= {f"seam_z_{m}": _ci(results["real"]["seams"][m]["z"]) for m in ("video", "audio")}
        summary["real"] |= {f"seam_z_spread_{m}": _z_spread(results["real"]["seams"][m]["z"])
                            for m in ("video", "audio")}
    for task, entry in results["tasks"].items():
        long, win = entry["long"], entry["window"]
        s = {"av_align_long": _ci(long["av_align"]), "av_align_window": _ci(win["av_align"]),
             "av_align_ratio": _ratio(long["av_align"], win["av_align"]),
             "av_align_vs_real_long": _ratio(long["av_align"], results["real"]["long"]["av_align"]),
             "av_align_vs_real_window": _ratio(win["av_align"], results["real"]["window"]["av_align"]),
             "seconds_per_clip_long": long["seconds_per_clip"], "seconds_per_clip_window": win["seconds_per_clip"],
             "windows": long["windows"]}
        for k in TOLERANCES:
            if k in long:
                s[f"{k}_long"], s[f"{k}_window"] = _ci(long[k]), _ci(win[k])
                s[f"{k}_ratio"] = _ratio(long[k], win[k])
        for m in ("video", "audio"):
            if f"seams_{m}" in long:
                seams = long[f"seams_{m}"]
                s[f"seam_z_{m}"] = _ci(seams["z"])
                s[f"seam_z_spread_{m}"] = _z_spread(seams["z"])
                s[f"seam_at_joins_{m}"] = float(np.mean(seams["at_joins"]))
                s[f"seam_away_{m}"] = float(np.mean(seams["away_mean"]))
                s[f"seam_away_sd_{m}"] = float(np.mean(seams["away_sd"]))
        if "drift" in long:
            s["drift"] = _ci(long["drift"])
        if "cut" in entry:   # the same clips' content one window at a time: paired with the long clips
            cut = entry["cut"]
            s["av_align_cut"] = _ci(cut["av_align"])
            s["av_align_long_over_cut"] = _paired_ratio(long["av_align"], cut["av_align"])
            s["av_align_vs_real_cut"] = _paired_ratio(cut["av_align"], results["real"]["long"]["av_align"])
            s["av_align_vs_real_long_paired"] = _paired_ratio(long["av_align"], results["real"]["long"]["av_align"])
            s["seconds_per_clip_cut"] = cut["seconds_per_clip"]
            for m in ("video", "audio"):
                if f"seams_{m}" in cut:
                    s[f"seam_z_{m}_cut"] = _ci(cut[f"seams_{m}"]["z"])
            for k in TOLERANCES:
                if k in cut:
                    s[f"{k}_cut"] = _ci(cut[k])
        if "av_align_counts" in long:
            s |= _pooled_summary(entry, results["real"])
        if "peaks" in long:
            s["peaks_by_region"] = peak_regions(long["peaks"], long["onsets"], results["layout"], fps)
            if "cut" in entry:
                s["peaks_by_region_cut"] = peak_regions(entry["cut"]["peaks"], entry["cut"]["onsets"],
                                                        results["layout"], fps)
        summary[task] = s
    if "peaks" in results["real"]["long"]:
        real = results["real"]["long"]
        summary["real"]["peaks_by_region"] = peak_regions(real["peaks"], real["onsets"], results["layout"], fps)
    if "av_align_counts" in results["real"]["long"]:
        real = results["real"]
        summary["real"]["pooled_long"] = pooled_ci(real["long"]["av_align_counts"])
        summary["real"]["pooled_window"] = pooled_ci(real["window"]["av_align_counts"])
    return summary


def _pooled_summary(entry: dict, real: dict) -> dict:
    """Event-pooled AV-Align of a task's rows (`pooled_av_align`: every clip's onsets and peaks pooled), as
    fractions of the real clips' pooled score at the same length (resampling clips with their real clips),
    and the long clips' fraction over the window clips' (the two sets resampled independently) and over the
    cut windows' (paired: the same clips)."""
    from .pooled import pooled_of, pooled_ratio_ci
    from .stats import bootstrap_two_sets_ci

    def counts(row: dict) -> np.ndarray:
        return np.asarray(row["av_align_counts"])

    long, win = counts(entry["long"]), counts(entry["window"])
    real_long, real_win = counts(real["long"]), counts(real["window"])
    out = {"pooled_long": pooled_ci(long), "pooled_window": pooled_ci(win),
           "pooled_vs_real_long": pooled_ratio_ci(long, real_long),
           "pooled_vs_real_window": pooled_ratio_ci(win, real_win)}

    def long_over_window(i, j) -> float:
        den = pooled_of(win, real_win, j)
        return pooled_of(long, real_long, i) / den if den else math.nan

    out["pooled_long_over_window"] = bootstrap_two_sets_ci(long_over_window, len(long), len(win),
                                                           resamples=POOLED_RESAMPLES).to_dict()
    if "cut" in entry and "av_align_counts" in entry["cut"]:
        cut = counts(entry["cut"])
        out["pooled_cut"] = pooled_ci(cut)
        out["pooled_vs_real_cut"] = pooled_ratio_ci(cut, real_long)
        out["pooled_long_over_cut"] = pooled_ratio_ci(long, cut)   # paired: the same clips
    return out


# What two runs must share for their clips to be paired one by one: the same held-out clips (data seed, their
# count, length and content) and the same sampling noise (seed); the window rows also their count.
PAIRED_SETTINGS = ("clips", "seconds", "data_seed", "content", "seed")


def check_paired(mine: dict, theirs: dict, base_name: str) -> None:
    """Refuses (ValueError naming each difference) two runs' settings whose clips cannot be paired."""
    differ = [k for k in PAIRED_SETTINGS if mine.get(k) != theirs.get(k)]
    if differ:
        raise ValueError(f"--paired-with {base_name}: its clips are not this run's ("
                         + ", ".join(f"{k} {theirs.get(k)!r} against {mine.get(k)!r}" for k in differ)
                         + "); pair runs of the same --clips, --seconds, --data-seed, --content and --seed")


def paired_with(results: dict, base: dict, base_name: str) -> dict:
    """Per task of both runs, this run's event-pooled AV-Align over `base`'s, clip i of both resampled together
    (long clips, and window clips where both runs have the same number): how a model or a setting compares with
    another on the same clips, a tighter CI than either run's own. Refuses runs of different clips."""
    from .pooled import pooled_ratio_ci

    theirs = base["settings"]
    check_paired(results["settings"], theirs, base_name)
    tasks = {}
    for task, entry in results["tasks"].items():
        other = base["tasks"].get(task)
        if other is None:
            continue
        row = {}
        for kind in ("long", "window"):
            a, b = entry[kind].get("av_align_counts"), other[kind].get("av_align_counts")
            if a is not None and b is not None and len(a) == len(b):
                row[kind] = pooled_ratio_ci(np.asarray(a), np.asarray(b))
        if row:
            tasks[task] = row
    if not tasks:
        raise ValueError(f"--paired-with {base_name}: no task of this run has event-pooled counts in both runs")
    return {"folder": base_name, "model": theirs.get("model"), "window": theirs.get("window"), "tasks": tasks}


def _paired_lines(paired: dict | None) -> list[str]:
    if not paired:
        return []
    lines = ["", f"Against `{paired['folder']}` (model {paired['model']}, {paired['window']}-frame windows), paired "
                 "over the same clips and noise: this run's event-pooled AV-Align over its (mean [95 % CI]).", "",
             "| task | long clips, this / that | window clips, this / that |", "|---|---|---|"]
    for task, row in paired["tasks"].items():
        lines.append(f"| {task} | {_cell(row.get('long'), '.2f')} | {_cell(row.get('window'), '.2f')} |")
    return lines


def _outside_words(real_long: dict) -> str:
    """The sentence on window-ball pairs whose hit lies outside the window (absent from results made before it)."""
    o = real_long.get("balls_outside_windows")
    if not o or not o["pairs"]:
        return ""
    return (f" Of the {o['pairs']} window-ball pairs of the real long clips (a ball in view in a window), "
            f"{o['hit_outside']} ({o['share']:.0%}) have the ball's hit outside that window: the window must show "
            "a ball whose sound it does not get (a training clip has none).")


def _content_words(settings: dict) -> str:
    """The long clips' content, in the settings line (results from before --content had persistent balls)."""
    if settings.get("content", "persistent") == "persistent":
        return "long clips with every ball in view from the first frame to the last"
    return "long clips in scenes (a ball in view only between the flashes around its hit)"


def _per_second(region: dict) -> str:
    """A region's unmatched peaks per second ('—' where the layout has no such frames: one window, no overlap)."""
    rate = region["unmatched_per_second"]
    return "—" if rate is None else f"{rate:.2f}"


def _cell(ci: dict | None, fmt: str = ".3f") -> str:
    if ci is None:
        return "—"
    return f"{ci['mean']:{fmt}} [{ci['low']:{fmt}}, {ci['high']:{fmt}}]"


def _pair(summary: dict, first: str, second: str) -> str:
    """Two of a row's CIs as one cell, 'first / second'."""
    return f"{_cell(summary.get(first), '.2f')} / {_cell(summary.get(second), '.2f')}"


def _z_cell(summary: dict, modality: str) -> str:
    """Seam z: mean [CI]; median, share of clips over 2 (results before the spread was kept: the mean alone)."""
    cell = _cell(summary[f"seam_z_{modality}"], ".2f")
    spread = summary.get(f"seam_z_spread_{modality}")
    return cell if spread is None else f"{cell}; {spread['median']:.2f}, {spread['over_2']:.0%} > 2"


def markdown(results: dict) -> str:
    st, sm = results["settings"], results["summary"]
    lay = results["layout"]
    window_frames = lay.get("window_frames", results["model"]["window_frames"])   # results before --window: the model's
    window_seconds = window_frames * results["model"]["window_seconds"] / results["model"]["window_frames"]
    lines = [
        f"# Long clips: {st['seconds']:g} s from a {results['model']['window_seconds']:g}-s model",
        "",
        f"Model `{st['model']}` ({results['model']['sha256'][:12]}), {st['sampler']} {st['steps']} steps"
        f"{'' if st.get('gamma') in (None, 1, 1.0) else ' at timestep adjustment γ = ' + format(st['gamma'], 'g')}, "
        f"{st['clips']} held-out clips per row"
        f"{'' if st.get('window_clips') in (None, st['clips']) else ' (window rows ' + str(st['window_clips']) + ')'}"
        f" (data seed {st['data_seed']}), {len(lay['windows'])} window{'' if len(lay['windows']) == 1 else 's'} of "
        f"{window_frames} frames, overlap {lay['overlap']} frames, "
        f"{st.get('window_noise', 'independent')} window noise, {_content_words(st)}"
        f"{'; joint in passes: joint, then ' + ', then '.join(st['refine']) if st.get('refine') else ''}; sound: "
        f"{results['vocoder']}. 95 % bootstrap CIs over clips; ratios resample the two sets independently.",
        "",
        "| task | AV-Align long | AV-Align window | long / window | vs real: long / window | "
        "hit ±100 ms long / window | hit ±500 ms long / window | s/clip long / window |",
        "|---|---|---|---|---|---|---|---|",
    ]
    r = sm["real"]
    lines.append(f"| real clips | {_cell(r['av_align_long'])} | {_cell(r['av_align_window'])} | "
                 f"{_cell(r['av_align_ratio'], '.2f')} | | | | |")
    for task in results["tasks"]:
        s = sm[task]
        hits = [_pair(s, f"{k}_long", f"{k}_window") if f"{k}_long" in s else "—" for k in TOLERANCES]
        lines.append(f"| {task} | {_cell(s['av_align_long'])} | {_cell(s['av_align_window'])} | "
                     f"{_cell(s['av_align_ratio'], '.2f')} | {_cell(s.get('av_align_vs_real_long'), '.2f')} / "
                     f"{_cell(s.get('av_align_vs_real_window'), '.2f')} | {hits[0]} | {hits[1]} | "
                     f"{s['seconds_per_clip_long']:.2f} / {s['seconds_per_clip_window']:.2f} |")
    pooled_tasks = [t for t in results["tasks"] if "pooled_long" in sm[t]]
    if pooled_tasks:
        lines += [
            "",
            "Event-pooled AV-Align: each row's onsets and peaks pooled over its clips (precision and recall over "
            "all of their events, `avfast.metrics.pooled_av_align`), so a clip weighs by its events and clips of "
            "any length measure the same thing; the mean of per-clip scores above moves with length (a 1.8-s "
            "clip with one event scores 0 or 1). Vs real: over the real clips' pooled score at that length, "
            "clips resampled with their real clips; long / window, vs real: the two sets resampled "
            "independently (the issue's bar: >= 0.9); long / cut: paired over the same clips.",
            "",
            "| task | pooled long | pooled window | pooled cut windows | vs real: long / window / cut | "
            "long / window, vs real | long / cut |",
            "|---|---|---|---|---|---|---|",
            f"| real clips | {_cell(r.get('pooled_long'))} | {_cell(r.get('pooled_window'))} | | | | |",
        ]
        for task in pooled_tasks:
            s = sm[task]
            lines.append(f"| {task} | {_cell(s['pooled_long'])} | {_cell(s['pooled_window'])} | "
                         f"{_cell(s.get('pooled_cut'))} | {_cell(s['pooled_vs_real_long'], '.2f')} / "
                         f"{_cell(s['pooled_vs_real_window'], '.2f')} / {_cell(s.get('pooled_vs_real_cut'), '.2f')} | "
                         f"{_cell(s['pooled_long_over_window'], '.2f')} | {_cell(s.get('pooled_long_over_cut'), '.2f')} |")
    region_rows = [("real clips", r.get("peaks_by_region"))] + [
        (f"{task} {kind}", sm[task].get(key)) for task in results["tasks"]
        for kind, key in (("long", "peaks_by_region"), ("cut windows", "peaks_by_region_cut"))]
    region_rows = [(name, c) for name, c in region_rows if c]
    if region_rows:
        lines += [
            "",
            "Where the flow peaks lie (`peak_regions`): video peaks with and without a sound onset within a frame, in "
            "the frames two windows share (overlaps) and in the others, and the unmatched ones per second of each; "
            "cut windows change window at the middle of each overlap.",
            "",
            "| clips | overlaps: peaks matched / unmatched | elsewhere: matched / unmatched | unmatched per second: "
            "overlaps / elsewhere |",
            "|---|---|---|---|",
        ]
        for name, c in region_rows:
            o, e = c["overlap"], c["single"]
            lines.append(f"| {name} | {o['matched']} / {o['unmatched']} | {e['matched']} / {e['unmatched']} | "
                         f"{_per_second(o)} / {_per_second(e)} |")
    cut_tasks = [t for t in results["tasks"] if "av_align_cut" in sm[t]]
    if cut_tasks:
        balls_long = np.mean(results["real"]["long"]["balls"])
        balls_window = np.mean(results["real"]["window"]["balls"])
        lines += [
            "",
            "Against windows of the same content: the long clips' own windows sampled one at a time (the plain "
            "call on each window's seconds of the real input; joint from noise) and cut together at the middle "
            "of their overlaps. " + (
                "A long held-out clip shows all of its balls in every frame (each hangs until "
                f"its event, then rests): {balls_long:.1f} in view on average, against {balls_window:.1f} in a "
                "window clip (the training kind), so its windows are not the training kind."
                if st.get("content", "persistent") == "persistent" else
                "A long held-out clip shows a ball only between the flashes around its hit: "
                f"{balls_long:.1f} in view on average, against {balls_window:.1f} in a window clip (the "
                "training kind).") + _outside_words(results["real"]["long"]) + " Long / cut windows is "
            "paired over the same clips. Seams as z (below) at the window joins (long) and at the cuts (cut).",
            "",
            "| task | AV-Align long | AV-Align cut windows | long / cut windows | vs real: long / cut windows | "
            "hit ±100 ms long / cut | hit ±500 ms long / cut | video z long / cut | audio z long / cut | s/clip cut |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for task in cut_tasks:
            s = sm[task]
            hits = [_pair(s, f"{k}_long", f"{k}_cut") if f"{k}_cut" in s else "—" for k in TOLERANCES]
            lines.append(f"| {task} | {_cell(s['av_align_long'])} | {_cell(s['av_align_cut'])} | "
                         f"{_cell(s['av_align_long_over_cut'], '.2f')} | "
                         f"{_cell(s['av_align_vs_real_long_paired'], '.2f')} / {_cell(s['av_align_vs_real_cut'], '.2f')} | "
                         f"{hits[0]} | {hits[1]} | " + " | ".join(
                             _pair(s, f"seam_z_{m}", f"seam_z_{m}_cut") if f"seam_z_{m}_cut" in s else "—"
                             for m in ("video", "audio")) +
                         f" | {s['seconds_per_clip_cut']:.2f} |")
    lines += [
        "",
        "Seams: the measure at window joins against the spread away from them, z = (mean at joins - mean "
        "away) / sd away, per clip (mean [95 % CI]); the real clips' z at the same positions is what content "
        "alone gives; after it, the median z and the share of clips with z > 2 (a near-static clip's tiny sd away "
        "can move the mean by a unit on its own). Video: frame-to-frame change mean |x_f - x_f-1|; audio: |Δ dB| of "
        "the per-column energy.",
        "",
        "| clips | video at joins | video away (sd) | video z | audio at joins | audio away (sd) | audio z | "
        "first-vs-last window colour drift |",
        "|---|---|---|---|---|---|---|---|",
    ]
    real = results["real"].get("seams")
    lines.append((f"| real | {np.mean(real['video']['at_joins']):.4f} | {np.mean(real['video']['away_mean']):.4f} "
                   f"({np.mean(real['video']['away_sd']):.4f}) | {_z_cell(r, 'video')} | "
                   f"{np.mean(real['audio']['at_joins']):.2f} | {np.mean(real['audio']['away_mean']):.2f} "
                   f"({np.mean(real['audio']['away_sd']):.2f}) | {_z_cell(r, 'audio')} | "
                   if real else "| real | — | — | — | — | — | — | ") + f"{_cell(r['drift'], '.4f')} |")
    for task in results["tasks"]:
        s = sm[task]
        v = (f"{s['seam_at_joins_video']:.4f} | {s['seam_away_video']:.4f} ({s['seam_away_sd_video']:.4f}) | "
             f"{_z_cell(s, 'video')}") if "seam_z_video" in s else "— | — | —"
        a = (f"{s['seam_at_joins_audio']:.2f} | {s['seam_away_audio']:.2f} ({s['seam_away_sd_audio']:.2f}) | "
             f"{_z_cell(s, 'audio')}") if "seam_z_audio" in s else "— | — | —"
        lines.append(f"| {task} | {v} | {a} | {_cell(s.get('drift'), '.4f')} |")
    lines += _paired_lines(results.get("paired_with"))
    lines += [
        "",
        CANNOT_DO_OPENING + " each window sees only its own "
        f"{window_seconds:g} s (and, through the overlaps, its neighbours' predictions), so "
        "nothing carries the scene from the first window to the last. Timing and local continuity hold across "
        "joins; identity does not: a ball's colour, the background hue or the number of objects can change from "
        "window to window (the drift column; the real clips' drift comes from their events alone, their "
        "background never changes). AV-Align depends on the clip's events (a one-window clip with one event "
        "scores 0 or 1), so compare each length with the real clips of that length (vs real). Nothing is "
        "conditioned on "
        "what came before (no memory, no reference frame), and an event spanning two windows is generated by "
        "their cross-fade.",
        "",
    ]
    return "\n".join(lines)


def figure(clips: dict, layout, fps: float, hop: int, sr: int, path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._figures import save_figure
    from ..metrics.av_align import optical_flow_magnitude
    from ..metrics.frame_quality import frame_residuals

    tasks = [t for t in ("a2v", "joint") if t in clips]
    rows = 2 * len(tasks) + (1 if "joint" in clips else 0)
    if rows == 0:
        return
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.9 * rows + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    edges = sorted({w.frame_start / fps for w in layout.windows[1:]} | {w.frame_stop / fps for w in layout.windows[:-1]})
    overlaps = [(b.frame_start / fps, a.frame_stop / fps) for a, b in zip(layout.windows, layout.windows[1:])]
    t_frames = np.arange(layout.frames) / fps
    i = 0
    for task in tasks:
        pixels, _ = clips[task]
        series = [("residual", frame_residuals(pixels).mean(dim=1).numpy(), "mean |x - median3x3(x)|"),
                  ("flow", optical_flow_magnitude(pixels), "flow magnitude (px)")]
        for name, values, label in series:
            ax = axes[i]
            ax.plot(t_frames, values, lw=1.2, color="tab:blue" if name == "residual" else "tab:orange")
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{task}: {name} per frame", fontsize=9, loc="left")
            i += 1
    if "joint" in clips:
        _, wave = clips["joint"]
        energy = column_energy_db(wave[None], hop)[0]
        ax = axes[i]
        ax.plot(np.arange(energy.size) * hop / sr, energy, lw=0.8, color="tab:green")
        ax.set_ylabel("energy (dB)", fontsize=8)
        ax.set_title("joint: audio energy per mel column", fontsize=9, loc="left")
    for ax in axes:
        for lo, hi in overlaps:
            ax.axvspan(lo, hi, color="0.85", zorder=0)
        for e in edges:
            ax.axvline(e, color="tab:red", lw=0.7, ls="--")
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("seconds (grey: window overlaps, red dashes: window edges)", fontsize=8)
    st = results["settings"]
    fig.suptitle(f"{st['model']}: one long held-out clip, {st['seconds']:g} s in {len(layout.windows)} windows; "
                 f"{st['sampler']} {st['steps']} steps", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --- the command ------------------------------------------------------------------------------------

class _ArgumentError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error of this command
        raise _ArgumentError(message)


def build_parser() -> argparse.ArgumentParser:
    s = LongClipSettings()
    ap = _Parser(prog="python -m avfast.experiments.long_clips", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=s.model, help="'default' or a model folder (default: %(default)s)")
    ap.add_argument("--clips", type=int, default=s.clips, help="held-out clips per row (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=s.seconds, help="long clips' duration (default: %(default)s)")
    ap.add_argument("--overlap", type=int, default=None, help="frames between windows (default: a third of one)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=s.steps)
    ap.add_argument("--sampler", default=s.sampler, choices=("ddim", "dpmpp2m"))
    ap.add_argument("--seed", type=int, default=s.seed, help="sampling noise of clip i: seed + i")
    ap.add_argument("--data-seed", type=int, default=s.data_seed, help="held-out clips' seed (not 0)")
    ap.add_argument("--batch", type=int, default=s.batch, help="clips per pipeline call (default: %(default)s)")
    ap.add_argument("--condition-mode", default=s.condition_mode, choices=("clean", "replace"))
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of v2a,a2v,joint")
    ap.add_argument("--threads", type=int, default=s.threads, help="torch threads (0: torch's default)")
    ap.add_argument("--window", type=int, default=None, help="video frames per window of the long clips (default: "
                    "the model's config long_window, else its frames; Pipeline's window=)")
    ap.add_argument("--window-clips", type=int, default=None, help="clips of the window rows (default: --clips); "
                    "they are cheap, and their CI is the bar's denominator")
    ap.add_argument("--window-noise", default=s.window_noise, choices=WINDOW_NOISES,
                    help="the long clips' starting noise: independent (drawn for the whole clip) or shared (every "
                         "window from a permutation of the first window's noise, FreeNoise-style; default: "
                         "%(default)s)")
    ap.add_argument("--content", default=s.content, choices=CONTENTS,
                    help="the long clips' balls: scenes (each in view only between the flashes around its hit, "
                         "about as many at a time as a training clip) or persistent (every ball in every frame); "
                         "default: %(default)s")
    ap.add_argument("--gamma", type=float, default=None, help="timestep adjustment γ of every task (default: the "
                    "model's own, config sampling_gamma; 1 = none)")
    ap.add_argument("--refine", nargs="+", default=None, choices=REFINE_WORDS, metavar="TASK",
                    help="joint's passes after the joint one, each v2a or a2v, or none, for the long and the "
                         "window clips (avfast.Pipeline's refine=; default: the model's own, config joint_refine)")
    ap.add_argument("--docs", action="store_true", help="also put the tables into every file of README.md and "
                    f"docs/*.md (under the current folder) that holds the {DOC_MARKERS} markers")
    ap.add_argument("--paired-with", metavar="FOLDER", default=None,
                    help="another run's folder of the same clips and seeds (its long_clips.json): add this run's "
                         "event-pooled AV-Align over its, per task, paired clip by clip (with --report-only too)")
    ap.add_argument("--report-only", action="store_true",
                    help="no generation: the table (and --docs) again from <out>/long_clips.json")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def doc_block(results: dict) -> str:
    """What docs/long-clips.md shows between its long_clips markers: the results' settings line and tables, without
    the title and the closing paragraph on what windows cannot do (the page says that at length)."""
    lines = markdown(results).split("\n")
    lines = lines[2:] if lines[0].startswith("# ") else lines
    end = next((i for i, line in enumerate(lines) if line.startswith(CANNOT_DO_OPENING)), len(lines))
    return "\n".join(lines[:end]).rstrip("\n") + "\n"


def update_doc(text: str, block: str) -> str:
    if not DOC_BLOCK.search(text):
        raise ValueError(f"--docs: the file has no {DOC_MARKERS} block")
    return DOC_BLOCK.sub(lambda m: m.group(1) + block + m.group(3), text)


def main(argv=None) -> int:
    from .._io import block_targets

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        out = Path(args.out)
        targets = block_targets(DOC_BLOCK, DOC_MARKERS, None, args.docs)  # fail before the run, not after it
        base = None
        if args.paired_with is not None:   # read before the run, so a wrong folder fails in a second
            if not (Path(args.paired_with) / JSON_NAME).is_file():
                raise FileNotFoundError(f"--paired-with: no results at {Path(args.paired_with) / JSON_NAME}")
            base = json.loads((Path(args.paired_with) / JSON_NAME).read_text())
        if args.report_only:
            if not (out / JSON_NAME).is_file():
                raise FileNotFoundError(f"--report-only: no results at {out / JSON_NAME}; run without it first")
            results = json.loads((out / JSON_NAME).read_text())
            results["summary"] = summarize(results)  # the measures as this version computes them
            if base is not None:
                results["paired_with"] = paired_with(results, base, args.paired_with)
            save(results, out)
            print(markdown(results), end="")
            for path in targets:
                path.write_text(update_doc(path.read_text(), doc_block(results)))
                print(f"{path}: long-clip tables regenerated")
            return 0
        settings = LongClipSettings(args.model, args.clips, args.seconds, args.overlap, args.steps, args.sampler,
                                    args.seed, args.data_seed, args.batch, args.condition_mode,
                                    tuple(t for t in args.tasks.split(",") if t), args.threads, not args.no_progress,
                                    args.window_noise, parse_refine(args.refine), args.gamma, args.content,
                                    args.window, args.window_clips)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out: {args.out!r} is a file; give a folder")
        if base is not None:   # the settings it will be paired on, checked before minutes of sampling
            check_paired(asdict(settings), base["settings"], args.paired_with)
        results = run(settings, out, None if base is None else (base, args.paired_with))
        print(markdown(results), end="")
        for path in targets:
            path.write_text(update_doc(path.read_text(), doc_block(results)))
            print(f"{path}: long-clip tables regenerated")
        print(f"results: {out / JSON_NAME}; table: {out / TABLE_NAME}; figure: {out / FIGURE_NAME}")
        return 0
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
