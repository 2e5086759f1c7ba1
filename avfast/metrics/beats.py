"""Beat-tracking hit rate (CMMD, section 3.1): librosa's beat tracker on generated and reference
audio; the hit rate is the fraction of reference beats that have a generated beat within the
tolerance (±100 ms is the paper's main setting, ±500 ms its coarse reference setting).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Union

import numpy as np
import torch

from .._deps import require

DEFAULT_TOLERANCES = (0.1, 0.5)


@dataclass
class BeatResult:
    hit_rates: Dict[float, float]  # tolerance (s) -> hit rate in [0, 1]
    generated_beats: List[float] = field(default_factory=list)
    reference_beats: List[float] = field(default_factory=list)


def beat_times(audio: Union[np.ndarray, torch.Tensor], sample_rate: int) -> List[float]:
    """Beat times (s) from librosa.beat.beat_track on a mono waveform [N]."""
    from .._numba import use_user_cache

    use_user_cache()  # before librosa's numba functions are compiled: not site-packages' shared cache (avfast/_numba.py)
    librosa = require("librosa", "beat tracking")
    y = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    if y.ndim != 1:
        raise ValueError(f"audio: expected a mono waveform [N], got shape {y.shape}")
    if not np.isfinite(y).all():  # librosa would find no beats and the hit rate would read 0.0, a score
        raise ValueError(f"audio holds {int((~np.isfinite(y)).sum())} NaN or infinite samples; no beats can be "
                         f"tracked in it")
    _, frames = librosa.beat.beat_track(y=y, sr=sample_rate)
    return [float(t) for t in librosa.frames_to_time(frames, sr=sample_rate)]


def hit_rate(generated: Sequence[float], reference: Sequence[float], tolerance: float) -> float:
    """Fraction of reference beats with a generated beat within ±tolerance s (0 if no reference beats)."""
    if tolerance < 0:
        raise ValueError(f"tolerance: expected >= 0 seconds, got {tolerance}")
    if len(reference) == 0:
        return 0.0
    gen = np.asarray(generated, dtype=np.float64)
    if gen.size == 0:
        return 0.0
    hits = sum(1 for r in reference if np.min(np.abs(gen - r)) <= tolerance)
    return hits / len(reference)


def beat_hit_rate(generated_audio, reference_audio, sample_rate: int = 16_000,
                  tolerances: Sequence[float] = DEFAULT_TOLERANCES) -> BeatResult:
    """Beat hit rate of generated vs reference audio (both [N] at `sample_rate`)."""
    gen = beat_times(generated_audio, sample_rate)
    ref = beat_times(reference_audio, sample_rate)
    return BeatResult({float(t): hit_rate(gen, ref, t) for t in tolerances}, gen, ref)
