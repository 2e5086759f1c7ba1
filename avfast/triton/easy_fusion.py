"""Easy fusion in Triton (see avfast/ops/easy_fusion.py for the maths).

Forward:  _fwd_rows   one program per (b, c, f) row of v_fused: video rows copy the frame and sum
                      it (pooling), audio rows broadcast the nearest audio step;
          _fwd_audio  a_fused from a and the pooled rows.
Backward: _bwd_rows   one program per (b, c, f) row: video rows write grad_v = grad_vf +
                      (grad_af steps that picked the frame) / HW; audio rows sum grad_vf over H x W;
          _bwd_audio  grad_a = grad_af + the row sums of the frames that picked each step.
Every output element is written by one program (no atomics: deterministic). Offsets are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import launch, nearest_scale, nearest_src_index

BLOCK_HW = 256  # one row is H*W elements (256 at the 128-px model's first level)
BLOCK_T = 128
BLOCK_F = 16
NUM_WARPS = 4


@triton.jit
def _fwd_rows(v_ptr, a_ptr, vf_ptr, pooled_ptr,
              Cv, Ca, F, H, W, T,
              svb, svc, svf, svh, svw, sab, sac, sat,
              scale_tf, inv_hw,
              BLOCK_HW: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    f = row % F
    bc = row // F
    C = Cv + Ca
    c = bc % C
    b = bc // C
    HW = H * W
    out = vf_ptr + row * HW
    offs = tl.arange(0, BLOCK_HW)
    if c < Cv:
        src = v_ptr + b * svb + c * svc + f * svf
        acc = tl.zeros([BLOCK_HW], dtype=tl.float32)
        for start in range(0, HW, BLOCK_HW):
            i = start + offs
            mask = i < HW
            x = tl.load(src + (i // W) * svh + (i % W) * svw, mask=mask, other=0.0)
            tl.store(out + i, x, mask=mask)
            acc += x.to(tl.float32)
        tl.store(pooled_ptr + (b * Cv + c) * F + f, tl.sum(acc, axis=0) * inv_hw)
    else:
        t = nearest_src_index(f, scale_tf, T)
        x = tl.load(a_ptr + b * sab + (c - Cv) * sac + t * sat)
        xs = tl.zeros([BLOCK_HW], dtype=x.dtype) + x
        for start in range(0, HW, BLOCK_HW):
            i = start + offs
            tl.store(out + i, xs, mask=i < HW)


@triton.jit
def _fwd_audio(a_ptr, pooled_ptr, af_ptr,
               Cv, Ca, F, T, sab, sac, sat, scale_ft,
               BLOCK_T: tl.constexpr):
    bc = tl.program_id(0).to(tl.int64)
    C = Ca + Cv
    c = bc % C
    b = bc // C
    t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = t < T
    out = af_ptr + bc * T + t
    if c < Ca:
        x = tl.load(a_ptr + b * sab + c * sac + t * sat, mask=mask, other=0.0)
        tl.store(out, x, mask=mask)
    else:
        f = nearest_src_index(t, scale_ft, F)
        p = tl.load(pooled_ptr + (b * Cv + (c - Ca)) * F + f, mask=mask, other=0.0)
        tl.store(out, p.to(af_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_rows(gvf_ptr, gaf_ptr, gv_ptr, rowsum_ptr,
              Cv, Ca, F, H, W, T,
              svb, svc, svf, svh, svw, sab, sac, sat,
              scale_ft, inv_hw,
              BLOCK_HW: tl.constexpr, BLOCK_T: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    f = row % F
    bc = row // F
    C = Cv + Ca
    c = bc % C
    b = bc // C
    HW = H * W
    offs = tl.arange(0, BLOCK_HW)
    src = gvf_ptr + b * svb + c * svc + f * svf
    if c < Cv:
        # The a_fused steps t whose nearest frame is f send their gradient back to this frame.
        ga_row = gaf_ptr + b * sab + (Ca + c) * sac
        g = tl.zeros([BLOCK_T], dtype=tl.float32)
        for start in range(0, T, BLOCK_T):
            t = start + tl.arange(0, BLOCK_T)
            picked = (t < T) & (nearest_src_index(t, scale_ft, F) == f)
            g += tl.load(ga_row + t * sat, mask=picked, other=0.0).to(tl.float32)
        add = tl.sum(g, axis=0) * inv_hw
        out = gv_ptr + (b * Cv + c) * F * HW + f * HW
        for start in range(0, HW, BLOCK_HW):
            i = start + offs
            mask = i < HW
            x = tl.load(src + (i // W) * svh + (i % W) * svw, mask=mask, other=0.0).to(tl.float32)
            tl.store(out + i, (x + add).to(gv_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_HW], dtype=tl.float32)
        for start in range(0, HW, BLOCK_HW):
            i = start + offs
            acc += tl.load(src + (i // W) * svh + (i % W) * svw, mask=i < HW, other=0.0).to(tl.float32)
        tl.store(rowsum_ptr + (b * Ca + (c - Cv)) * F + f, tl.sum(acc, axis=0))


@triton.jit
def _bwd_audio(gaf_ptr, rowsum_ptr, ga_ptr,
               Ca, F, T, sab, sac, sat, scale_tf,
               BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr):
    bc = tl.program_id(0).to(tl.int64)
    c = bc % Ca
    b = bc // Ca
    t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < T
    g = tl.load(gaf_ptr + b * sab + c * sac + t * sat, mask=tmask, other=0.0).to(tl.float32)
    rows = rowsum_ptr + bc * F
    for start in range(0, F, BLOCK_F):
        f = start + tl.arange(0, BLOCK_F)
        fmask = f < F
        s = tl.load(rows + f, mask=fmask, other=0.0)
        step = nearest_src_index(f, scale_tf, T)  # the audio step frame f read in the forward
        hit = (step[None, :] == t[:, None]) & fmask[None, :]
        g += tl.sum(tl.where(hit, s[None, :], 0.0), axis=1)
    tl.store(ga_ptr + bc * T + t, g.to(ga_ptr.dtype.element_ty), mask=tmask)


def forward(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, Cv, F, H, W = v.shape
    Ca, T = a.shape[1], a.shape[2]
    vf = v.new_empty(B, Cv + Ca, F, H, W)
    af = a.new_empty(B, Ca + Cv, T)
    pooled = torch.empty(B * Cv * F, dtype=torch.float32, device=v.device)
    launch(_fwd_rows, (B * (Cv + Ca) * F,),
        v, a, vf, pooled, Cv, Ca, F, H, W, T, *v.stride(), *a.stride(),
        nearest_scale(T, F), 1.0 / (H * W), BLOCK_HW=BLOCK_HW, num_warps=NUM_WARPS)
    launch(_fwd_audio, (B * (Ca + Cv), triton.cdiv(T, BLOCK_T)),
        a, pooled, af, Cv, Ca, F, T, *a.stride(), nearest_scale(F, T), BLOCK_T=BLOCK_T, num_warps=NUM_WARPS)
    return vf, af


def backward(gvf: torch.Tensor, gaf: torch.Tensor, Cv: int, Ca: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, _, F, H, W = gvf.shape
    T = gaf.shape[2]
    gv = gvf.new_empty(B, Cv, F, H, W)
    ga = gaf.new_empty(B, Ca, T)
    rowsum = torch.empty(B * Ca * F, dtype=torch.float32, device=gvf.device)
    launch(_bwd_rows, (B * (Cv + Ca) * F,),
        gvf, gaf, gv, rowsum, Cv, Ca, F, H, W, T, *gvf.stride(), *gaf.stride(),
        nearest_scale(F, T), 1.0 / (H * W), BLOCK_HW=BLOCK_HW, BLOCK_T=BLOCK_T, num_warps=NUM_WARPS)
    launch(_bwd_audio, (B * Ca, triton.cdiv(T, BLOCK_T)),
        gaf, rowsum, ga, Ca, F, T, *gaf.stride(), nearest_scale(T, F),
        BLOCK_T=BLOCK_T, BLOCK_F=BLOCK_F, num_warps=NUM_WARPS)
    return gv, ga
