"""Event-pooled AV-Align with bootstrap intervals over clips: the quality report's and the long-clip experiment's.

`avfast.metrics.pooled_av_align` pools every clip's onsets and flow peaks (`AVAlignResult.counts`:
matched onsets, onsets, matched peaks, peaks), so a clip weighs by its events. The mean of per-clip
scores weighs every clip alike: a clip with one event scores 0 or 1, and a clip whose video draws no
motion peak scores 0 whatever its sound. Pooled, a set of clips measures per-event sync.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000   # bootstrap resamples of every pooled interval


def _counts(counts: Sequence[Sequence[int]] | np.ndarray, name: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 2 or c.shape[1] != 4 or len(c) < 1:
        raise ValueError(f"`{name}` must be one row of 4 event counts per clip (matched onsets, onsets, matched "
                         f"peaks, peaks), got shape {list(c.shape)}")
    return c


def pooled_of(generated: np.ndarray, reference: np.ndarray, idx) -> float:
    """Pooled AV-Align of generated[idx] over reference[idx]'s (nan where the reference's is 0)."""
    from ..metrics.av_align import pooled_av_align

    den = pooled_av_align(reference[idx])
    return pooled_av_align(generated[idx]) / den if den else math.nan


def pooled_ci(counts, resamples: int = RESAMPLES) -> dict:
    """Pooled AV-Align of a set of clips, with a percentile-bootstrap CI over clips (an Interval dict)."""
    from ..metrics.av_align import pooled_av_align
    from .stats import bootstrap_statistic_ci

    c = _counts(counts, "counts")
    return bootstrap_statistic_ci(lambda idx: pooled_av_align(c[idx]), len(c), resamples=resamples).to_dict()


def pooled_ratio_ci(generated, reference, resamples: int = RESAMPLES) -> dict:
    """Pooled AV-Align of generated clips over that of their reference clips, clip i of both resampled
    together (generated clip i is made for, or scored against, reference clip i)."""
    from .stats import bootstrap_statistic_ci

    gen, ref = _counts(generated, "generated"), _counts(reference, "reference")
    if len(gen) != len(ref):
        raise ValueError(f"`generated` and `reference` must count the same clips (paired), got {len(gen)} and "
                         f"{len(ref)} rows")
    return bootstrap_statistic_ci(lambda idx: pooled_of(gen, ref, idx), len(gen), resamples=resamples).to_dict()


__all__ = ["RESAMPLES", "pooled_ci", "pooled_of", "pooled_ratio_ci"]
