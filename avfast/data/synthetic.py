"""Synthetic audio-visual clips whose visual events coincide with audio events.

For each "hit" a ball drops into view and stops dead on a floor, so its speed (and the
optical-flow magnitude) peaks exactly at the impact frame and drops to ~0 right after -- the kind of
hit Greatest Hits clips show.  A "flash" event brightens the whole frame for one frame.
Each visual event has an audio event (a decaying click for hits, a short tone burst for flashes)
at the same time plus `audio_offset` seconds, so sync metrics can be tested against a known offset.

By default every ball is in view from the first frame to the last (it hangs, falls, then rests), which
is what the training clips are.  A long clip of those shows all of its balls in every frame, several
times what a training clip holds.  `transient=True` keeps a ball in view only between the flashes around
its hit: the flashes cut the clip into scenes, and at each flash the balls that have landed leave and the
next scene's appear (hanging), laid out in lanes as a training clip lays out its balls (with
kinds="mixed", at most MAX_SCENE_BALLS to a scene: a further hit becomes a flash).  A long clip of
those shows about as many balls at a time as a training clip, and each stretch between flashes looks like
one.  The swap happens inside the flash frame, whose own optical-flow peak (and tone) is there anyway, so
it adds no peak of its own: a ball that faded or slid in instead would (Farnebäck reads a fade as motion:
a 7-frame fade gave peaks of 0.1-0.2 px/frame, over AV-Align's 0.1 threshold).

Layout: video is channel-first [3, F, H, W] (the model's [B, C, F, H, W] without B), float in
[-1, 1]; audio is [N] float in [-1, 1].  Rates default to the paper's: 10 fps and 16 kHz.
Everything random is drawn from the given torch.Generator (or seed), so clips are reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import torch

FPS = 10
SAMPLE_RATE = 16_000
MAX_SCENE_BALLS = 3  # transient clips: balls between two flashes at most (the training clips hold 1-3 events)
FALL_FRAMES = 5      # frames from release to impact


@dataclass
class SyntheticClip:
    video: torch.Tensor  # [3, F, H, W] in [-1, 1]
    audio: torch.Tensor  # [N] in [-1, 1]
    event_times: List[float]  # visual event times in seconds (on the frame grid)
    audio_event_times: List[float]  # event_times + audio_offset (those inside the clip)
    event_kinds: List[str]  # "hit" or "flash" per event
    ball_frames: List[Tuple[int, int]]  # per ball (hit): first and last frame it is (partly) in view
    fps: int
    sample_rate: int


def _as_generator(generator: Union[None, int, torch.Generator]) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    g.manual_seed(0 if generator is None else int(generator))
    return g


def _pick_event_frames(num_frames: int, n_events: int, min_gap: int, g: torch.Generator) -> List[int]:
    # Events need room for a drop before them and a rest after, and gaps of >= min_gap frames
    # so the optical-flow peaks of neighbouring events do not merge.
    first, last = 3, num_frames - 3
    slots = last - first
    if n_events < 1 or (n_events - 1) * min_gap > slots:
        raise ValueError(f"n_events: {n_events} events with gaps of {min_gap} frames do not fit in "
                         f"{num_frames} frames")
    slack = slots - (n_events - 1) * min_gap
    cuts = sorted(torch.randint(0, slack + 1, (n_events,), generator=g).tolist())
    return [first + c + i * min_gap for i, c in enumerate(cuts)]


def _click(n: int, sample_rate: int, g: torch.Generator) -> torch.Tensor:
    t = torch.arange(n) / sample_rate
    noise = torch.rand(n, generator=g) * 2 - 1
    return 0.8 * noise * torch.exp(-t / 0.012)


def _tone(n: int, sample_rate: int, freq: float) -> torch.Tensor:
    t = torch.arange(n) / sample_rate
    env = torch.clamp(t / 0.003, max=1.0) * torch.exp(-t / 0.05)
    return 0.6 * env * torch.sin(2 * math.pi * freq * t)


def make_clip(
    duration: float = 1.8,
    fps: int = FPS,
    sample_rate: int = SAMPLE_RATE,
    size: int = 64,
    n_events: int = 2,
    kinds: Union[str, Sequence[str]] = "hit",
    audio_offset: float = 0.0,
    noise_level: float = 0.005,
    min_gap_frames: int = 6,
    generator: Union[None, int, torch.Generator] = None,
    transient: bool = False,
) -> SyntheticClip:
    """One clip of `duration` s: video [3, round(duration*fps), size, size], audio [round(duration*sr)].

    kinds: "hit", "flash", "mixed" (random per event) or a list with one kind per event.
    audio_offset: seconds the audio events lag (+) or lead (-) the visual events.
    transient: each ball in view only between the flashes around its hit, instead of for the whole clip
    (the module's docstring); False gives the same clips as before it existed.
    """
    if duration <= 0 or fps <= 0 or sample_rate <= 0:
        raise ValueError(f"duration/fps/sample_rate must be positive, got {duration}, {fps}, {sample_rate}")
    if size < 16:
        raise ValueError(f"size: expected >= 16 pixels, got {size}")
    g = _as_generator(generator)
    num_frames = int(round(duration * fps))
    num_samples = int(round(duration * sample_rate))
    frames = _pick_event_frames(num_frames, n_events, min_gap_frames, g)
    if isinstance(kinds, str):
        if kinds == "mixed":
            kind_list = ["hit" if b else "flash" for b in (torch.rand(n_events, generator=g) < 0.5).tolist()]
            if transient:
                kind_list = _cap_scene_balls(kind_list)
        elif kinds in ("hit", "flash"):
            kind_list = [kinds] * n_events
        else:
            raise ValueError(f"kinds: expected 'hit', 'flash', 'mixed' or a list, got {kinds!r}")
    else:
        kind_list = list(kinds)
        if len(kind_list) != n_events or any(k not in ("hit", "flash") for k in kind_list):
            raise ValueError(f"kinds: expected {n_events} entries of 'hit'/'flash', got {kind_list}")

    # --- video: textured background, a floor, one shaded ball per hit ---
    # Each ball hangs still near the top, falls under constant acceleration and stops dead on the
    # floor at its event frame, then stays there.  Its per-frame displacement grows until impact
    # and is zero after, so the flow magnitude has exactly one strict local maximum per hit, at
    # the impact frame.  Balls land at different x positions so resting balls never overlap.
    ys = torch.arange(size).float()[:, None]
    xs = torch.arange(size).float()[None, :]
    hue = torch.rand(3, generator=g)
    background = 0.15 + 0.1 * hue[:, None, None] + 0.03 * torch.sin(xs / 3.0 + ys / 5.0)[None]
    floor_y = int(size * 0.85)
    background[:, floor_y:, :] = 0.45
    radius = max(3.0, size / 12)
    hit_frames = [f for f, k in zip(frames, kind_list) if k == "hit"]
    if transient:
        flash_frames = [f for f, k in zip(frames, kind_list) if k == "flash"]
        centres, visible, ball_frames = _scene_balls(hit_frames, flash_frames, num_frames, size, g)
    else:
        lanes = torch.randperm(max(1, len(hit_frames)), generator=g).tolist()
        lane_width = size / max(1, len(hit_frames))
        centres = [lane_width * (lanes[j] + 0.5) for j in range(len(hit_frames))]
        visible = [None] * len(hit_frames)  # every frame
        ball_frames = [(0, num_frames - 1)] * len(hit_frames)
    rest_y = floor_y - radius
    fall_frames = FALL_FRAMES
    # Drop height 0.3*size: the last-frame displacement is 9/25 of it (~0.11*size), small enough
    # for Farneback's 3-level pyramid to track, so the flow peak lands on the impact frame.
    drop = 0.3 * size
    accel = 2 * drop / fall_frames ** 2
    colours = 0.6 + 0.4 * torch.rand(max(1, len(hit_frames)), 3, generator=g)
    video = background[:, None].repeat(1, num_frames, 1, 1)
    steps = torch.arange(num_frames, dtype=torch.float32)
    for j, impact in enumerate(hit_frames):
        cx = centres[j]
        dt = (impact - steps).clamp(0, fall_frames)  # frames left until impact, per frame
        cy = (rest_y - (drop - 0.5 * accel * (fall_frames - dt) ** 2))[:, None, None]  # released from rest
        inside = (((xs - cx) ** 2 + (ys - cy) ** 2) <= radius ** 2).float()[None]  # [1, F, H, W]
        # Smooth radial shading with an off-centre highlight: texture for the flow estimator
        # without fine periodic stripes, which alias at large displacements.
        dist = torch.sqrt((xs - cx + radius / 3) ** 2 + (ys - cy + radius / 3) ** 2)
        shade = (1.0 - 0.6 * dist / (1.5 * radius)).clamp(0.2, 1.0)[None]
        ball = colours[j][:, None, None, None] * shade
        if visible[j] is not None:  # a transient ball: in view in its scene's frames only
            inside = inside * visible[j][None, :, None, None]
        video = video * (1 - inside) + ball * inside
    for f, k in zip(frames, kind_list):
        if k == "flash":
            video[:, f] = torch.clamp(video[:, f] + 0.5, max=1.0)
    video = video * 2 - 1 + noise_level * torch.randn(video.shape, generator=g)
    video = video.clamp(-1, 1)

    # --- audio: faint noise floor plus one sound per event, shifted by audio_offset ---
    audio = noise_level * 0.2 * torch.randn(num_samples, generator=g)
    event_times = [f / fps for f in frames]
    audio_times = []
    for t, k in zip(event_times, kind_list):
        ta = t + audio_offset
        start = int(round(ta * sample_rate))
        if start < 0 or start >= num_samples:
            continue
        audio_times.append(ta)
        n = min(int(0.2 * sample_rate), num_samples - start)
        sound = _click(n, sample_rate, g) if k == "hit" else _tone(n, sample_rate, 880.0)
        audio[start:start + n] += sound
    audio = audio.clamp(-1, 1)
    return SyntheticClip(video, audio, event_times, audio_times, kind_list, ball_frames, fps, sample_rate)


def _cap_scene_balls(kinds: List[str]) -> List[str]:
    """Mixed kinds for a transient clip: the event after MAX_SCENE_BALLS hits in a row is a flash."""
    out, run = [], 0
    for kind in kinds:
        if kind == "hit" and run == MAX_SCENE_BALLS:
            kind = "flash"
        run = run + 1 if kind == "hit" else 0
        out.append(kind)
    return out


def _scene_balls(hit_frames: List[int], flash_frames: List[int], num_frames: int, size: int,
                 g: torch.Generator):
    """Transient balls: per ball its x centre, per-frame visibility [F] and (first, last) frame in view.

    Ball j is in view from the last flash before its impact (or frame 0) to the frame before the first flash
    after it (or the last frame). Balls of one scene (between two flashes) share lanes as a training clip's
    balls do: the scene's width split in as many lanes, in random order."""
    cuts = [0] + sorted(flash_frames) + [num_frames]
    steps = torch.arange(num_frames)
    centres, masks, spans = [0.0] * len(hit_frames), [None] * len(hit_frames), [None] * len(hit_frames)
    for lo, hi in zip(cuts, cuts[1:]):
        members = [j for j, impact in enumerate(hit_frames) if lo <= impact < hi]
        if not members:
            continue
        lanes = torch.randperm(len(members), generator=g).tolist()
        for lane, j in zip(lanes, members):
            centres[j] = size / len(members) * (lane + 0.5)
            masks[j] = ((steps >= lo) & (steps < hi)).float()
            spans[j] = (lo, hi - 1)
    return centres, masks, spans


def make_batch(batch_size: int, generator: Union[None, int, torch.Generator] = None, **kwargs):
    """Stack `batch_size` clips: video [B, 3, F, H, W], audio [B, N], list of event-time lists."""
    g = _as_generator(generator)
    clips = [make_clip(generator=g, **kwargs) for _ in range(batch_size)]
    return (torch.stack([c.video for c in clips]), torch.stack([c.audio for c in clips]),
            [c.event_times for c in clips])


def click_track(bpm: float, duration: float, sample_rate: int = SAMPLE_RATE, phase: float = 0.0,
                generator: Union[None, int, torch.Generator] = None) -> tuple:
    """A metronome: clicks every 60/bpm s starting at `phase` s. Returns (audio [N], beat times)."""
    if bpm <= 0:
        raise ValueError(f"bpm: expected > 0, got {bpm}")
    g = _as_generator(generator)
    n = int(round(duration * sample_rate))
    audio = torch.zeros(n)
    times = []
    t = phase
    while t < duration:
        s = int(round(t * sample_rate))
        m = min(int(0.05 * sample_rate), n - s)
        audio[s:s + m] += _click(m, sample_rate, g)
        times.append(t)
        t += 60.0 / bpm
    return audio.clamp(-1, 1), times
