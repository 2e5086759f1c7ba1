"""Shared test setup.

Without a CUDA device the Triton kernels run in Triton's interpreter on CPU tensors; the
interpreter must be chosen before anything imports triton, so it is set here, first.
"""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Devices the Triton tests run on: CUDA where present, else CPU through the interpreter.
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"
# The interpreter has no bf16 (numpy has none): the bf16 Triton path is checked by the AOT compile test.
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16) if HAS_CUDA else (torch.float32, torch.float16)

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none visible to torch here)")
requires_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (pip install \"avfast[triton]\")")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------ CUDA kernels without a GPU
@pytest.fixture(scope="session")
def emulated_cuda_module(tmp_path_factory):
    """csrc/bindings_cuda.cpp + csrc/cuda/* compiled as host C++ (tests/cuda_emu): a `_C_cuda` whose
    kernels run on the CPU (a fiber per CUDA thread), at most AVFAST_EMU_MAX_GRID=4 blocks a launch
    (so the grid-stride loops are exercised too)."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("no host C++ compiler (g++) to build the CUDA emulation")
    os.environ.setdefault("AVFAST_EMU_MAX_GRID", "4")
    from cuda_emu.build import build

    return build(tmp_path_factory.mktemp("cuda_emu_module"))


@pytest.fixture
def emulated_cuda(monkeypatch, emulated_cuda_module):
    """Within the test, `avfast.backend("cuda")` runs the ops' real CUDA host code and kernels on CPU
    tensors through the emulated module: only the stream, the device guard and the device check are
    stubbed."""
    import contextlib
    import sys

    from avfast import _ext, backends

    monkeypatch.setitem(_ext._cache, "cuda", emulated_cuda_module)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    for name, module in list(sys.modules.items()):
        if name.startswith("avfast.ops.") and hasattr(module, "stream_of"):
            monkeypatch.setattr(module, "stream_of", lambda t: 0)
    real = backends.why_unavailable
    monkeypatch.setattr(backends, "why_unavailable",
                        lambda name, device: None if name == "cuda" and device.type == "cpu" else real(name, device))
    return emulated_cuda_module


@pytest.fixture
def use_backend(request):
    """Turns a backend test id into the backend to force; "cuda-emulated" installs the emulation."""
    def resolve(backend: str) -> str:
        if backend == "cuda-emulated":
            request.getfixturevalue("emulated_cuda")
            return "cuda"
        return backend
    return resolve
