"""Backend x dtype x ... parametrisations of the ops' accuracy tests.

A case that no machine runs (fp64 on Triton, which takes fp32/fp16/bf16) is not generated; a case
that another machine runs (a CUDA GPU, bf16 under a real Triton instead of its interpreter) skips
here and says why.
"""
from __future__ import annotations

import itertools
from typing import Callable

import pytest
import torch

from conftest import HAS_CUDA, HAS_TRITON, TRITON_DEVICE, TRITON_INTERPRETED

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float64, id="fp64")]
# Device of each backend's tensors; "cuda-emulated" runs the CUDA kernels on CPU threads (conftest.emulated_cuda).
DEVICES = {"reference": "cpu", "cpu": "cpu", "triton": TRITON_DEVICE, "cuda": "cuda", "cuda-emulated": "cpu"}


def backends(*names: str) -> list:
    """pytest params (backend, device) with the skip marks of backends this machine lacks."""
    marks = {"triton": [pytest.mark.skipif(not HAS_TRITON,
                                           reason="Triton is not installed (pip install \"avfast[triton]\")")],
             "cuda": [pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none visible to torch here)")]}
    return [pytest.param(name, DEVICES[name], id=name, marks=marks.get(name, [])) for name in names]


def runs_somewhere(backend: str, dtype: torch.dtype) -> bool:
    return not (backend == "triton" and dtype == torch.float64)


def product(*axes: list, keep: Callable[..., bool] = lambda *values: True) -> list:
    """The product of parametrize axes (lists of pytest.param) as one list of params, without the
    combinations no machine runs (see runs_somewhere: axes must start with backends(), then the
    dtype) and those `keep(*values)` rejects. bf16 under Triton's interpreter skips (a GPU runs it)."""
    out = []
    for combo in itertools.product(*axes):
        values = tuple(v for p in combo for v in p.values)
        if not (runs_somewhere(values[0], values[2]) and keep(*values)):
            continue
        marks = [m for p in combo for m in p.marks]
        if values[0] == "triton" and values[2] == torch.bfloat16 and TRITON_INTERPRETED:
            marks.append(pytest.mark.skip(reason="Triton's interpreter has no bf16 (a CUDA GPU runs this case)"))
        out.append(pytest.param(*values, id="-".join(p.id for p in combo), marks=marks))
    return out
