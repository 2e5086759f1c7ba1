"""The CUDA attention kernels (csrc/cuda/attention.cu) run on the CPU under a host emulation.

The build machines have no GPU, so the `emulated_cuda` fixture (tests/conftest.py, tests/cuda_emu)
compiles the whole `_C_cuda` (bindings and every .cu file) as host C++ with a fiber per CUDA
thread, `static` for __shared__, a scheduler switch for __syncthreads and a shared-array exchange
for __shfl_xor_sync, and installs it as the cuda backend for CPU tensors. These tests then call the
registered ops under `avfast.backend("cuda")`, so the op's own host code (`_forward_cuda`/
`_backward_cuda`: allocation, strides, workspace) and the kernels (tile indexing, masking of odd
token counts, the online softmax, the grid-stride task loop) are checked against the fp64
reference; the barriers' placement is checked by test_cuda_emulated_schedules.py (identical bits
whatever order threads and blocks run in). It
cannot check what only hardware shows (timing, coalescing, the device exp2 / conversion
intrinsics): test_attention.py::test_cuda* does, where a GPU exists; the AOT compile test checks
registers, spills and shared memory.
"""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.ops import attention as A
from avfast.ops._native import dtype_code
from _compare import assert_accurate
from _oracles import flash_attention_lse
from cuda_emu.build import set_max_grid


def emu_forward(qkv, mode, head_dim, scale):
    with avfast.backend("cuda"):
        assert A._choose(A.OP, qkv, head_dim) == "cuda"  # the emulated kernels, no fallback
        return torch.ops.avfast.temporal_spatial_attention(qkv, mode, head_dim, scale)


def emu_backward(grad_out, qkv, out, lse, mode, head_dim, scale):
    with avfast.backend("cuda"):
        return torch.ops.avfast.temporal_spatial_attention_backward(grad_out, qkv, out, lse, mode, head_dim, scale)


# Small (every thread is a real thread): odd token counts 1, 5, 7, 9, 18, 21, 45, 70 > one tile; 32 and 33
# on either side of the forward's short-sequence tiles (ShortFwdTiles, N <= 32).
CASES = [
    ((1, 3 * 32, 32, 1, 1), 16, "temporal"),
    ((1, 3 * 64, 33, 1, 1), 64, "temporal"),
    ((1, 3 * 64, 1, 1, 1), 64, "spatial"),
    ((2, 3 * 64, 5, 3, 3), 32, "spatial"),
    ((1, 3 * 64, 5, 3, 3), 32, "temporal"),
    ((1, 3 * 64, 5, 3, 3), 64, "joint"),
    ((1, 3 * 64, 18, 2, 1), 64, "temporal"),
    ((1, 3 * 32, 2, 5, 7), 16, "spatial"),
    ((1, 3 * 128, 3, 2, 3), 128, "joint"),
    ((1, 3 * 64, 70), 64, "temporal"),
    ((2, 3 * 32, 7), 32, "joint"),
]
IDS = [f"{m}-{'x'.join(map(str, s))}-d{d}" for s, d, m in CASES]


def _check(qkv, mode, head_dim, dtype, scale=None):
    """Output, lse and gradient against the fp64 reference under tests/_compare.py's rule, with
    PyTorch's fused SDPA in `dtype` as its own computation (for the lse: the flash kernel's lse)."""
    scale = A.default_scale(head_dim) if scale is None else scale
    x = qkv.to(dtype)
    out, lse = emu_forward(x, mode, head_dim, scale)
    ref_out, ref_lse = A.attention_reference_with_lse(x.double(), mode, head_dim, scale)
    xb = x.detach().clone().requires_grad_()
    base_out = A.attention_sdpa(xb, mode, head_dim, scale)
    assert_accurate(out, ref_out, base_out, what=f"emulated cuda {dtype} out")
    assert_accurate(lse, ref_lse, flash_attention_lse(x, mode, head_dim, scale), what=f"emulated cuda {dtype} lse")
    g = torch.randn(ref_out.shape, dtype=torch.float64).to(dtype)
    got = emu_backward(g, x, out, lse, mode, head_dim, scale)
    want = A.attention_backward_reference(g.double(), x.double(), ref_out, ref_lse, mode, head_dim, scale)
    (base_grad,) = torch.autograd.grad(base_out, xb, g)
    assert_accurate(got, want, base_grad, what=f"emulated cuda {dtype} grad")


@pytest.mark.parametrize("shape,head_dim,mode", CASES, ids=IDS)
def test_emulated_fp32(emulated_cuda, shape, head_dim, mode):
    _check(torch.randn(shape), mode, head_dim, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", [2, 4, 9], ids=[IDS[i] for i in (2, 4, 9)])
def test_emulated_16bit(emulated_cuda, case, dtype):
    shape, head_dim, mode = CASES[case]
    _check(torch.randn(shape), mode, head_dim, dtype)


def test_emulated_noncontiguous_and_one_block(emulated_cuda):
    # channels-last-like strides and a sliced batch for qkv; the whole grid folded into one block.
    big = torch.randn(2, 5, 3, 4, 3 * 32)
    x = big.permute(0, 4, 1, 2, 3)[::2]
    previous = set_max_grid(emulated_cuda, 1)
    try:
        for mode in ("spatial", "temporal", "joint"):
            _check(x, mode, 32, torch.float32, scale=0.3)
    finally:
        set_max_grid(emulated_cuda, previous)


def test_emulated_fp16_large_logits(emulated_cuda):
    x = (torch.randn(1, 3 * 64, 4, 4, 4) * 30).half()
    out, _ = emu_forward(x, "joint", 64, A.default_scale(64))
    want = A.attention_reference(x.double(), "joint", 64)
    assert torch.isfinite(out).all()
    assert_accurate(out, want, A.attention_sdpa(x, "joint", 64), what="emulated cuda fp16 large logits")


def test_emulated_launcher_rejects_unsupported(emulated_cuda):
    """The C++ launcher's own checks (the Python layer never sends these; a direct caller might)."""
    def call(x, head_dim):
        out, lse = A._empty_outputs(x, "temporal", head_dim)
        emulated_cuda.attention_forward(dtype_code(x), x.data_ptr(), out.data_ptr(), lse.data_ptr(),
                                        A._native_sizes(x, "temporal", head_dim), A._strides(x, "temporal"),
                                        A._strides(out, "temporal"), 0.1, 0)

    with pytest.raises(ValueError, match="head_dim must be 16, 32, 64 or 128, got 48"):
        call(torch.randn(1, 3 * 48, 5), 48)
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        call(torch.randn(1, 3 * 32, 5, dtype=torch.float64), 32)
