"""AV-Align (Yariv et al. 2023) in the precision/recall IoU form of the Sony baseline paper, Appendix A.4 (Eq. 14-15).

A = audio onsets (librosa's onset detector, re-done in numpy in onsets.py: no numba JIT), V = video
peaks (local maxima of the mean Farnebäck optical-flow magnitude between consecutive frames).  An
onset a "is in" V when some peak lies within one video frame of it (|a - v| < 1/fps, strict as in
the official code), and vice versa.

    p = |{a in A : a in V}| / |A|,  r = |{v in V : v in A}| / |V|,  AV-Align = p r / (p + r - p r)

This stays in [0, 1] even when the audio has many more onsets than the video has peaks (the
official c / (|A| + |V| - c) can exceed 1).  With no onsets and no peaks the score is defined as 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Union

import numpy as np
import torch

from .._deps import require
from .onsets import frames_to_time, onset_detect, onset_strength

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass
class AVAlignResult:
    score: float
    precision: float
    recall: float
    audio_onsets: List[float] = field(default_factory=list)
    video_peaks: List[float] = field(default_factory=list)
    flow_magnitude: List[float] = field(default_factory=list)
    counts: tuple = (0, 0, 0, 0)  # event_counts: (matched onsets, onsets, matched peaks, peaks)


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def video_to_uint8_frames(video: ArrayLike) -> np.ndarray:
    """[3, F, H, W] float in [-1, 1] (tensor) or [F, H, W, 3] uint8 (array) -> [F, H, W, 3] uint8."""
    arr = _to_numpy(video)
    if arr.ndim != 4:
        raise ValueError(f"video: expected [3, F, H, W] in [-1, 1] or [F, H, W, 3] uint8, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        if arr.shape[-1] != 3:
            raise ValueError(f"video: uint8 frames must be [F, H, W, 3], got {arr.shape}")
        return arr
    if arr.shape[0] != 3:
        raise ValueError(f"video: float video must be channel-first [3, F, H, W], got {arr.shape}")
    arr = np.clip((arr.transpose(1, 2, 3, 0) + 1) * 127.5 + 0.5, 0, 255)
    return arr.astype(np.uint8)


def optical_flow_magnitude(video: ArrayLike) -> np.ndarray:
    """Mean Farnebäck flow magnitude per frame, length F; entry i is the flow from frame i-1 to i
    (entry 0 repeats entry 1, as in the official code, so peaks keep frame indices)."""
    cv2 = require("cv2", "optical flow for AV-Align")
    frames = video_to_uint8_frames(video)
    if len(frames) < 3:
        raise ValueError(f"video: need at least 3 frames for optical-flow peaks, got {len(frames)}")
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    mags = []
    for prev, cur in zip(gray[:-1], gray[1:]):
        # Official AV-Align parameters: pyr_scale .5, 3 levels, window 15, 3 iters, poly 5, sigma 1.2.
        flow = cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mags.append(float(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).mean()))
    return np.array([mags[0]] + mags)


def peaks_from_flow(mag: Sequence[float], fps: float, threshold: float = 0.1) -> List[float]:
    """Times (s) of strict local maxima of a flow-magnitude curve that reach `threshold`."""
    return [i / fps for i in range(1, len(mag) - 1)
            if mag[i - 1] < mag[i] > mag[i + 1] and mag[i] >= threshold]


def video_peaks(video: ArrayLike, fps: float, threshold: float = 0.1) -> List[float]:
    """Times (s) of strict local maxima of the flow magnitude that reach `threshold` (pixels/frame)."""
    return peaks_from_flow(optical_flow_magnitude(video), fps, threshold)


def audio_onsets(audio: ArrayLike, sample_rate: int, hop_length: int = 128) -> List[float]:
    """Onset times (s): librosa's spectral-flux onset detector (hop 8 ms at 16 kHz), re-done in
    numpy by .onsets so that no numba JIT runs (tests hold the times equal to librosa's)."""
    y = _to_numpy(audio).astype(np.float32)
    if y.ndim != 1:
        raise ValueError(f"audio: expected a mono waveform [N], got shape {y.shape}")
    # Reflect padding: librosa's default zero padding makes a silence->sound step at t=0 that is
    # detected as a spurious onset ~70 ms into every clip.
    env = onset_strength(y, sample_rate, hop_length, pad_mode="reflect")
    return frames_to_time(onset_detect(env, sample_rate, hop_length), sample_rate, hop_length)


def _matched(points: Sequence[float], others: Sequence[float], tol: float) -> int:
    return sum(1 for a in points if any(abs(a - b) < tol for b in others))


def event_counts(onsets: Sequence[float], peaks: Sequence[float], fps: float) -> tuple[int, int, int, int]:
    """(onsets matched by a peak, onsets, peaks matched by an onset, peaks): what the score is made of."""
    tol = 1.0 / fps
    return _matched(onsets, peaks, tol), len(onsets), _matched(peaks, onsets, tol), len(peaks)


def score_from_counts(counts: Sequence[int] | np.ndarray) -> tuple:
    """(score, precision, recall) from `event_counts` (or their sum over clips), Eq. 14-15."""
    matched_onsets, onsets, matched_peaks, peaks = (int(c) for c in counts)
    if not onsets or not peaks:
        return 0.0, 0.0, 0.0
    p, r = matched_onsets / onsets, matched_peaks / peaks
    denom = p + r - p * r
    return (p * r / denom if denom > 0 else 0.0), p, r


def pooled_av_align(counts: Sequence[Sequence[int]] | np.ndarray) -> float:
    """AV-Align of many clips' events pooled: precision and recall over every onset and peak of the clips
    (`event_counts` per clip, summed), so a clip weighs by its events. The mean of per-clip scores depends on
    the clips' length (a 1.8-s clip with one event scores 0 or 1; a clip with no peak scores 0 whatever its
    sound); pooled, clips of any length measure the same thing: per-event sync."""
    totals = np.asarray(counts, dtype=np.int64).reshape(-1, 4).sum(axis=0)
    return score_from_counts(totals)[0]


def av_align_from_events(onsets: Sequence[float], peaks: Sequence[float], fps: float) -> tuple:
    """(score, precision, recall) from event times, Eq. 14-15 of the Sony baseline paper."""
    return score_from_counts(event_counts(onsets, peaks, fps))


def av_align(video: ArrayLike, audio: ArrayLike, fps: float = 10, sample_rate: int = 16_000,
             flow_threshold: float = 0.1, onset_hop_length: int = 128) -> AVAlignResult:
    """AV-Align of one clip. video: [3, F, H, W] in [-1, 1] or [F, H, W, 3] uint8; audio: [N]."""
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got fps={fps}, sample_rate={sample_rate}")
    flow = optical_flow_magnitude(video)
    peaks = peaks_from_flow(flow, fps, flow_threshold)
    onsets = audio_onsets(audio, sample_rate, onset_hop_length)
    counts = event_counts(onsets, peaks, fps)
    score, p, r = score_from_counts(counts)
    return AVAlignResult(score, p, r, onsets, peaks, flow.tolist(), counts)
