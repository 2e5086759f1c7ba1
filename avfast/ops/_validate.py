"""Input validation shared by every op: errors name the argument, what was expected and what came."""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class AvfastInputError(ValueError):
    """An op argument has the wrong rank, dtype, device, shape or is empty."""


def _fmt_shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_tensor(op: str, name: str, t: object, *, ndim: int | None = None, layout: str = "",
                 dtypes: Sequence[torch.dtype] = FLOATING, allow_empty: bool = False) -> torch.Tensor:
    """Checks that `t` is a tensor of rank `ndim` (described by `layout`, e.g. "[B, C, T]") and a dtype in `dtypes`."""
    if not isinstance(t, torch.Tensor):
        raise AvfastInputError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        want = f" {layout}" if layout else ""
        raise AvfastInputError(f"{op}: `{name}` must have {ndim} dimensions{want}, got {t.dim()} with shape {_fmt_shape(t)}")
    if t.dtype not in dtypes:
        raise AvfastInputError(
            f"{op}: `{name}` must have dtype {' or '.join(str(d).replace('torch.', '') for d in dtypes)}, got {str(t.dtype).replace('torch.', '')}")
    if not allow_empty and t.numel() == 0:
        raise AvfastInputError(f"{op}: `{name}` must not be empty, got shape {_fmt_shape(t)}{(' ' + layout) if layout else ''}")
    return t


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"`{n}` on {d}" for n, d in devices.items())
        raise AvfastInputError(f"{op}: all tensors must be on one device, got {listing}")


def check_same_dtype(op: str, **tensors: torch.Tensor) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"`{n}` is {str(d).replace('torch.', '')}" for n, d in dtypes.items())
        raise AvfastInputError(f"{op}: all tensors must have one dtype, got {listing}")


def check_dim_match(op: str, what: str, **sizes: int) -> None:
    """Checks that named sizes agree, e.g. check_dim_match(op, "batch size", v=4, a=3)."""
    values = list(sizes.values())
    if any(v != values[0] for v in values[1:]):  # not a set: symbolic sizes are unhashable
        listing = ", ".join(f"`{n}` has {s}" for n, s in sizes.items())
        raise AvfastInputError(f"{op}: {what} must match, got {listing}")
