"""The package's one precision table (name -> dtype) and the autocast wrapper for PyTorch denoisers.

    "fp32" -> torch.float32, "bf16" -> torch.bfloat16, "fp16" -> torch.float16

Sampling, training and export name precisions the same way. `autocast_dtype(name)` is what a PyTorch
module runs under (`None` for fp32: no autocast); `Autocast` wraps a denoiser so the network computes in
16 bits while the sampler keeps its state in fp32. Only torch is imported here, so every layer may use it.
"""
from __future__ import annotations

from typing import Any

import torch

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["Autocast", "PRECISIONS", "autocast_dtype", "check_precision", "dtype_of", "in_precision"]


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def dtype_of(name: str) -> torch.dtype:
    """The dtype a precision name stands for."""
    return PRECISIONS[check_precision(name)]


def autocast_dtype(name: str) -> torch.dtype | None:
    """The dtype to autocast to for `name`, or None for fp32 (run as is)."""
    dtype = dtype_of(name)
    return None if dtype == torch.float32 else dtype


class Autocast:
    """A PyTorch denoiser under `torch.autocast(dtype)`, handing fp32 back: the sampler keeps its state in
    fp32 and only the network runs in 16 bits (autograd still works, so reconstruction guidance does)."""

    def __init__(self, denoiser: Any, dtype: torch.dtype) -> None:
        self.denoiser, self.dtype = denoiser, dtype
        self.supports_grad = getattr(denoiser, "supports_grad", True)
        self.name = getattr(denoiser, "name", type(denoiser).__name__)

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        kwargs = {} if labels is None else {"labels": labels}
        with torch.autocast(v_t.device.type, dtype=self.dtype):
            out = self.denoiser(v_t, a_t, t_v, t_a, **kwargs)
        return tuple(o.float() for o in out)


def in_precision(denoiser: Any, precision: str) -> Any:
    """`denoiser` itself for fp32, else wrapped in `Autocast` (PyTorch denoisers only)."""
    dtype = autocast_dtype(precision)
    return denoiser if dtype is None else Autocast(denoiser, dtype)
