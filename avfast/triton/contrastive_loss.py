"""Joint contrastive diffusion loss in Triton (see avfast/ops/contrastive_loss.py for the maths).

_sq_sums  one program per (sample b, chunk of BLOCK elements): loads the target chunk once and
          streams every group's predictions against it, storing one fp32 partial sum per
          (group, sample, chunk); the host adds the partials in chunk order (torch.sum: no atomics,
          deterministic) and combines the tiny [G, B] sums with the reference's `combine`.
_backward one program per (b, chunk): loads the target once, writes grad_pred = coef[g, b] *
          (pred - target) for every group and grad_target = -sum_g grad_pred (WRITE_TARGET: only
          when the targets need a gradient).
Offsets are int64 (tensors over 2^31 elements); grids are 1-D (no 65535 y/z limit).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import launch

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _sq_sums(pred_ptr, target_ptr, partial_ptr, G, B, N, nch,
             ps0, ps1, ps2, ts0, ts1,
             BLOCK: tl.constexpr):
    task = tl.program_id(0).to(tl.int64)
    b = task // nch
    c = task % nch
    i = c * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = i < N
    t = tl.load(target_ptr + b * ts0 + i * ts1, mask=mask, other=0.0).to(tl.float32)
    for g in range(0, G):
        gg = tl.cast(g, tl.int64)
        p = tl.load(pred_ptr + gg * ps0 + b * ps1 + i * ps2, mask=mask, other=0.0).to(tl.float32)
        d = p - t
        tl.store(partial_ptr + (gg * B + b) * nch + c, tl.sum(d * d, axis=0))


@triton.jit
def _backward(coef_ptr, pred_ptr, target_ptr, gpred_ptr, gtarget_ptr, G, B, N, nch,
              ps0, ps1, ps2, ts0, ts1,
              BLOCK: tl.constexpr, WRITE_TARGET: tl.constexpr):
    task = tl.program_id(0).to(tl.int64)
    b = task // nch
    c = task % nch
    i = c * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = i < N
    t = tl.load(target_ptr + b * ts0 + i * ts1, mask=mask, other=0.0).to(tl.float32)
    gt = tl.zeros([BLOCK], dtype=tl.float32)
    for g in range(0, G):
        gg = tl.cast(g, tl.int64)
        coef = tl.load(coef_ptr + gg * B + b)
        p = tl.load(pred_ptr + gg * ps0 + b * ps1 + i * ps2, mask=mask, other=0.0).to(tl.float32)
        gp = coef * (p - t)
        tl.store(gpred_ptr + (gg * B + b) * N + i, gp.to(gpred_ptr.dtype.element_ty), mask=mask)
        gt -= gp
    if WRITE_TARGET:
        tl.store(gtarget_ptr + b * N + i, gt.to(gtarget_ptr.dtype.element_ty), mask=mask)


def sq_sums(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_i (pred[g, b, i] - target[b, i])^2 as fp32 [G, B]; pred [G, B, N], target [B, N], any strides."""
    G, B, N = pred.shape
    nch = triton.cdiv(N, BLOCK)
    partial = torch.empty(G * B * nch, dtype=torch.float32, device=pred.device)
    launch(_sq_sums, (B * nch,), pred, target, partial, G, B, N, nch, *pred.stride(), *target.stride(),
           BLOCK=BLOCK, num_warps=NUM_WARPS)
    return partial.view(G, B, nch).sum(-1)


def backward(coef: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, gpred: torch.Tensor,
             gtarget: torch.Tensor | None) -> None:
    """Writes gpred (contiguous, pred's shape) and gtarget (contiguous) unless it is None; coef [G, B]
    fp32 includes w*2/N."""
    G, B, N = pred.shape
    nch = triton.cdiv(N, BLOCK)
    write_target = gtarget is not None
    launch(_backward, (B * nch,), coef.contiguous(), pred, target, gpred, gtarget if write_target else gpred, G, B,
           N, nch, *pred.stride(), *target.stride(), BLOCK=BLOCK, WRITE_TARGET=write_target, num_warps=NUM_WARPS)
