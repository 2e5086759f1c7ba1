"""Temporal-spatial attention: fused op vs the reference vs permute + SDPA + permute back.

The SDPA baseline (avfast.ops.attention.attention_sdpa) is what a model would write: q, k, v permuted
to [B*G, heads, N, D] copies, F.scaled_dot_product_attention, permuted back. On that 4-D layout
PyTorch runs its fused flash kernel (tests/test_attention.py checks it); 5-D [B, heads, G, N, D]
inputs would get its unfused math path, which materialises the N x N scores.

Shapes are the 128-px model's attention inputs (qkv = 3C channels): video [1, 128, 18, 16, 16]
and [1, 256, 18, 8, 8] (18 frames), [1, 128, 36, 16, 16] (36 test frames: joint N = 9216) and
audio [1, 128, 112]. Passes: forward, forward + backward.

On a GPU every backend of the op is timed side by side, in fp32 and bf16: "fused" (the default the
op picks: Triton for 16-bit tensors where it is installed, by the roofline estimate in docs/kernels.md),
"cuda" (the CUDA kernel, fp32 FMA), "triton" (tensor cores through tl.dot) and "xformers" (its
memory-efficient kernel on the same [B*G, N, heads, D] problems), each forced with avfast.backend;
a backend that is not built or installed skips with the reason. Peak memory is the harness's
(bench/_memory.py: torch.cuda.max_memory_allocated, on CPU the resident-set high-water mark).
"""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.backends import why_unavailable
from avfast.ops import attention as A
from conftest import warm_up

VIDEO = {"v128x18x16": (1, 3 * 128, 18, 16, 16), "v256x18x8": (1, 3 * 256, 18, 8, 8),
         "v128x36x16": (1, 3 * 128, 36, 16, 16)}
CASES = [(name, mode) for name in VIDEO for mode in ("spatial", "temporal", "joint")
         if not (name == "v128x36x16" and mode != "joint")] + [("a128x112", "temporal")]
SHAPES = {**VIDEO, "a128x112": (1, 3 * 128, 112)}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


IMPLS = {"fused": lambda x, mode: A.temporal_spatial_attention(x, mode),
         "reference": lambda x, mode: A.attention_reference(x, mode),
         "sdpa": lambda x, mode: A.attention_sdpa(x, mode)}
GPU_BACKENDS = ("cuda", "triton", "xformers")  # forced one by one: which one should be the default?


def _forced(name: str):
    def run(x, mode):
        with avfast.backend(name):
            return A.temporal_spatial_attention(x, mode)
    return run


if DEVICE == "cuda":
    IMPLS.update({name: _forced(name) for name in GPU_BACKENDS})
DTYPES = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if DEVICE == "cuda" else {})}


def _input(name: str, dtype: str, impl: str, requires_grad: bool = False) -> torch.Tensor:
    if impl in GPU_BACKENDS:
        why = why_unavailable(impl, torch.device(DEVICE))
        if why is not None:
            pytest.skip(f"backend {impl!r} cannot run here: {why}")
    return torch.randn(SHAPES[name], device=DEVICE, dtype=DTYPES[dtype], requires_grad=requires_grad)


def _slow(impl: str, mode: str, backward: bool) -> bool:
    return mode == "joint" and (impl == "reference" or backward)


def _rounds(impl: str, name: str, mode: str, backward: bool) -> int:
    # Medians of many short rounds: the shared machine's noise (other jobs) hits single rounds.
    return 3 if _slow(impl, mode, backward) else 20


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_forward(benchmark, sync, impl, dtype, name, mode):
    x = _input(name, dtype, impl)
    fn = IMPLS[impl]
    benchmark.group = f"attention fwd {name} {mode}" + ("" if dtype == "fp32" else f" {dtype}")
    benchmark.extra_info.update(impl=impl, dtype=dtype)

    def run():
        with torch.no_grad():
            fn(x, mode)
        sync()

    warm_up(run, 1 if _slow(impl, mode, False) else 5)
    benchmark.pedantic(run, rounds=_rounds(impl, name, mode, False), iterations=1)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_forward_backward(benchmark, sync, impl, dtype, name, mode):
    if impl == "reference" and name == "v128x36x16" and DEVICE == "cpu":
        pytest.skip("reference fwd+bwd at N = 9216 holds several 9216^2 fp32 matrices (> 2 GB): too slow on a CPU")
    x = _input(name, dtype, impl, requires_grad=True)
    fn = IMPLS[impl]
    benchmark.group = f"attention fwd+bwd {name} {mode}" + ("" if dtype == "fp32" else f" {dtype}")
    benchmark.extra_info.update(impl=impl, dtype=dtype)

    def run():
        out = fn(x, mode)
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
        sync()
        return g

    warm_up(run, 1 if _slow(impl, mode, True) else 5)
    benchmark.pedantic(run, rounds=_rounds(impl, name, mode, True), iterations=1)
