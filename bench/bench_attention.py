"""Temporal-spatial attention: fused op vs the reference vs permute + SDPA + permute back.

The SDPA baseline (avfast.ops.attention.attention_sdpa) is what a model would write: q, k, v permuted
to [B*G, heads, N, D] copies, F.scaled_dot_product_attention, permuted back. On that 4-D layout
PyTorch runs its fused flash kernel (tests/test_attention.py checks it); 5-D [B, heads, G, N, D]
inputs would get its unfused math path, which materialises the N x N scores.

Shapes are the 128-px model's attention inputs (qkv = 3C channels): video [1, 128, 18, 16, 16]
and [1, 256, 18, 8, 8] (18 frames), [1, 128, 36, 16, 16] (36 test frames: joint N = 9216) and
audio [1, 128, 112]. Passes: forward, forward + backward.

Peak memory (extra_info["peak_extra_mb"], CPU): PyTorch has no CPU allocator statistics, so each
(impl, shape, mode) runs once in a fresh subprocess and reports the growth of the process's peak
resident set (ru_maxrss) across one forward call, after a warm-up call on a tiny input has loaded
every library. It includes the output (same for every impl) and whatever the impl allocates
(the reference's N x N scores, SDPA's permuted copies). On CUDA: torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from avfast.ops import attention as A
try:
    from conftest import warm_up  # under pytest (bench/ on sys.path)
except ImportError:  # imported as bench.bench_attention (the peak-memory child process)
    from bench.conftest import warm_up

VIDEO = {"v128x18x16": (1, 3 * 128, 18, 16, 16), "v256x18x8": (1, 3 * 256, 18, 8, 8),
         "v128x36x16": (1, 3 * 128, 36, 16, 16)}
CASES = [(name, mode) for name in VIDEO for mode in ("spatial", "temporal", "joint")
         if not (name == "v128x36x16" and mode != "joint")] + [("a128x112", "temporal")]
SHAPES = {**VIDEO, "a128x112": (1, 3 * 128, 112)}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


IMPLS = {"fused": lambda x, mode: A.temporal_spatial_attention(x, mode),
         "reference": lambda x, mode: A.attention_reference(x, mode),
         "sdpa": lambda x, mode: A.attention_sdpa(x, mode)}

_CHILD = r"""
import json, resource, sys, torch
from bench.bench_attention import IMPLS, SHAPES
impl, name, mode = sys.argv[1:4]
fn = IMPLS[impl]
with torch.no_grad():
    fn(torch.randn(1, 3 * 64, 2, 2, 2), mode)            # warm-up: load every library and kernel
    x = torch.randn(SHAPES[name])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn(x, mode)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps((after - before) / 1024))                # ru_maxrss is in KiB on Linux
"""


def peak_extra_mb(impl: str, name: str, mode: str) -> float:
    if DEVICE == "cuda":
        x = torch.randn(SHAPES[name], device="cuda")
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            IMPLS[impl](x, mode)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    proc = subprocess.run([sys.executable, "-c", _CHILD, impl, name, mode], capture_output=True, text=True,
                          check=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    return float(json.loads(proc.stdout.strip().splitlines()[-1]))


def _slow(impl: str, mode: str, backward: bool) -> bool:
    return mode == "joint" and (impl == "reference" or backward)


def _rounds(impl: str, name: str, mode: str, backward: bool) -> int:
    # Medians of many short rounds: the shared machine's noise (other jobs) hits single rounds.
    return 3 if _slow(impl, mode, backward) else 20


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_forward(benchmark, sync, impl, name, mode):
    x = torch.randn(SHAPES[name], device=DEVICE)
    fn = IMPLS[impl]
    benchmark.group = f"attention fwd {name} {mode}"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["peak_extra_mb"] = round(peak_extra_mb(impl, name, mode), 1)

    def run():
        with torch.no_grad():
            fn(x, mode)
        sync()

    warm_up(run, 1 if _slow(impl, mode, False) else 5)
    benchmark.pedantic(run, rounds=_rounds(impl, name, mode, False), iterations=1)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_forward_backward(benchmark, sync, impl, name, mode):
    if impl == "reference" and name == "v128x36x16" and DEVICE == "cpu":
        pytest.skip("reference fwd+bwd at N = 9216 holds several 9216^2 fp32 matrices (> 2 GB): too slow on a CPU")
    x = torch.randn(SHAPES[name], device=DEVICE, requires_grad=True)
    fn = IMPLS[impl]
    benchmark.group = f"attention fwd+bwd {name} {mode}"
    benchmark.extra_info["impl"] = impl

    def run():
        out = fn(x, mode)
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
        sync()
        return g

    warm_up(run, 1 if _slow(impl, mode, True) else 5)
    benchmark.pedantic(run, rounds=_rounds(impl, name, mode, True), iterations=1)
