"""Helpers shared by the Triton kernel files: dtype names, the nearest-index rule, AOT specs."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import triton
import triton.language as tl

TRITON_TYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


@dataclass(frozen=True)
class AotSpec:
    """One compile configuration of a kernel: what its launcher can pass, fixed ahead of time."""

    kernel: object
    signature: dict[str, str]
    constexprs: dict[str, object] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3

    @property
    def name(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()))
        ptrs = ",".join(sorted({t for t in self.signature.values() if t.startswith("*")}))
        return f"{self.kernel.fn.__name__}[{ptrs};{consts};w{self.num_warps}]"


def nearest_scale(in_size: int, out_size: int) -> float:
    """in/out rounded to fp32 exactly as PyTorch does; Triton's `/` on fp32 is not IEEE-exact."""
    return float(np.float32(in_size) / np.float32(out_size))


@triton.jit
def nearest_src_index(dst, scale, in_size):
    """interpolate(mode="nearest") source index: min(floor(fp32(dst) * scale), in_size - 1)."""
    src = tl.floor(dst.to(tl.float32) * scale).to(tl.int64)
    return tl.minimum(src, in_size - 1)
