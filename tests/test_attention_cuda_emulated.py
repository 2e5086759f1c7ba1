"""The CUDA attention kernels (csrc/cuda/attention.cu) run on the CPU under a host emulation.

The build machines have no GPU, so tests/cuda_emu compiles the very .cu file as host C++ with a
thread per CUDA thread (std::thread), `static` for __shared__, a barrier for __syncthreads and a
shared-array exchange for __shfl_xor_sync (tests/cuda_emu/include/emu.h). That checks the tile
indexing, masking of odd token counts, the online softmax, the barriers' placement (a missing one
shows up as a race between real threads), the grid-stride task loop and the stride handling against
the fp64 reference. It cannot check what only hardware shows (timing, coalescing, the device exp2 /
conversion intrinsics): test_attention.py::test_cuda* does, where a GPU exists; the AOT compile test
checks registers, spills and shared memory.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from avfast.ops import attention as A
from avfast.ops._native import dtype_code

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests" / "cuda_emu" / "attention_emu.cpp", ROOT / "csrc" / "cuda" / "attention.cu",
           ROOT / "tests" / "cuda_emu" / "include" / "emu.h", ROOT / "csrc" / "include" / "avfast" / "attention.h"]


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to build the CUDA emulation")
    lib = tmp_path_factory.mktemp("cuda_emu") / "attention_emu.so"
    proc = subprocess.run([cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread",
                           f"-I{ROOT / 'tests' / 'cuda_emu' / 'include'}", f"-I{ROOT / 'csrc'}",
                           f"-I{ROOT / 'csrc' / 'include'}", str(SOURCES[0]), "-o", str(lib)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"building the CUDA emulation failed:\n{proc.stderr[-4000:]}"
    so = ctypes.CDLL(str(lib))
    i64p = ctypes.POINTER(ctypes.c_int64)
    vp = ctypes.c_void_p
    so.emu_attention_forward.argtypes = [ctypes.c_int, vp, vp, vp, i64p, i64p, i64p, ctypes.c_double, ctypes.c_uint,
                                         ctypes.c_char_p, ctypes.c_int]
    so.emu_attention_backward.argtypes = [ctypes.c_int, vp, vp, vp, vp, vp, vp, i64p, i64p, i64p, i64p, i64p,
                                          ctypes.c_double, ctypes.c_uint, ctypes.c_char_p, ctypes.c_int]
    return so


def _arr(xs):
    return (ctypes.c_int64 * len(xs))(*xs)


def _call(fn, *args):
    err = ctypes.create_string_buffer(512)
    if fn(*args, err, len(err)):
        raise ValueError(err.value.decode())


def emu_forward(so, qkv, mode, head_dim, scale, max_grid=3):
    out, lse = A._empty_outputs(qkv, mode, head_dim)
    _call(so.emu_attention_forward, dtype_code(qkv), qkv.data_ptr(), out.data_ptr(), lse.data_ptr(),
          _arr(A._native_sizes(qkv, mode, head_dim)), _arr(A._strides(qkv, mode)), _arr(A._strides(out, mode)),
          scale, max_grid)
    return out, lse


def emu_backward(so, grad_out, qkv, out, lse, mode, head_dim, scale, max_grid=3):
    # The same allocation as avfast.ops.attention._backward_cuda.
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    lse = lse.contiguous()
    delta = torch.empty_like(lse)
    _call(so.emu_attention_backward, dtype_code(qkv), grad_out.data_ptr(), qkv.data_ptr(), out.data_ptr(),
          lse.data_ptr(), delta.data_ptr(), grad_qkv.data_ptr(), _arr(A._native_sizes(qkv, mode, head_dim)),
          _arr(A._strides(grad_out, mode)), _arr(A._strides(qkv, mode)), _arr(A._strides(out, mode)),
          _arr(A._strides(grad_qkv, mode)), scale, max_grid)
    return grad_qkv


# Small (every thread is a real thread): odd token counts 1, 5, 7, 9, 18, 21, 45, 70 > one tile.
CASES = [
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


def _check(so, qkv, mode, head_dim, dtype, fwd_tol, bwd_tol, scale=None, max_grid=3):
    scale = A.default_scale(head_dim) if scale is None else scale
    x = qkv.to(dtype)
    out, lse = emu_forward(so, x, mode, head_dim, scale, max_grid)
    ref_out, ref_lse = A.attention_reference_with_lse(x.double(), mode, head_dim, scale)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_out, atol=fwd_tol, rtol=fwd_tol)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-4, rtol=1e-5)
    g = torch.randn(ref_out.shape, dtype=torch.float64).to(dtype)
    got = emu_backward(so, g, x, out, lse, mode, head_dim, scale, max_grid)
    want = A.attention_backward_reference(g.double(), x.double(), ref_out, ref_lse, mode, head_dim, scale)
    gmax = want.abs().max().item()
    torch.testing.assert_close(got.double() / gmax, want / gmax, atol=bwd_tol, rtol=0)


@pytest.mark.parametrize("shape,head_dim,mode", CASES, ids=IDS)
def test_emulated_fp32(emu, shape, head_dim, mode):
    _check(emu, torch.randn(shape), mode, head_dim, torch.float32, 2e-5, 2e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", [0, 2, 7], ids=[IDS[i] for i in (0, 2, 7)])
def test_emulated_16bit(emu, case, dtype, tol):
    shape, head_dim, mode = CASES[case]
    _check(emu, torch.randn(shape), mode, head_dim, dtype, tol, 2 * tol)


def test_emulated_noncontiguous_and_one_block(emu):
    # channels-last-like strides and a sliced batch for qkv; the whole grid folded into one block.
    big = torch.randn(2, 5, 3, 4, 3 * 32)
    x = big.permute(0, 4, 1, 2, 3)[::2]
    for mode in ("spatial", "temporal", "joint"):
        _check(emu, x, mode, 32, torch.float32, 2e-5, 2e-5, scale=0.3, max_grid=1)


def test_emulated_fp16_large_logits(emu):
    x = (torch.randn(1, 3 * 64, 4, 4, 4) * 30).half()
    out, _ = emu_forward(emu, x, "joint", 64, A.default_scale(64))
    want = A.attention_reference(x.double(), "joint", 64)
    assert torch.isfinite(out).all()
    assert (out.double() - want).abs().max().item() <= 2e-3 * want.abs().max().item()


def test_emulated_rejects_unsupported(emu):
    x = torch.randn(1, 3 * 48, 5)
    with pytest.raises(ValueError, match="head_dim must be 16, 32, 64 or 128, got 48"):
        emu_forward(emu, x, "temporal", 48, 0.1)
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        emu_forward(emu, torch.randn(1, 3 * 32, 5, dtype=torch.float64), "temporal", 32, 0.1)
