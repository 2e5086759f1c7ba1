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
requires_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (pip install 'avfast[triton]')")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
