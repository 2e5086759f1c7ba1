"""The CPU attention's portable path (what non-x86 and pre-AVX-512 CPUs run) against the fp64 oracle.

CI machines have AVX-512, so without forcing it the portable micro-kernels would never run here:
AVFAST_ATTN_CPU_KERNEL=portable (read at every call) selects them. A second test compiles every
CPU attention file (csrc/cpu/attention*.cpp: the driver and each kernel family) with AVFAST_NO_AVX512,
the configuration of a non-x86 build: each must build without <immintrin.h>.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import avfast
from avfast.ops import attention as A

ROOT = Path(__file__).resolve().parents[1]
# Odd token counts (1, 7, 18, 70 > one 64-token tile), every mode, head dims 32 and 64, strided input.
CASES = [
    ((1, 3 * 64, 5, 3, 3), 64, "spatial"),
    ((2, 3 * 64, 18, 2, 2), 32, "temporal"),
    ((1, 3 * 64, 2, 5, 7), 64, "joint"),
    ((1, 3 * 64, 1, 1, 1), 64, "joint"),
    ((2, 3 * 64, 70), 64, "spatial"),
]
IDS = [f"{m}-{'x'.join(map(str, s))}-d{d}" for s, d, m in CASES]
# Error allowed relative to the reference's largest magnitude: fp32 arithmetic over <= 70 tokens, and
# one rounding of the output to fp16 / bf16 (2^-11, 2^-8) with headroom for the fp32 accumulation.
REL_TOL = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _run(qkv, mode, head_dim, scale, grad_out):
    with avfast.backend("cpu"):
        out, lse = torch.ops.avfast.temporal_spatial_attention(qkv, mode, head_dim, scale)
        grad = torch.ops.avfast.temporal_spatial_attention_backward(grad_out, qkv, out, lse, mode, head_dim, scale)
    return out, lse, grad


def _close(got: torch.Tensor, want: torch.Tensor, rel: float, what: str) -> None:
    err = (got.double() - want).abs().max().item()
    bound = rel * want.abs().max().item()
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g} ({rel} x max |reference|)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape,head_dim,mode", CASES, ids=IDS)
def test_portable_path_matches_reference(monkeypatch, shape, head_dim, mode, dtype):
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", "portable")
    base = torch.randn(shape[0], *shape[2:], 2 * shape[1])  # channels last, every other channel: strided
    qkv = base.movedim(-1, 1)[:, ::2].to(dtype)
    scale = A.default_scale(head_dim)
    ref_out, ref_lse = A.attention_reference_with_lse(qkv.double(), mode, head_dim, scale)
    grad_out = torch.randn(ref_out.shape, dtype=torch.float64).to(dtype)
    ref_grad = A.attention_backward_reference(grad_out.double(), qkv.double(), ref_out, ref_lse, mode, head_dim,
                                              scale)
    out, lse, grad = _run(qkv, mode, head_dim, scale, grad_out)
    _close(out, ref_out, REL_TOL[dtype], "out")
    _close(lse, ref_lse, 2e-6, "lse")
    _close(grad, ref_grad, 2 * REL_TOL[dtype], "grad_qkv")


def test_forcing_the_portable_path_changes_the_kernel(monkeypatch):
    """The variable reaches the C++ code: the portable kernels round differently from the AVX-512 ones."""
    if "avx512f" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU has no AVX-512: the portable path is the only one, so there is nothing to switch")
    qkv = torch.randn(1, 3 * 64, 4, 8, 8)
    scale = A.default_scale(64)
    grad_out = torch.randn(1, 64, 4, 8, 8)
    default = _run(qkv, "spatial", 64, scale, grad_out)
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", "portable")
    portable = _run(qkv, "spatial", 64, scale, grad_out)
    assert not torch.equal(default[0], portable[0]) or not torch.equal(default[2], portable[2])


# The driver and every kernel file (attention_{fwd,bwd}_{tiles,lanes,cols}.cpp), not the pybind11 binder.
ATTENTION_CPU_SOURCES = sorted(p for p in (ROOT / "csrc" / "cpu").glob("attention*.cpp") if p.stem != "attention_bind")


def test_every_attention_source_is_checked():
    names = {p.name for p in ATTENTION_CPU_SOURCES}
    assert {"attention.cpp", "attention_fwd_tiles.cpp", "attention_bwd_cols.cpp"} <= names, names


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler (g++) to compile the file")
@pytest.mark.parametrize("source", ATTENTION_CPU_SOURCES, ids=lambda p: p.name)
def test_builds_without_avx512_code(source):
    """A non-x86 build (simulated by AVFAST_NO_AVX512) compiles and never includes <immintrin.h>."""
    cmd = ["g++", "-std=c++17", "-fopenmp", f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc' / 'include'}", "-DAVFAST_NO_AVX512",
           str(source)]
    proc = subprocess.run([*cmd, "-fsyntax-only", "-Wall", "-Wextra", "-Werror"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pre = subprocess.run([*cmd, "-E"], capture_output=True, text=True)
    assert pre.returncode == 0, pre.stderr[-4000:]
    assert "immintrin.h" not in pre.stdout and "_mm512" not in pre.stdout
