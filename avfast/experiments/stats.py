"""Statistics over per-clip scores: bootstrap confidence intervals and a paired test.

Scores of one row are one number per held-out clip, so the unit of resampling is the clip. Two models
scored on the same clips (and the same sampling noise) are compared clip by clip: the paired test
looks at the differences d_i = a_i - b_i.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

EXACT_SIGN_FLIP_MAX_N = 16  # 2^16 sign patterns: enumerate them all below this many non-zero differences


def _as_scores(name: str, values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of scores, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` must hold finite scores, got {x[~np.isfinite(x)][:3].tolist()} among them")
    return x


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> Interval:
    """Mean and percentile-bootstrap confidence interval of the mean (clips resampled with replacement)."""
    x = _as_scores("values", values)
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"`resamples` must be >= 1, got {resamples!r}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(x.mean()), float(low), float(high), int(x.size))


def sign_flip_p_value(differences: Sequence[float], resamples: int = 20_000, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(d) = 0: under the null each d_i's sign is a coin flip.

    Exact (every sign pattern) for up to EXACT_SIGN_FLIP_MAX_N non-zero differences, else Monte Carlo with
    the observed pattern counted (so p >= 1 / (resamples + 1)). Zero differences carry no sign and drop out.
    """
    d = _as_scores("differences", differences)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-12 * np.abs(d).sum()  # equal sums computed in another order must still count as "as extreme"
    if d.size <= EXACT_SIGN_FLIP_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, d.size))
    extreme = int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (extreme + 1) / (resamples + 1)


@dataclass
class PairedResult:
    mean_difference: float   # mean of a - b over the clips
    low: float               # bootstrap CI of the mean difference
    high: float
    n: int
    p_sign_flip: float       # paired permutation test (no distributional assumption)
    p_wilcoxon: float | None  # scipy's Wilcoxon signed-rank (zero_method="zsplit"); None without scipy or if all d = 0
    wins: int                # clips where a > b
    losses: int              # clips where a < b

    def to_dict(self) -> dict:
        return asdict(self)


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, seed: int = 0) -> PairedResult:
    """Compares two models scored on the same clips: mean difference a - b with a bootstrap CI, a sign-flip
    permutation p-value and (when scipy is installed) the Wilcoxon signed-rank p-value."""
    x, y = _as_scores("a", a), _as_scores("b", b)
    if x.shape != y.shape:
        raise ValueError(f"paired_test: `a` and `b` must score the same clips, got {x.size} and {y.size} scores")
    d = x - y
    ci = bootstrap_ci(d, confidence, seed=seed)
    return PairedResult(ci.mean, ci.low, ci.high, ci.n, sign_flip_p_value(d, seed=seed), _wilcoxon(d),
                        int(np.sum(d > 0)), int(np.sum(d < 0)))


def _wilcoxon(d: np.ndarray) -> float | None:
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return None
    if not np.any(d != 0):
        return None
    p = float(wilcoxon(d, zero_method="zsplit").pvalue)
    return p if math.isfinite(p) else None


def bootstrap_ratio_ci(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95,
                       resamples: int = 10_000, seed: int = 0) -> Interval | None:
    """mean(numerator) / mean(denominator) with a paired percentile-bootstrap CI: the same clips are drawn
    for both (clip i's two scores stay together). None when the denominator's mean is 0; resamples whose
    denominator mean is 0 are left out of the interval."""
    a, b = _as_scores("numerator", numerator), _as_scores("denominator", denominator)
    if a.shape != b.shape:
        raise ValueError(f"bootstrap_ratio_ci: the two sequences must score the same clips, got {a.size} and {b.size}")
    if b.mean() == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ratios = num[den != 0] / den[den != 0]
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return Interval(float(a.mean() / b.mean()), float(low), float(high), int(a.size))


def bootstrap_independent_ratio_ci(numerator: Sequence[float], denominator: Sequence[float],
                                   confidence: float = 0.95, resamples: int = 10_000,
                                   seed: int = 0) -> Interval | None:
    """mean(numerator) / mean(denominator) of two independent sets of clips (e.g. long clips against
    one-window clips), with a percentile-bootstrap CI that resamples each set on its own. None when the
    denominator's mean is 0; resamples whose denominator mean is 0 are left out. `n` is the numerator's."""
    a, b = _as_scores("numerator", numerator), _as_scores("denominator", denominator)
    if b.mean() == 0:
        return None
    rng = np.random.default_rng(seed)
    num = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    den = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    ratios = num[den != 0] / den[den != 0]
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return Interval(float(a.mean() / b.mean()), float(low), float(high), int(a.size))


def _finite_percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap values, leaving out the non-finite ones (a ratio's resample with
    a zero denominator says nothing); nan, nan when none is finite."""
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_statistic_ci(statistic, n: int, confidence: float = 0.95, resamples: int = 200,
                           seed: int = 0, bias_corrected: bool = False) -> Interval:
    """A statistic of n clips (`statistic(indices)` -> float, called on arange(n) for the estimate) with a
    percentile-bootstrap CI over clips drawn with replacement, for statistics that are not a mean (FD, a
    ratio of pooled scores). Resamples where the statistic is not finite (a zero denominator) are left out.

    bias_corrected: shift the interval by the bootstrap's estimate of the statistic's bias (mean of the
    resamples - the estimate), clipped at 0 below. For FD: a resample repeats clips, which raises FD by
    more than its spread when frames are few against the feature's dimension, so the plain percentile
    interval can lie wholly above the estimate."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap_statistic_ci: need n >= 1 and resamples >= 1, got {n}, {resamples}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=np.float64)
    estimate = float(statistic(np.arange(n)))
    low, high = _finite_percentiles(values, confidence)
    if bias_corrected:
        bias = values[np.isfinite(values)].mean() - estimate
        low, high = max(low - bias, 0.0), max(high - bias, 0.0)
    return Interval(estimate, float(low), float(high), int(n))


def bootstrap_two_sets_ci(statistic, n_a: int, n_b: int, confidence: float = 0.95, resamples: int = 2000,
                          seed: int = 0) -> Interval:
    """A statistic of two independent sets of clips (`statistic(indices_a, indices_b)` -> float; e.g. a ratio of
    long clips' and one-window clips' pooled scores), with a percentile-bootstrap CI that resamples each set
    on its own. Resamples where the statistic is not finite (a zero denominator) are left out."""
    if n_a < 1 or n_b < 1 or resamples < 1:
        raise ValueError(f"bootstrap_two_sets_ci: need n_a, n_b, resamples >= 1, got {n_a}, {n_b}, {resamples}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n_a, size=n_a), rng.integers(0, n_b, size=n_b))
                       for _ in range(resamples)], dtype=np.float64)
    low, high = _finite_percentiles(values, confidence)
    return Interval(float(statistic(np.arange(n_a), np.arange(n_b))), low, high, int(n_a))
