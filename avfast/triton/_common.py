"""Helpers shared by the Triton kernel files: the nearest-index rule and launches that the AOT check
can record."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import triton
import triton.language as tl


@dataclass(frozen=True)
class Launch:
    """One kernel launch exactly as a launcher makes it: what `python -m avfast.checks.aot` compiles."""

    kernel: object               # the @triton.jit function
    grid: tuple[int, ...]
    args: tuple                  # positional arguments (tensors, ints, floats)
    meta: dict[str, Any] = field(default_factory=dict)  # constexprs and launch options (num_warps, ...)


_recorded: list[Launch] | None = None


def launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    """`kernel[grid](*args, **meta)`, or recorded instead inside `recording_launches()`."""
    if _recorded is not None:
        _recorded.append(Launch(kernel, tuple(grid), args, meta))
        return
    kernel[grid](*args, **meta)


@contextlib.contextmanager
def recording_launches() -> Iterator[list[Launch]]:
    """Within the block the launchers record their launches instead of running them (tensors may be
    on the meta device), so the AOT check compiles the specialisations the launchers really make."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous


def nearest_scale(in_size: int, out_size: int) -> float:
    """in/out rounded to fp32 exactly as PyTorch does; Triton's `/` on fp32 is not IEEE-exact."""
    return float(np.float32(in_size) / np.float32(out_size))


@triton.jit
def nearest_src_index(dst, scale, in_size):
    """interpolate(mode="nearest") source index: min(floor(fp32(dst) * scale), in_size - 1)."""
    src = tl.floor(dst.to(tl.float32) * scale).to(tl.int64)
    return tl.minimum(src, in_size - 1)
