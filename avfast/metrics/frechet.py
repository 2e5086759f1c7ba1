"""Fréchet distance (the maths of FAD / FVD) and KID / KVD (unbiased polynomial-kernel MMD²).

Both work on embeddings [N, D] from any extractor (see avfast.metrics.embeddings), per set and,
as in CMMD's Fig. 4, per sample: each generated sample's own frame embeddings [n_i, D] against
the reference set's statistics.  Computed in float64 NumPy; no SciPy needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

Embeddings = Union[np.ndarray, torch.Tensor]


def _as_2d(x: Embeddings, name: str, min_rows: int) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected embeddings [N, D], got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: need at least {min_rows} embeddings, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: embeddings contain NaN or inf")
    return arr


def gaussian_stats(x: Embeddings, name: str = "x") -> Tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) with the unbiased (N-1) normaliser, as the FAD/FVD toolkits."""
    arr = _as_2d(x, name, min_rows=2)
    return arr.mean(axis=0), np.cov(arr, rowvar=False).reshape(arr.shape[1], arr.shape[1])


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½).

    tr((S1 S2)^½) = tr((S1^½ S2 S1^½)^½): the inner matrix is symmetric PSD, so its eigenvalues are
    real and >= 0 -- stabler than scipy.linalg.sqrtm of the non-symmetric product.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"stats: dimension mismatch: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    s1h = _sqrtm_psd(sigma1)
    inner = s1h @ sigma2 @ s1h
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean, 0.0))


def frechet_distance(x: Embeddings, y: Embeddings) -> float:
    """Fréchet distance between Gaussians fitted to embedding sets x [N, D] and y [M, D]."""
    ax, ay = _as_2d(x, "x", 2), _as_2d(y, "y", 2)
    if ax.shape[1] != ay.shape[1]:
        raise ValueError(f"x, y: embedding sizes differ: {ax.shape[1]} vs {ay.shape[1]}")
    return frechet_distance_from_stats(*gaussian_stats(ax, "x"), *gaussian_stats(ay, "y"))


def per_sample_frechet_distance(samples: Sequence[Embeddings], reference: Embeddings) -> List[float]:
    """One FD per sample: each sample's frame embeddings [n_i >= 2, D] against the reference set."""
    mu_r, sig_r = gaussian_stats(reference, "reference")
    out = []
    for i, s in enumerate(samples):
        mu, sig = gaussian_stats(s, f"samples[{i}]")
        if mu.shape != mu_r.shape:
            raise ValueError(f"samples[{i}]: embedding size {mu.shape[0]} != reference {mu_r.shape[0]}")
        out.append(frechet_distance_from_stats(mu, sig, mu_r, sig_r))
    return out


def _poly_kernel(a: np.ndarray, b: np.ndarray, degree: int, gamma: Optional[float], coef0: float):
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    return (gamma * (a @ b.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: Optional[float] = None,
                  coef0: float = 1.0) -> float:
    """Unbiased MMD² with k(a, b) = (a·b / D + 1)³ (Bińkowski et al. 2018): diagonals excluded."""
    m, n = x.shape[0], y.shape[0]
    kxx = _poly_kernel(x, x, degree, gamma, coef0)
    kyy = _poly_kernel(y, y, degree, gamma, coef0)
    kxy = _poly_kernel(x, y, degree, gamma, coef0)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


@dataclass
class KernelDistance:
    mean: float
    std: float
    n_subsets: int
    subset_size: int


def kernel_distance(x: Embeddings, y: Embeddings, subset_size: int = 1000, n_subsets: int = 100,
                    seed: int = 0) -> KernelDistance:
    """KID / KVD: unbiased polynomial-kernel MMD² averaged over random subsets (the standard
    protocol: 100 subsets of min(1000, N, M) without replacement).  Can be slightly negative."""
    ax, ay = _as_2d(x, "x", 2), _as_2d(y, "y", 2)
    if ax.shape[1] != ay.shape[1]:
        raise ValueError(f"x, y: embedding sizes differ: {ax.shape[1]} vs {ay.shape[1]}")
    if subset_size < 2 or n_subsets < 1:
        raise ValueError(f"subset_size >= 2 and n_subsets >= 1 expected, got {subset_size}, {n_subsets}")
    size = min(subset_size, ax.shape[0], ay.shape[0])
    if size == ax.shape[0] and size == ay.shape[0]:
        n_subsets = 1  # every subset would be the full sets: one evaluation is exact
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        ix = rng.choice(ax.shape[0], size, replace=False)
        iy = rng.choice(ay.shape[0], size, replace=False)
        vals.append(mmd2_unbiased(ax[ix], ay[iy]))
    return KernelDistance(float(np.mean(vals)), float(np.std(vals)), n_subsets, size)


def per_sample_kernel_distance(samples: Sequence[Embeddings], reference: Embeddings) -> List[float]:
    """One unbiased MMD² per sample: its frame embeddings [n_i >= 2, D] against the whole reference
    set (the unbiased estimator allows unequal sizes, so no subsetting is needed)."""
    ref = _as_2d(reference, "reference", 2)
    out = []
    for i, s in enumerate(samples):
        arr = _as_2d(s, f"samples[{i}]", 2)
        if arr.shape[1] != ref.shape[1]:
            raise ValueError(f"samples[{i}]: embedding size {arr.shape[1]} != reference {ref.shape[1]}")
        out.append(mmd2_unbiased(arr, ref))
    return out
