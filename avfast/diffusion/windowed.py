"""Clips of any length from a fixed-window model: overlapping windows denoised together at every step.

MultiDiffusion-style (Bar-Tal et al. 2023): the long clip is one sampler state. At every sampler step
the denoiser runs on each window of the state (the windows batched into few calls), the windows'
predictions are fused into one full-length prediction (a weighted average over the overlaps), and
the sampler's ordinary update then runs on the full-length tensors. So every sampler and option of
`avfast.diffusion.sample` works unchanged: DDIM (η ≥ 0), DPM-Solver++(2M), every spacing, γ
timestep adjustment, classifier-free guidance, v2a / a2v with a long condition (replacement,
reconstruction guidance — autograd runs through the fusion — or a clean condition), fixed noise,
batches, half precision.

    from avfast.diffusion.windowed import windowed, sample_windowed, frames_for_seconds

    video, audio = sample_windowed(model, seconds=10.0, steps=50, sampler="dpmpp2m", seed=0)   # joint
    video, audio = sample_windowed(model, task="v2a", condition=long_video, steps=50)          # length from
    video, audio = sample_windowed(model, task="a2v", condition=long_mel, guidance=1.0)         # the condition
    den = windowed(model, seconds=10.0, overlap=6, max_batch=4)   # the same as a Denoiser:
    video, audio = avfast.diffusion.sample(den, steps=50)        # shapes come from den.config

API
  frames_for_seconds(config, seconds) -> int        round(seconds · fps)              (10 s -> 100)
  audio_columns_for_seconds(config, seconds) -> int round(seconds · sr) // hop       (10 s -> 625)
      (what `make_clip(duration=seconds)` and the mel front end give: 1.8 s -> 18 frames, 112 columns)
  mel_rate(config) -> float                         mel columns per second, sample_rate / 256 (62.5)
      `config` is a ModelConfig, or a model with `.config`; it needs `.fps` and `.sample_rate`.
  window_shapes(config, window_frames=None) -> (video_shape, audio_shape)
      one window's shapes for windows of `window_frames` frames (None: the model's own) and the mel
      columns of their seconds (72 frames -> 450 columns); give them to `windowed` as video_shape /
      audio_shape for windows longer than the model's.
  window_layout(frames, audio_length, window_frames, window_audio, overlap, fps, mel_rate) -> WindowLayout
      the windows (frame_start/stop, audio_start/stop each), their fusion weights and coverage counts.
  windowed(model, frames=None, *, seconds=None, audio_length=None, overlap=None, max_batch=8,
           video_shape=None, audio_shape=None, fps=None, mel_rate=None, callback=None) -> WindowedDenoiser
      a Denoiser over the long tensors; `.config` is the model's config with frames / audio_length of
      the long clip (`sample` reads shapes from it), `.layout` the WindowLayout, `.calls` the number
      of model calls so far, `.evaluations` its own evaluations (one per sampler step),
      `.peak_windows` / `.peak_batch` the most windows / the largest batch that went through the
      model in one call (≤ max_batch / max_batch × the sampler's batch, whatever the duration).
      `callback(evaluation, windows_done, windows)` runs after each model call (progress bars). Give `frames` or `seconds`; audio_length defaults to the columns of
      frames / fps seconds. video_shape / audio_shape (one window, no batch) and fps / mel_rate
      default to the model's config (needed only for a bare callable without one).
  sample_windowed(model, seconds=None, frames=None, overlap=None, max_batch=8, task="joint",
                  condition=None, audio_length=None, **sample_kwargs) -> (video, audio)
      `windowed` + `sample`. For v2a / a2v the clip's length comes from the condition's last frame /
      column axis unless given. window_noise="shared" starts every window from the first window's noise
      (below); "independent" (the default) draws the whole clip's noise as `sample` does.
  shared_window_noise(layout, video_shape, audio_shape, seeds=0, generator=None, shuffle=True) -> (v_T, a_T)
      starting noise for windows that share it (FreeNoise-style rescheduling, Qiu et al. 2023): clip i
      draws the first window's noise from seed seeds[i], every later frame / column copies one of it
      (`shared_noise_sources(layout, generator, shuffle)`: the indices), so each window's noise frames
      and columns are a permutation of the first window's; audio follows the video's seconds.

Layout (all in seconds: video is 10 fps, one mel column is 16 ms, so 112 / 18 columns per frame is
not an integer). `overlap` is in video frames, 0 ≤ overlap < window frames; default a third of the
window (6 of 18 frames = 0.6 s, so time ≈ 1.5× a window's cost per window-length of clip). The n
video windows are the fewest whose starts, spread evenly from frame 0 to F - window (the first at
the start, the last aligned to the end), overlap by ≥ `overlap` frames. Window k's audio starts at
the mel column nearest to its video start time (so both modalities of a window cover the same
seconds, to within half a column, 8 ms), clamped so that the first audio window starts at column 0
and the last ends at the last column; if that leaves an audio gap (possible with overlap = 0:
18 frames are 112.5 columns, a window has 112) a window is added. Every frame and column is
covered by at least one window.

Fusion: a weighted average of the windows' v-predictions. Every window sees the same x_t where it
overlaps another and, per modality, the same timestep, so x0̂ = α x_t − σ v̂ and ε̂ = σ x_t + α v̂
are the same affine map of v̂ in every window: averaging v, x0 or ε gives the same result (the
standard MultiDiffusion average of x0 / ε predictions), and averaging v needs no conversion. CFG's
lerp is linear too, so it commutes with the fusion. The weights cross-fade each pair of
neighbours over exactly the region they share, w = sin²(π/2 · u) with u running 0 → 1 across the
overlap (pairs of weights sum to 1), measured at each frame's / column's centre in seconds, so video
and audio fade at the same times; a frame or column covered by one window only has weight 1 (its
value is that window's prediction, unchanged). A window edge, where the model sees least context,
thus counts least. With overlap = 0 the windows abut (a hard cut, for comparison).

Clip shorter than a window (in either modality): the whole clip is one window at its own length —
the U-Net takes any frame count and mel length — rather than padding (padding needs content for the
pad region in every task; a v2a condition has none). Exported runtimes with a fixed input shape
cannot do this; generate a full window and crop instead. A clip of exactly one window is the plain
model: the result equals `sample(model, ...)` bit for bit.

Memory: `max_batch` windows (× the sampler's batch, × 2 with CFG) go through the model per call, so
peak memory is independent of the clip's duration; `max_batch=None` runs all windows in one call.
Time is linear in duration: n windows of model work per step (n ≈ (F - overlap) / (window - overlap)).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from .protocol import Denoiser, supports_grad

# avfast.data.mel.HOP_LENGTH (16 ms at 16 kHz); not imported, to keep avfast.data (PyAV, ...) out of the
# sampler's imports. tests/test_windowed.py checks that they agree.
HOP_LENGTH = 256
DEFAULT_FPS = 10.0
DEFAULT_MAX_BATCH = 8


# --------------------------------------------------------------------------------- checks
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive_int(name: str, value: Any, what: str = "an int >= 1") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be {what}, got {value!r}")
    return value


def _positive_seconds(name: str, value: Any) -> float:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number of seconds > 0 (the clip's duration), got {value!r}")
    return float(value)


def _config_of(config_or_model: Any) -> Any:
    return getattr(config_or_model, "config", config_or_model)


def _rate(config: Any, attr: str, name: str) -> float:
    value = getattr(_config_of(config), attr, None)
    if not _is_number(value) or value <= 0:
        raise ValueError(f"`config` needs a number `{attr}` > 0 for {name}, got {value!r} "
                         f"(pass a ModelConfig or a model with `.config`)")
    return float(value)


# --------------------------------------------------------------------------------- seconds <-> sizes
def mel_rate(config: Any) -> float:
    """Mel columns per second: sample_rate / hop (62.5 at 16 kHz with the 16 ms hop)."""
    return _rate(config, "sample_rate", "the mel rate") / HOP_LENGTH


def frames_for_seconds(config: Any, seconds: float) -> int:
    """Video frames of a clip of `seconds`: round(seconds · fps), as `make_clip(duration=seconds)`."""
    seconds = _positive_seconds("seconds", seconds)
    fps = _rate(config, "fps", "frames_for_seconds")
    frames = math.floor(seconds * fps + 0.5)
    if frames < 1:
        raise ValueError(f"`seconds` must be at least half a video frame ({0.5 / fps:g} s at {fps:g} fps), "
                         f"got {seconds!r}")
    return frames


def audio_columns_for_seconds(config: Any, seconds: float) -> int:
    """Mel columns of a clip of `seconds`: round(seconds · sample_rate) // hop (MelGAN framing, as the
    mel front end frames `make_clip(duration=seconds)`'s audio)."""
    seconds = _positive_seconds("seconds", seconds)
    sr = _rate(config, "sample_rate", "audio_columns_for_seconds")
    columns = math.floor(seconds * sr + 0.5) // HOP_LENGTH
    if columns < 1:
        raise ValueError(f"`seconds` must be at least one mel column ({HOP_LENGTH / sr:g} s), got {seconds!r}")
    return columns


