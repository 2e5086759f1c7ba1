"""The one accuracy rule of the kernel tests (docs/kernels.md, "Verification without a GPU").

A result `got` in some dtype is compared with an fp64 `oracle` computed independently from the same
(rounded) inputs. Its error must be at most FACTOR x the error of PyTorch's own computation of the
same thing in that dtype (`baseline`), plus a floor tied to the oracle's own magnitude:

    error(got) <= FACTOR * error(baseline) + FLOOR_ULPS[dtype] * eps(dtype) * size(oracle)

for two error measures at once: the largest absolute error (size = max|oracle|; catches one wrong
element) and the root-mean-square error (size = rms(oracle); catches a small error everywhere, such
as a gradient off by 1 %, which the largest error cannot tell from bf16 rounding). The floor is in
units of eps(dtype) x the oracle's size, never a fixed minimum like max(1, |ref|), so small outputs
(gradients ~2w/N) get tolerances as small as they are. It matters only where PyTorch happens to be
(nearly) exact: for fp16/bf16 it is half an ulp (the output rounding any result carries); fp32
results carry many fp32 roundings, and on small outputs two correct algorithms' largest errors differ
by about an ulp by chance, so the fp32 floor is 2 ulps (still 10^4 below a 1 % error).

Without a baseline (the op under test *is* PyTorch's computation, or the dtype is fp64) the baseline
is the oracle rounded to the dtype, the best any result in that dtype can be. fp64 has no more
precise oracle: both sides carry summation-order error, which FLOOR_ULPS[fp64] bounds (2^12 ulps of
the size, ~1e-12 relative, still 10^10 below a 1 % error).
"""
from __future__ import annotations

import math

import torch

FACTOR = 2.0
FLOOR_ULPS = {torch.float16: 0.5, torch.bfloat16: 0.5, torch.float32: 2.0, torch.float64: 2.0 ** 12}


def _max_and_rms(x: torch.Tensor) -> tuple[float, float]:
    x = x.double().abs()
    if x.numel() == 0:
        return 0.0, 0.0
    return x.max().item(), math.sqrt(x.square().mean().item())


def accuracy_report(got: torch.Tensor, oracle: torch.Tensor, baseline: torch.Tensor | None = None,
                    dtype: torch.dtype | None = None,
                    floor_ulps: float | None = None) -> list[tuple[str, float, float]]:
    """[(measure, error, allowed)] for the largest and the rms error; see the module docstring."""
    dtype = got.dtype if dtype is None else dtype
    floor_ulps = FLOOR_ULPS[dtype] if floor_ulps is None else floor_ulps
    if oracle.dtype != torch.float64:
        raise TypeError(f"`oracle` must be float64 (the truth errors are measured against), got {oracle.dtype}")
    if got.shape != oracle.shape:
        raise ValueError(f"`got` must have the oracle's shape {list(oracle.shape)}, got {list(got.shape)}")
    oracle = oracle.detach().cpu()
    if baseline is None:
        baseline = oracle.to(dtype)
    err = _max_and_rms(got.detach().cpu().double() - oracle)
    base = _max_and_rms(baseline.detach().cpu().double() - oracle)
    size = _max_and_rms(oracle)
    floor = floor_ulps * torch.finfo(dtype).eps
    return [(measure, e, FACTOR * b + floor * s) for measure, e, b, s in zip(("max", "rms"), err, base, size)]


def assert_accurate(got: torch.Tensor, oracle: torch.Tensor, baseline: torch.Tensor | None = None, *,
                    what: str, dtype: torch.dtype | None = None, floor_ulps: float | None = None) -> None:
    """Fails unless `got` is within the rule of the module docstring (a NaN anywhere fails too).

    `dtype` is the precision the result is judged in (default `got.dtype`; e.g. fp32 loss rows of
    bf16 inputs are judged as fp32). `floor_ulps` replaces FLOOR_ULPS[dtype] only for a known,
    documented shortfall of a kernel (say which where it is used)."""
    floor_ulps = FLOOR_ULPS[dtype or got.dtype] if floor_ulps is None else floor_ulps
    for measure, error, allowed in accuracy_report(got, oracle, baseline, dtype, floor_ulps):
        if not error <= allowed:  # written so that NaN fails
            raise AssertionError(f"{what}: {measure} error {error:.3e} > allowed {allowed:.3e} "
                                 f"({FACTOR} x PyTorch's own + {floor_ulps} ulp of the size)")
