"""Which backend runs attention on CUDA tensors by default: Triton (tensor cores) for fp16/bf16, the
CUDA C++ kernel (fp32 FMA) for fp32 — the roofline rule in avfast/ops/attention.py and docs/kernels.md."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import avfast
from avfast import backends
from avfast.ops import attention as A
from conftest import HAS_TRITON, requires_cuda


@pytest.fixture
def cuda_selected(monkeypatch):
    """No GPU here: CPU tensors stand in for CUDA ones (the GPU kernels' declarations are moved to the "cpu"
    device type, the CPU kernel's removed) and every backend is present, as on a GPU with the extension built."""
    kernels = {name: dataclasses.replace(k, devices=("cpu",) if "cuda" in k.devices else ())
               for name, k in A.KERNELS.items()}
    monkeypatch.setattr(A, "KERNELS", kernels)
    monkeypatch.setattr(backends, "why_unavailable", lambda name, device: None)


@pytest.mark.parametrize("dtype,want", [(torch.float16, "triton"), (torch.bfloat16, "triton"),
                                        (torch.float32, "cuda")], ids=["fp16", "bf16", "fp32"])
def test_default_by_dtype(cuda_selected, dtype, want):
    assert A._choose(A.OP, torch.empty(1, 3 * 64, 5, dtype=dtype), 64) == want


def test_forced_cuda_stays_cuda(cuda_selected):
    with avfast.backend("cuda"):
        assert A._choose(A.OP, torch.empty(1, 3 * 64, 5, dtype=torch.bfloat16), 64) == "cuda"


def test_without_triton_16bit_stays_on_cuda(cuda_selected, monkeypatch):
    monkeypatch.setattr(backends, "why_unavailable", lambda name, device: "Triton is not installed" if name == "triton"
                        else None)
    assert A._choose(A.OP, torch.empty(1, 3 * 64, 5, dtype=torch.float16), 64) == "cuda"


@requires_cuda
@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (pip install \"avfast[triton]\")")
def test_bf16_cuda_tensor_runs_triton():
    assert A._choose(A.OP, torch.empty(1, 3 * 64, 5, dtype=torch.bfloat16, device="cuda"), 64) == "triton"