def window_shapes(config: Any, window_frames: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One window's video_shape (C, F, H, W) and audio_shape (mel, T) for windows of `window_frames` video
    frames (None: the model's own, `config.video_shape` / `config.audio_shape`). A window longer (or shorter)
    than the model's is the same U-Net on more (fewer) frames and the mel columns of those seconds
    (`audio_columns_for_seconds`): the model has no positional encoding along time, so it runs at any length;
    how well it draws there is measured in docs/long-clips.md ("Longer windows")."""
    config = _config_of(config)
    video_shape, audio_shape = tuple(config.video_shape), tuple(config.audio_shape)
    if window_frames is None:
        return video_shape, audio_shape
    window_frames = _positive_int("window", window_frames,
                                  f"an int number of video frames >= 1 (the model's own is {video_shape[1]})")
    if window_frames == video_shape[1]:
        return video_shape, audio_shape
    columns = audio_columns_for_seconds(config, window_frames / _rate(config, "fps", "window_shapes"))
    return (video_shape[0], window_frames, *video_shape[2:]), (audio_shape[0], columns)


# --------------------------------------------------------------------------------- the layout
@dataclass(frozen=True)
class Window:
    """One window: video frames [frame_start, frame_stop), mel columns [audio_start, audio_stop)."""

    index: int
    frame_start: int
    frame_stop: int
    audio_start: int
    audio_stop: int


def _ramp(n: int, left: int, right: int) -> torch.Tensor:
    """Weights of n positions: sin² cross-fades over the first `left` and last `right` positions,
    evaluated at position centres (u = (i + 0.5) / left), 1 elsewhere. float64."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    u = torch.ones(n, dtype=torch.float64)
    if left > 0:
        u = torch.minimum(u, i / left)
    if right > 0:
        u = torch.minimum(u, (n - i) / right)
    return torch.sin(0.5 * math.pi * u.clamp(0, 1)) ** 2


@dataclass(frozen=True)
class WindowLayout:
    """Where the windows lie in a clip of `frames` video frames and `audio_length` mel columns."""

    frames: int
    audio_length: int
    window_frames: int
    window_audio: int
    overlap: int
    fps: float
    mel_rate: float
    windows: tuple[Window, ...]

    @property
    def short(self) -> bool:
        """True when the clip is shorter than a window (in either modality): one window at the clip's length."""
        return self.frames < self.window_frames or self.audio_length < self.window_audio

    @property
    def single(self) -> bool:
        """One window covering the whole clip: the wrapped model is called unchanged."""
        return len(self.windows) == 1

    def seconds(self, window: Window) -> tuple[tuple[float, float], tuple[float, float]]:
        """((video start, stop), (audio start, stop)) of a window in seconds."""
        return ((window.frame_start / self.fps, window.frame_stop / self.fps),
                (window.audio_start / self.mel_rate, window.audio_stop / self.mel_rate))

    def weights(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each window's fusion weights (video [window frames], audio [window columns]), float64."""
        ws = self.windows
        wv, wa = [], []
        for k, w in enumerate(ws):
            lv = ws[k - 1].frame_stop - w.frame_start if k > 0 else 0
            rv = w.frame_stop - ws[k + 1].frame_start if k + 1 < len(ws) else 0
            la = ws[k - 1].audio_stop - w.audio_start if k > 0 else 0
            ra = w.audio_stop - ws[k + 1].audio_start if k + 1 < len(ws) else 0
            wv.append(_ramp(w.frame_stop - w.frame_start, lv, rv))
            wa.append(_ramp(w.audio_stop - w.audio_start, la, ra))
        return wv, wa

    def coverage(self) -> tuple[torch.Tensor, torch.Tensor]:
        """How many windows cover each frame [frames] and each mel column [audio_length] (int64)."""
        cv = torch.zeros(self.frames, dtype=torch.long)
        ca = torch.zeros(self.audio_length, dtype=torch.long)
        for w in self.windows:
            cv[w.frame_start:w.frame_stop] += 1
            ca[w.audio_start:w.audio_stop] += 1
        return cv, ca

    def weight_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ of the windows' weights at each frame and column (float64; > 0 everywhere)."""
        sv = torch.zeros(self.frames, dtype=torch.float64)
        sa = torch.zeros(self.audio_length, dtype=torch.float64)
        for w, wv, wa in zip(self.windows, *self.weights()):
            sv[w.frame_start:w.frame_stop] += wv
            sa[w.audio_start:w.audio_stop] += wa
        return sv, sa


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def window_layout(frames: int, audio_length: int, window_frames: int, window_audio: int, overlap: int | None = None,
                  fps: float = DEFAULT_FPS, mel_rate: float = 16_000 / HOP_LENGTH) -> WindowLayout:
    """The windows covering a clip of `frames` frames and `audio_length` mel columns (see the module
    docstring): starts spread evenly, the last aligned to the end, ≥ `overlap` frames between
    neighbours (default window_frames // 3), audio windows at the seconds of their video windows."""
    frames = _positive_int("frames", frames, "the clip's video frames, an int >= 1")
    audio_length = _positive_int("audio_length", audio_length, "the clip's mel columns, an int >= 1")
    window_frames = _positive_int("window_frames", window_frames)
    window_audio = _positive_int("window_audio", window_audio)
    if not _is_number(fps) or fps <= 0:
        raise ValueError(f"`fps` must be a finite number > 0, got {fps!r}")
    if not _is_number(mel_rate) or mel_rate <= 0:
        raise ValueError(f"`mel_rate` (mel columns per second) must be a finite number > 0, got {mel_rate!r}")
    if overlap is None:
        overlap = window_frames // 3
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < window_frames:
        raise ValueError(f"`overlap` must be an int number of video frames in [0, {window_frames - 1}] (less than "
                         f"the window's {window_frames} frames), got {overlap!r}")
    # A window's video and audio must span the same time, and so must the clip's, or the windows' audio would
    # drift from their video. Tolerance: one video frame.
    tol = 1.0 / fps
    if abs(window_audio / mel_rate - window_frames / fps) > tol:
        raise ValueError(f"`window_audio` ({window_audio} columns = {window_audio / mel_rate:.3f} s at {mel_rate:g} "
                         f"columns/s) must span the window's {window_frames} frames ({window_frames / fps:.3f} s at "
                         f"{fps:g} fps) to within one frame; pass the model's mel_rate / fps")
    if abs(audio_length / mel_rate - frames / fps) > tol:
        expected = _round_half_up(frames / fps * mel_rate)
        raise ValueError(f"`audio_length` must span the clip's {frames} frames ({frames / fps:.3f} s), about "
                         f"{expected} mel columns at {mel_rate:g} columns/s; got {audio_length} "
                         f"({audio_length / mel_rate:.3f} s)")
    args = (frames, audio_length, window_frames, window_audio, overlap, float(fps), float(mel_rate))

    if frames < window_frames or audio_length < window_audio or (frames, audio_length) == (window_frames,
                                                                                             window_audio):
        return WindowLayout(*args, windows=(Window(0, 0, frames, 0, audio_length),))

    span_v, span_a = frames - window_frames, audio_length - window_audio
    stride = window_frames - overlap
    n = 1 + -(-span_v // stride)
    limit = n + span_v + span_a + 1
    while n <= limit:
        if n == 1:
            f_starts = [0]
        else:   # k·span/(n-1) rounded half up, in integers: neighbours differ by ≤ ceil(span/(n-1)) ≤ stride
            f_starts = [(2 * k * span_v + (n - 1)) // (2 * (n - 1)) for k in range(n)]
        a_starts = [min(max(_round_half_up(f / fps * mel_rate), 0), span_a) for f in f_starts]
        a_starts[0], a_starts[-1] = 0, span_a
        gaps = any(a_starts[k + 1] - a_starts[k] > window_audio for k in range(n - 1))
        if not gaps and f_starts[-1] == span_v:
            windows = tuple(Window(k, f, f + window_frames, a, a + window_audio)
                            for k, (f, a) in enumerate(zip(f_starts, a_starts)))
            return WindowLayout(*args, windows=windows)
        n += 1
    raise ValueError(f"no window layout covers {audio_length} mel columns with {window_audio}-column windows at "
                     f"{mel_rate:g} columns/s and {fps:g} fps; check `mel_rate` and `fps`")


# --------------------------------------------------------------------------------- starting noise
WINDOW_NOISES = ("independent", "shared")


def check_window_noise(value: Any) -> str:
    """`window_noise` must be one of WINDOW_NOISES; returns it."""
    if not isinstance(value, str) or value not in WINDOW_NOISES:
        raise ValueError(f"`window_noise` must be one of {', '.join(repr(v) for v in WINDOW_NOISES)} (the starting "
                         f"noise of a long clip's windows), got {value!r}")
    return value


def shared_noise_sources(layout: WindowLayout, generator: torch.Generator | None = None,
                         shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each frame's / column's starting noise comes from, for windows that share their noise.

    Returns (video [frames], audio [audio_length]) int64 indices into the first window's frames /
    columns. FreeNoise's noise rescheduling (Qiu et al. 2023) for uneven window starts: going from
    window k-1 to window k, the frames that window k adds (after window k-1's end) take the noise of
    the frames it drops (before window k's start), as many of them, in an order shuffled by
    `generator` (in order with shuffle=False). So every window's noise frames are a permutation of
    the first window's. The audio columns follow the same seconds: a new column takes the noise of a
    dropped column from the seconds its video frame was given (columns sorted by that target time and
    matched to the dropped columns in time order, so the audio too is an exact permutation of the
    first window's columns, each within about a column of the video's rescheduled seconds).
    One window (or a clip shorter than one): the identity."""
    ws = layout.windows
    nv, na = ws[0].frame_stop - ws[0].frame_start, ws[0].audio_stop - ws[0].audio_start
    src_v = torch.empty(layout.frames, dtype=torch.long)
    src_a = torch.empty(layout.audio_length, dtype=torch.long)
    src_v[:nv], src_a[:na] = torch.arange(nv), torch.arange(na)
    for p, w in zip(ws, ws[1:]):
        d = w.frame_start - p.frame_start               # frames dropped = frames added
        perm = torch.randperm(d, generator=generator) if shuffle else torch.arange(d)
        src_v[p.frame_stop:w.frame_stop] = src_v[p.frame_start:w.frame_start][perm]
        D = w.audio_start - p.audio_start               # columns dropped = columns added
        if D == 0:
            continue
        # The added columns, at the seconds their video frame now has (its first-window frame + the column's
        # place within the frame), take the dropped columns' noise in that order: both sorted by first-window time.
        at = (torch.arange(p.audio_stop, w.audio_stop, dtype=torch.float64) + 0.5) / layout.mel_rate * layout.fps
        j = at.floor().clamp(0, w.frame_stop - 1)
        key = src_v[j.long()].to(torch.float64) + (at - j).clamp(0.0, 0.999)
        order = torch.argsort(key, stable=True)
        src_a[p.audio_stop + order] = torch.sort(src_a[p.audio_start:w.audio_start]).values
    return src_v, src_a


def shared_window_noise(layout: WindowLayout, video_shape: Sequence[int], audio_shape: Sequence[int],
                        seeds: Sequence[int] | int = 0, generator: torch.Generator | None = None,
                        shuffle: bool = True, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting noise (v_T [B, C, frames, H, W], a_T [B, mel, audio_length]) for windows that share it.

    `video_shape` (C, F, H, W) / `audio_shape` (mel, T): one window's, as the model's config. Clip i
    draws, from `torch.Generator().manual_seed(seeds[i])` (an int: one clip), the noise of the first
    window's frames and columns (video, then audio: what `sample` draws for a one-window clip of that
    seed, so a one-window layout gives the independent noise bit for bit), then the shuffles of
    `shared_noise_sources`, and every later frame / column copies the noise it is given. With
    `generator=`, all clips draw from it in turn instead. float32 on the CPU, cast to `dtype`."""
    vs, as_ = tuple(video_shape), tuple(audio_shape)
    if len(vs) != 4 or len(as_) != 2 or not all(isinstance(x, int) and x > 0 for x in vs + as_):
        raise ValueError(f"`video_shape` (C, F, H, W) and `audio_shape` (mel, T) of one window must be tuples of "
                         f"positive ints, got {video_shape!r} and {audio_shape!r}")
    w0 = layout.windows[0]
    nv, na = w0.frame_stop - w0.frame_start, w0.audio_stop - w0.audio_start
    if (vs[1], as_[1]) != (layout.window_frames, layout.window_audio):
        raise ValueError(f"`video_shape` / `audio_shape` must be one window's ({layout.window_frames} frames, "
                         f"{layout.window_audio} columns) as the layout's, got {vs[1]} frames and {as_[1]} columns")
    if isinstance(seeds, bool) or (not isinstance(seeds, int) and not isinstance(seeds, Sequence)):
        raise ValueError(f"`seeds` must be an int >= 0 or a sequence of them (one per clip), got {seeds!r}")
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"`seeds` must be an int >= 0 or a non-empty sequence of them (one per clip), got {seeds!r}")
    videos, audios = [], []
    for seed in seeds:
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        base_v = torch.randn((1, vs[0], nv, vs[2], vs[3]), generator=g, device=g.device).cpu()
        base_a = torch.randn((1, as_[0], na), generator=g, device=g.device).cpu()
        src_v, src_a = shared_noise_sources(layout, torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))), shuffle)
        videos.append(base_v[:, :, src_v])
        audios.append(base_a[:, :, src_a])
    return torch.cat(videos).to(dtype), torch.cat(audios).to(dtype)


# --------------------------------------------------------------------------------- the denoiser
class WindowedDenoiser:
    """A Denoiser over the long clip: runs `model` on each window and fuses the v-predictions."""

    def __init__(self, model: Denoiser, layout: WindowLayout, max_batch: int | None = DEFAULT_MAX_BATCH,
                 video_shape: Sequence[int] | None = None, audio_shape: Sequence[int] | None = None,
                 callback: Callable[[int, int, int], None] | None = None) -> None:
        if not callable(model):
            raise TypeError(f"`model` must be a callable denoiser, got {type(model).__name__}")
        if max_batch is not None:
            _positive_int("max_batch", max_batch, "an int >= 1 (windows per model call) or None (all at once)")
        if callback is not None and not callable(callback):
            raise TypeError(f"`callback` must be callable (evaluation, windows done, windows), got "
                            f"{type(callback).__name__}")
        self.model, self.layout, self.max_batch, self.callback = model, layout, max_batch, callback
        self.supports_grad = supports_grad(model)
        self.calls = 0          # model calls so far
        self.evaluations = 0    # evaluations of this denoiser (one per sampler step)
        self.peak_windows = 0   # the most windows that went through the model in one call
        self.peak_batch = 0     # the largest batch of one model call (windows x the sampler's batch)
        base = getattr(model, "config", None)
        vs = tuple(video_shape) if video_shape is not None else tuple(getattr(base, "video_shape", ()) or ())
        as_ = tuple(audio_shape) if audio_shape is not None else tuple(getattr(base, "audio_shape", ()) or ())
        if len(vs) != 4 or len(as_) != 2:
            raise ValueError(f"`video_shape` (C, F, H, W) and `audio_shape` (mel, T) of one window are needed: "
                             f"the model has no `.config` with them; got {vs!r}, {as_!r}")
        self.video_shape = (vs[0], layout.frames, vs[2], vs[3])
        self.audio_shape = (as_[0], layout.audio_length)
        if dataclasses.is_dataclass(base) and {"frames", "audio_length"} <= {f.name for f in dataclasses.fields(base)}:
            self.config = dataclasses.replace(base, frames=layout.frames, audio_length=layout.audio_length)
        else:
            extra = {k: getattr(base, k) for k in ("num_train_steps", "num_classes", "fps", "sample_rate")
                     if hasattr(base, k)}
            self.config = SimpleNamespace(video_shape=self.video_shape, audio_shape=self.audio_shape, **extra)
        ref = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        self.device = ref.device if ref is not None else getattr(model, "device", None)
        self.dtype = ref.dtype if ref is not None else getattr(model, "dtype", None)
        wv, wa = layout.weights()
        sv, sa = layout.weight_sums()
        self._weights = (wv, wa, sv, sa)   # float64 on the CPU; cast per (device, dtype) on first use
        self._cast: dict[tuple[torch.device, torch.dtype], tuple] = {}

    def __repr__(self) -> str:
        L = self.layout
        return (f"WindowedDenoiser({type(self.model).__name__}, {len(L.windows)} windows of {L.window_frames} frames / "
                f"{L.window_audio} columns over {L.frames} frames / {L.audio_length} columns, overlap {L.overlap}, "
                f"max_batch {self.max_batch})")

    def _model(self, v, a, t_v, t_a, labels, windows: int = 1):
        self.calls += 1
        self.peak_windows = max(self.peak_windows, windows)
        self.peak_batch = max(self.peak_batch, int(v.shape[0]))
        return self.model(v, a, t_v, t_a) if labels is None else self.model(v, a, t_v, t_a, labels=labels)

    def _weights_on(self, device: torch.device, dtype: torch.dtype):
        key = (device, dtype)
        if key not in self._cast:
            wv, wa, sv, sa = self._weights
            self._cast[key] = ([w.to(device, dtype).view(1, 1, -1, 1, 1) for w in wv],
                               [w.to(device, dtype).view(1, 1, -1) for w in wa],
                               sv.to(device, dtype).view(1, 1, -1, 1, 1), sa.to(device, dtype).view(1, 1, -1))
        return self._cast[key]

    def __call__(self, v_t: torch.Tensor, a_t: torch.Tensor, t_v: torch.Tensor, t_a: torch.Tensor,
                 labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.layout
        if v_t.dim() != 5 or a_t.dim() != 3 or v_t.shape[2] != L.frames or a_t.shape[2] != L.audio_length:
            raise ValueError(f"this windowed denoiser is laid out for {L.frames} frames and {L.audio_length} mel "
                             f"columns: expected v_t [B, C, {L.frames}, H, W] and a_t [B, mel, {L.audio_length}], "
                             f"got {list(v_t.shape)} and {list(a_t.shape)}")
        self.evaluations += 1
        total = len(L.windows)
        if L.single:
            out = self._model(v_t, a_t, t_v, t_a, labels)
            if self.callback is not None:
                self.callback(self.evaluations, 1, 1)
            return out
        B = v_t.shape[0]
        group = len(L.windows) if self.max_batch is None else self.max_batch
        out_v = out_a = None
        for g0 in range(0, len(L.windows), group):
            ws = L.windows[g0:g0 + group]
            n = len(ws)
            v_in = torch.cat([v_t[:, :, w.frame_start:w.frame_stop] for w in ws])
            a_in = torch.cat([a_t[:, :, w.audio_start:w.audio_stop] for w in ws])
            pv, pa = self._model(v_in, a_in, t_v.repeat(n), t_a.repeat(n), None if labels is None else labels.repeat(n),
                                 windows=n)
            if out_v is None:
                # accumulate in at least float32 (a half-precision model's windows are summed in fp32)
                acc = torch.promote_types(pv.dtype, torch.float32)
                out_v = torch.zeros(v_t.shape, device=pv.device, dtype=acc)
                out_a = torch.zeros(a_t.shape, device=pa.device, dtype=acc)
                wv, wa, sv, sa = self._weights_on(pv.device, acc)
            for i, w in enumerate(ws):
                out_v[:, :, w.frame_start:w.frame_stop] += pv[i * B:(i + 1) * B] * wv[w.index]
                out_a[:, :, w.audio_start:w.audio_stop] += pa[i * B:(i + 1) * B] * wa[w.index]
            if self.callback is not None:
                self.callback(self.evaluations, g0 + n, total)
        return out_v / sv, out_a / sa


def _window_sizes(model: Any, video_shape, audio_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    config = getattr(model, "config", None)
    vs = tuple(video_shape) if video_shape is not None else tuple(getattr(config, "video_shape", ()) or ())
    as_ = tuple(audio_shape) if audio_shape is not None else tuple(getattr(config, "audio_shape", ()) or ())
    if len(vs) != 4 or len(as_) != 2 or not all(isinstance(d, int) and d > 0 for d in vs + as_):
        raise ValueError(f"`video_shape` (C, F, H, W) and `audio_shape` (mel, T) of one window must be tuples of "
                         f"positive ints (the model has no `.config` giving them); got {vs!r} and {as_!r}")
    return vs, as_


def windowed(model: Denoiser, frames: int | None = None, *, seconds: float | None = None,
             audio_length: int | None = None, overlap: int | None = None,
             max_batch: int | None = DEFAULT_MAX_BATCH, video_shape: Sequence[int] | None = None,
             audio_shape: Sequence[int] | None = None, fps: float | None = None,
             mel_rate: float | None = None,
             callback: Callable[[int, int, int], None] | None = None) -> WindowedDenoiser:
    """`model` as a Denoiser over a clip of `frames` video frames (or `seconds`); see the module docstring."""
    vs, as_ = _window_sizes(model, video_shape, audio_shape)
    config = getattr(model, "config", None)
    if fps is None:
        fps = float(getattr(config, "fps", DEFAULT_FPS))
    if mel_rate is None:
        mel_rate = float(getattr(config, "sample_rate", 16_000)) / HOP_LENGTH
    clock = SimpleNamespace(fps=fps, sample_rate=mel_rate * HOP_LENGTH)
    if (frames is None) == (seconds is None):
        raise ValueError(f"give exactly one of `frames` (video frames of the clip) or `seconds` (its duration); "
                         f"got frames={frames!r}, seconds={seconds!r}")
    if seconds is not None:
        seconds = _positive_seconds("seconds", seconds)
        frames = frames_for_seconds(clock, seconds)
        if audio_length is None:
            audio_length = audio_columns_for_seconds(clock, seconds)
    else:
        frames = _positive_int("frames", frames, "the clip's video frames, an int >= 1")
        if audio_length is None:
            audio_length = audio_columns_for_seconds(clock, frames / fps)
    layout = window_layout(frames, audio_length, vs[1], as_[1], overlap, fps, mel_rate)
    return WindowedDenoiser(model, layout, max_batch, vs, as_, callback)


def sample_windowed(model: Denoiser, seconds: float | None = None, frames: int | None = None,
                    overlap: int | None = None, max_batch: int | None = DEFAULT_MAX_BATCH, task: str = "joint",
                    condition: torch.Tensor | None = None, audio_length: int | None = None,
                    fps: float | None = None, mel_rate: float | None = None, window_noise: str = "independent",
                    **sample_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate a clip of any length with `sample` over `windowed(model, ...)`.

    For task "v2a" / "a2v" without `seconds` / `frames`, the clip's length is the condition's: its
    frames (axis -3 of a video [B, C, F, H, W] or [C, F, H, W]) or mel columns (last axis), the other
    modality's length following in seconds. `sample_kwargs` go to `sample` (steps, sampler, seed,
    gamma, guidance, cfg_scale, labels, noise, ...); `video_shape` / `audio_shape` there are one
    window's, for a model without `.config`; `callback` goes to `windowed`.
    window_noise: "independent" (the default: the whole clip's starting noise drawn as `sample` draws
    it) or "shared" (`shared_window_noise`: every window starts from a permutation of the first
    window's noise frames, FreeNoise-style; clip i from seed + i, or from `generator`). Not with `noise`.
    """
    from .sampling import sample

    check_window_noise(window_noise)
    video_shape, audio_shape = sample_kwargs.pop("video_shape", None), sample_kwargs.pop("audio_shape", None)
    callback = sample_kwargs.pop("callback", None)
    if seconds is None and frames is None and task in ("v2a", "a2v") and isinstance(condition, torch.Tensor):
        config = getattr(model, "config", None)
        fps_ = fps if fps is not None else float(getattr(config, "fps", DEFAULT_FPS))
        rate = mel_rate if mel_rate is not None else float(getattr(config, "sample_rate", 16_000)) / HOP_LENGTH
        if task == "v2a":
            if condition.dim() < 4:
                raise ValueError(f"`condition` for task 'v2a' must be a video [B, C, F, H, W] or [C, F, H, W], "
                                 f"got shape {list(condition.shape)}")
            frames = int(condition.shape[-3])
        else:
            if condition.dim() < 2:
                raise ValueError(f"`condition` for task 'a2v' must be a mel [B, mel, T] or [mel, T], got shape "
                                 f"{list(condition.shape)}")
            audio_length = int(condition.shape[-1]) if audio_length is None else audio_length
            frames = max(1, _round_half_up(audio_length / rate * fps_))
    den = windowed(model, frames, seconds=seconds, audio_length=audio_length, overlap=overlap, max_batch=max_batch,
                   video_shape=video_shape, audio_shape=audio_shape, fps=fps, mel_rate=mel_rate, callback=callback)
    if window_noise == "shared":
        if sample_kwargs.get("noise") is not None:
            raise ValueError("`window_noise`='shared' makes the starting noise; give it or `noise`, not both")
        seed, batch = sample_kwargs.get("seed", 0), sample_kwargs.get("batch_size", 1)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0, got {seed!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch!r}")
        vs, as_ = _window_sizes(model, video_shape, audio_shape)
        sample_kwargs["noise"] = shared_window_noise(den.layout, vs, as_, range(seed, seed + batch),
                                                     generator=sample_kwargs.get("generator"))
    return sample(den, task=task, condition=condition, **sample_kwargs)


__all__ = ["HOP_LENGTH", "WINDOW_NOISES", "Window", "WindowLayout", "WindowedDenoiser", "audio_columns_for_seconds",
           "check_window_noise", "frames_for_seconds", "mel_rate", "sample_windowed", "shared_noise_sources",
           "shared_window_noise", "window_layout", "window_shapes", "windowed"]
