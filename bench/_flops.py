"""FLOPs of one call, counted by `torch.utils.flop_counter.FlopCounterMode`.

FlopCounterMode counts matmuls, convolutions and SDPA; avfast's custom ops are opaque to it, so
the attention op gets formulas here: the matmul work of the PyTorch reference it replaces
(forward Q K^T and P V: 4 N^2 d per head and problem; backward dV, dP, dQ, dK: 8 N^2 d, what
autograd runs for the reference). A fused kernel that recomputes the scores in its backward
is not credited for the recomputation: every implementation of a case is held to the same work.
Elementwise and reduction ops (easy fusion, the contrastive loss) count 0 FLOPs: those cases are
memory-bound and are measured against bytes moved instead. The harness counts a case once, on its
first row that FlopCounterMode can see into (an exported runtime such as ONNX Runtime counts 0),
and gives every row of the case that count: the work of the problem, not of one implementation.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def _attention_problems(qkv: torch.Tensor, mode: str, head_dim: int) -> tuple[int, int]:
    """(independent attention problems B*heads*G, tokens N per problem) of one attention call."""
    from avfast.ops import attention as A

    B, heads, G, N = A._lse_shape(qkv, mode, head_dim)
    return B * heads * G, N


def _attention_forward_flops(qkv, mode, head_dim, scale, *, out_val=None) -> int:
    problems, N = _attention_problems(qkv, mode, head_dim)
    return 4 * problems * N * N * head_dim


def _attention_backward_flops(grad_out, qkv, out, lse, mode, head_dim, scale, *, out_val=None) -> int:
    problems, N = _attention_problems(qkv, mode, head_dim)
    return 8 * problems * N * N * head_dim


_attention_forward_flops._get_raw = True  # FlopCounterMode hands these the tensors, not their shapes
_attention_backward_flops._get_raw = True


def custom_formulas() -> dict:
    """FLOP formulas of avfast's custom ops, for FlopCounterMode(custom_mapping=...)."""
    import avfast.ops  # noqa: F401  (registers torch.ops.avfast.*)

    ops = torch.ops.avfast
    return {ops.temporal_spatial_attention: _attention_forward_flops,
            ops.temporal_spatial_attention_backward: _attention_backward_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one `fn()` (forward and, if it runs one, backward)."""
    counter = FlopCounterMode(display=False, custom_mapping=custom_formulas())
    with counter:
        fn()
    return int(counter.get_total_flops())
