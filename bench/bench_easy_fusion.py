"""Easy fusion: fused kernel vs the PyTorch reference, forward and forward+backward.

Shapes are the 128-px CMMD model's fusion points (latent 16x16, 18 frames / 112 mel steps at
training, 36 frames / 224 steps at test time) at batch 1 and 8.
"""
from __future__ import annotations

import pytest
import torch

import avfast
from conftest import warm_up
from avfast.ops import easy_fusion, easy_fusion_reference

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
FUSED = "cuda" if HAS_CUDA else "cpu"

# (B, Cv, F, H, W, Ca, T)
SHAPES = {
    "L1 v[1,128,18,16,16] a[1,128,112]": (1, 128, 18, 16, 16, 128, 112),
    "L2 v[1,256,18,8,8] a[1,256,56]": (1, 256, 18, 8, 8, 256, 56),
    "36f v[1,128,36,16,16] a[1,128,224]": (1, 128, 36, 16, 16, 128, 224),
    "B8 v[8,128,18,16,16] a[8,128,112]": (8, 128, 18, 16, 16, 128, 112),
}
IMPLS = {"fused": FUSED, "reference": "reference"}
if HAS_CUDA and avfast.backends.why_unavailable("triton", torch.device("cuda")) is None:
    IMPLS["triton"] = "triton"


def _inputs(shape, dtype, requires_grad):
    B, Cv, Fr, H, W, Ca, T = shape
    v = torch.randn(B, Cv, Fr, H, W, device=DEVICE, dtype=dtype, requires_grad=requires_grad)
    a = torch.randn(B, Ca, T, device=DEVICE, dtype=dtype, requires_grad=requires_grad)
    return v, a


def _fn(impl):
    return easy_fusion_reference if impl == "reference" else easy_fusion


def _bytes(shape, dtype, backward: bool) -> int:
    B, Cv, Fr, H, W, Ca, T = shape
    elem = torch.finfo(dtype).bits // 8
    v, a = B * Cv * Fr * H * W, B * Ca * T
    vf, af = B * (Cv + Ca) * Fr * H * W, B * (Ca + Cv) * T
    fwd = v + a + vf + af
    return elem * (fwd + (vf + af + v + a if backward else 0))


@pytest.mark.parametrize("impl", list(IMPLS))  # varies fastest: a group's cases run back to back
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_easy_fusion_forward(benchmark, sync, impl, shape_name, dtype):
    shape = SHAPES[shape_name]
    v, a = _inputs(shape, dtype, requires_grad=False)
    fn = _fn(impl)

    def run():
        out = fn(v, a)
        sync()
        return out

    benchmark.group = f"easy_fusion fwd {str(dtype)[6:]} {shape_name}"
    benchmark.extra_info.update(impl=impl, bytes=_bytes(shape, dtype, backward=False))
    with avfast.backend(IMPLS[impl]):
        warm_up(run)
        benchmark(run)


@pytest.mark.parametrize("impl", list(IMPLS))  # varies fastest: a group's cases run back to back
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_easy_fusion_forward_backward(benchmark, sync, impl, shape_name, dtype):
    shape = SHAPES[shape_name]
    v, a = _inputs(shape, dtype, requires_grad=True)
    fn = _fn(impl)
    with torch.no_grad():
        grads = [torch.randn_like(t) for t in easy_fusion_reference(v, a)]

    def run():
        out = fn(v, a)
        result = torch.autograd.grad(out, (v, a), grads)
        sync()
        return result

    benchmark.group = f"easy_fusion fwd+bwd {str(dtype)[6:]} {shape_name}"
    benchmark.extra_info.update(impl=impl, bytes=_bytes(shape, dtype, backward=True))
    with avfast.backend(IMPLS[impl]):
        warm_up(run)
        benchmark(run)
