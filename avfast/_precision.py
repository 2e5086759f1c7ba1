"""The package's one precision table (name -> dtype) and the autocast wrapper for PyTorch denoisers.

    "fp32" -> torch.float32, "bf16" -> torch.bfloat16, "fp16" -> torch.float16, "int8" -> torch.int8

Sampling, training, export and the runtimes name precisions the same way. The float ones
(`FLOAT_PRECISIONS`) are autocast dtypes: `autocast_dtype(name)` is what a PyTorch module runs under
(`None` for fp32: no autocast), and `Autocast` wraps a denoiser so the network computes in 16 bits while
the sampler keeps its state in fp32. "int8" is post-training quantisation of an exported graph
(`python -m avfast.export --precision int8`): only the exported CPU runtimes (onnxruntime, openvino) run
it; PyTorch runtimes and training refuse it by name. Which runtime runs which precision is
`avfast.runtime.RUNTIME_PRECISIONS`. Only torch is imported here, so every layer may use it.
"""
from __future__ import annotations

from typing import Any

import torch

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                                      "int8": torch.int8}
FLOAT_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")    # autocast: PyTorch runtimes, training
QUANTIZED_PRECISIONS: tuple[str, ...] = ("int8",)               # exported graphs only (avfast.export.int8)

__all__ = ["Autocast", "FLOAT_PRECISIONS", "PRECISIONS", "QUANTIZED_PRECISIONS", "autocast_dtype",
           "check_precision", "dtype_of", "in_precision"]


def check_precision(name: str, allowed: tuple[str, ...] | None = None, what: str | None = None) -> str:
    """`name` if it is a precision (and in `allowed`, when given); else a ValueError naming what works
    (`what` says for what, e.g. "training")."""
    allowed = tuple(PRECISIONS) if allowed is None else allowed
    if name not in allowed:
        if name in PRECISIONS and what:
            raise ValueError(f"{what} cannot run precision {name!r}; it runs {', '.join(allowed)}")
        raise ValueError(f"precision must be one of {', '.join(allowed)}, got {name!r}")
    return name


def dtype_of(name: str) -> torch.dtype:
    """The dtype a precision name stands for (int8: the quantised layers' dtype)."""
    return PRECISIONS[check_precision(name)]


def autocast_dtype(name: str) -> torch.dtype | None:
    """The dtype to autocast to for `name`, or None for fp32 (run as is). int8 is not an autocast dtype."""
    check_precision(name, FLOAT_PRECISIONS, "PyTorch (autocast)" if name in PRECISIONS else None)
    dtype = PRECISIONS[name]
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
    """`denoiser` itself for fp32, else wrapped in `Autocast` (PyTorch denoisers only: int8 is refused,
    naming the runtimes that run it)."""
    if precision in QUANTIZED_PRECISIONS:
        raise ValueError(f"a PyTorch denoiser cannot run precision {precision!r}: it runs {', '.join(FLOAT_PRECISIONS)} "
                         f"(autocast); int8 is a quantised export, run by runtime 'openvino' or 'onnxruntime'")
    dtype = autocast_dtype(precision)
    return denoiser if dtype is None else Autocast(denoiser, dtype)
