"""Handing tensors to the native kernels: dtype codes, pointers, strides and CUDA streams."""
from __future__ import annotations

import torch

# Must match csrc/include/avfast/common.h::DType.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def dtype_code(t: torch.Tensor) -> int:
    return DTYPE_CODES[t.dtype]


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for the 16-bit formats and fp32, fp64 for fp64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def stream_of(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream
