"""Temporal-spatial attention in Triton: flash-style forward and backward on the model's layout.

See avfast/ops/attention.py for the geometry: q, k, v are channel blocks of the strided
[B, 3C, F, H, W] tensor; a token index is split into up to three axes (n0, n1, n2) and a problem
index into (b, head, group), each with its own strides, so nothing is permuted or copied.

Forward: _fwd     one program per (b, head, group, query tile): online softmax over key tiles in
                  base 2 (scale * log2 e folded into the scores before exp2), fp32 running max/sum
                  and accumulator; writes out and the natural-log lse.
Backward: _delta  delta_i = dO_i . O_i per query row;
          _dkdv   one program per key tile: loops query tiles, accumulates dK, dV;
          _dq     one program per query tile: loops key tiles, accumulates dQ.
Two passes recompute P instead of atomically adding dQ: deterministic, no N x N storage.
Grids are 1-D (no 65535 limit on y/z); offsets are int64. Forward tiles are 32 x 32 (16-bit) /
16 x 16 (fp32) at head dim 64, the backward's per kernel in _bwd_config: what the preset models launch
compiles without spills on sm_80..sm_90 (python -m avfast.checks.aot).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import launch

LOG2E = 1.4426950408889634
NUM_WARPS = 4
NUM_STAGES = 1  # software pipelining keeps the next tile's addresses live: spills
HEAD_DIMS = (16, 32, 64, 128)


def _blocks(dtype: torch.dtype, head_dim: int) -> tuple[int, int]:
    """Forward (BLOCK_M, BLOCK_N), chosen from `ptxas -v` (python -m avfast.checks.aot): with the
    model's strided loads (one 64-bit address per element) 64 x 64 tiles spill; fp32 goes through
    FMA dots (exact, not TF32) and needs smaller tiles still."""
    if dtype == torch.float32:
        return {16: (32, 32), 32: (32, 16), 64: (16, 16), 128: (16, 16)}[head_dim]
    return {16: (32, 32), 32: (32, 32), 64: (32, 32), 128: (16, 16)}[head_dim]


def _bwd_config(dtype: torch.dtype, head_dim: int) -> dict[str, tuple[int, int, int]]:
    """(BLOCK_M, BLOCK_N, num_warps) of _dkdv and of _dq. The forward's tiles with 4 warps spilled
    4-20 bytes on sm_86/89/90 once the AOT check compiled the JIT's real specialisations (32-bit
    sizes, unit strides, heads = 1, N a multiple of 16); these compile without spills on sm_80-90 for
    head dims 32 and 64 (what the presets use) over the presets' shapes and heads 1 and 4 at 2x2 to
    16x16 pixels and 14 to 112 audio steps. fp32 head dim 32 has no single setting without a spill
    on some architecture, so its two kernels differ. Head dims 16 and 128 keep the forward's tiles
    with 8 warps, not yet checked against a model that launches them."""
    if dtype == torch.float32:
        both = {16: (32, 32, 8), 64: (32, 32, 8), 128: (16, 16, 8)}
        if head_dim == 32:
            return {"dkdv": (32, 32, 4), "dq": (32, 16, 8)}
    else:
        both = {16: (32, 32, 8), 32: (32, 16, 4), 64: (32, 32, 8), 128: (16, 16, 8)}
    return {"dkdv": both[head_dim], "dq": both[head_dim]}


@triton.jit
def _token_offset(t, stride):
    # Tokens arrive flattened to one axis with one stride (see _flatten_tokens); a per-element
    # (n0, n1, n2) split costs ~100 registers a tile and spills. Offsets in int64.
    return t.to(tl.int64) * stride


@triton.jit
def _problem_base(p, heads, G, g1, sb, sc, sg0, sg1, HEAD_DIM: tl.constexpr):
    """(b, head, group) of problem p -> (offset of its q channel 0, index of its lse row)."""
    g = p % G
    h = (p // G) % heads
    b = p // (G * heads)
    return b * sb + h * HEAD_DIM * sc + (g // g1) * sg0 + (g % g1) * sg1


@triton.jit
def _fwd(qkv_ptr, out_ptr, lse_ptr,
         heads, G, N, g1,
         sib, sic, sig0, sig1, sin,
         sob, soc, sog0, sog1, son,
         qk_scale,
         HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    nqb = tl.cdiv(N, BLOCK_M)
    p = pid // nqb
    C = heads * HEAD_DIM
    q_base = qkv_ptr + _problem_base(p, heads, G, g1, sib, sic, sig0, sig1, HEAD_DIM)
    k_base = q_base + C * sic
    v_base = q_base + 2 * C * sic
    d = tl.arange(0, HEAD_DIM).to(tl.int64)
    offs_m = (pid % nqb).to(tl.int32) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < N
    q = tl.load(q_base + _token_offset(offs_m, sin)[:, None] + d[None, :] * sic,
                mask=mmask[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        koff = _token_offset(offs_n, sin)
        kt = tl.load(k_base + koff[None, :] + d[:, None] * sic, mask=nmask[None, :], other=0.0)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # log2 units, fp32
        s = tl.where(nmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        pr = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        v = tl.load(v_base + koff[:, None] + d[None, :] * sic, mask=nmask[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    o_base = out_ptr + _problem_base(p, heads, G, g1, sob, soc, sog0, sog1, HEAD_DIM)
    ooff = _token_offset(offs_m, son)
    tl.store(o_base + ooff[:, None] + d[None, :] * soc, acc.to(out_ptr.dtype.element_ty), mask=mmask[:, None])
    tl.store(lse_ptr + p * N + offs_m, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=mmask)


@triton.jit
def _delta(dout_ptr, out_ptr, delta_ptr,
           heads, G, N, g1,
           sdb, sdc, sdg0, sdg1, sdn,
           sob, soc, sog0, sog1, son,
           HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    nqb = tl.cdiv(N, BLOCK_M)
    p = pid // nqb
    d = tl.arange(0, HEAD_DIM).to(tl.int64)
    offs_m = (pid % nqb).to(tl.int32) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < N
    do_base = dout_ptr + _problem_base(p, heads, G, g1, sdb, sdc, sdg0, sdg1, HEAD_DIM)
    o_base = out_ptr + _problem_base(p, heads, G, g1, sob, soc, sog0, sog1, HEAD_DIM)
    g_o = tl.load(do_base + _token_offset(offs_m, sdn)[:, None] + d[None, :] * sdc,
                  mask=mmask[:, None], other=0.0).to(tl.float32)
    o = tl.load(o_base + _token_offset(offs_m, son)[:, None] + d[None, :] * soc,
                mask=mmask[:, None], other=0.0).to(tl.float32)
    tl.store(delta_ptr + p * N + offs_m, tl.sum(g_o * o, axis=1), mask=mmask)


@triton.jit
def _dkdv(dout_ptr, qkv_ptr, lse_ptr, delta_ptr, dqkv_ptr,
          heads, G, N, g1,
          sdb, sdc, sdg0, sdg1, sdn,
          sib, sic, sig0, sig1, sin,
          sgb, sgc, sgg0, sgg1, sgn,
          scale, qk_scale,
          HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    nkb = tl.cdiv(N, BLOCK_N)
    p = pid // nkb
    C = heads * HEAD_DIM
    q_base = qkv_ptr + _problem_base(p, heads, G, g1, sib, sic, sig0, sig1, HEAD_DIM)
    do_base = dout_ptr + _problem_base(p, heads, G, g1, sdb, sdc, sdg0, sdg1, HEAD_DIM)
    d = tl.arange(0, HEAD_DIM).to(tl.int64)
    offs_n = (pid % nkb).to(tl.int32) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    koff = _token_offset(offs_n, sin)
    k = tl.load(q_base + C * sic + koff[:, None] + d[None, :] * sic, mask=nmask[:, None], other=0.0)
    v = tl.load(q_base + 2 * C * sic + koff[:, None] + d[None, :] * sic, mask=nmask[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for start in range(0, N, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        mmask = offs_m < N
        qt = tl.load(q_base + _token_offset(offs_m, sin)[None, :] + d[:, None] * sic,
                     mask=mmask[None, :], other=0.0)
        dot = tl.load(do_base + _token_offset(offs_m, sdn)[None, :] + d[:, None] * sdc,
                      mask=mmask[None, :], other=0.0)
        lse2 = tl.load(lse_ptr + p * N + offs_m, mask=mmask, other=0.0) * 1.4426950408889634
        dlt = tl.load(delta_ptr + p * N + offs_m, mask=mmask, other=0.0)
        st = tl.dot(k, qt, input_precision=PRECISION) * qk_scale  # [BLOCK_N, BLOCK_M], log2 units
        pt = tl.where(mmask[None, :], tl.exp2(st - lse2[None, :]), 0.0)
        dv += tl.dot(pt.to(dot.dtype), tl.trans(dot), input_precision=PRECISION)
        dpt = tl.dot(v, dot, input_precision=PRECISION)
        dst = pt * (dpt - dlt[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=PRECISION)
    g_base = dqkv_ptr + _problem_base(p, heads, G, g1, sgb, sgc, sgg0, sgg1, HEAD_DIM)
    goff = _token_offset(offs_n, sgn)[:, None] + d[None, :] * sgc
    tl.store(g_base + C * sgc + goff, (dk * scale).to(dqkv_ptr.dtype.element_ty), mask=nmask[:, None])
    tl.store(g_base + 2 * C * sgc + goff, dv.to(dqkv_ptr.dtype.element_ty), mask=nmask[:, None])


@triton.jit
def _dq(dout_ptr, qkv_ptr, lse_ptr, delta_ptr, dqkv_ptr,
        heads, G, N, g1,
        sdb, sdc, sdg0, sdg1, sdn,
        sib, sic, sig0, sig1, sin,
        sgb, sgc, sgg0, sgg1, sgn,
        scale, qk_scale,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    nqb = tl.cdiv(N, BLOCK_M)
    p = pid // nqb
    C = heads * HEAD_DIM
    q_base = qkv_ptr + _problem_base(p, heads, G, g1, sib, sic, sig0, sig1, HEAD_DIM)
    do_base = dout_ptr + _problem_base(p, heads, G, g1, sdb, sdc, sdg0, sdg1, HEAD_DIM)
    d = tl.arange(0, HEAD_DIM).to(tl.int64)
    offs_m = (pid % nqb).to(tl.int32) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < N
    q = tl.load(q_base + _token_offset(offs_m, sin)[:, None] + d[None, :] * sic,
                mask=mmask[:, None], other=0.0)
    g_o = tl.load(do_base + _token_offset(offs_m, sdn)[:, None] + d[None, :] * sdc,
                  mask=mmask[:, None], other=0.0)
    lse2 = tl.load(lse_ptr + p * N + offs_m, mask=mmask, other=0.0) * 1.4426950408889634
    dlt = tl.load(delta_ptr + p * N + offs_m, mask=mmask, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        koff = _token_offset(offs_n, sin)
        kt = tl.load(q_base + C * sic + koff[None, :] + d[:, None] * sic, mask=nmask[None, :], other=0.0)
        vt = tl.load(q_base + 2 * C * sic + koff[None, :] + d[:, None] * sic, mask=nmask[None, :], other=0.0)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        pr = tl.where(nmask[None, :], tl.exp2(s - lse2[:, None]), 0.0)
        dp = tl.dot(g_o, vt, input_precision=PRECISION)
        ds = pr * (dp - dlt[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)
    g_base = dqkv_ptr + _problem_base(p, heads, G, g1, sgb, sgc, sgg0, sgg1, HEAD_DIM)
    goff = _token_offset(offs_m, sgn)[:, None] + d[None, :] * sgc
    tl.store(g_base + goff, (dq * scale).to(dqkv_ptr.dtype.element_ty), mask=mmask[:, None])


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 products (TF32 would lose the fp32 accuracy the tests ask for).
    return "ieee" if dtype == torch.float32 else "tf32"


def _fwd_warps(dtype: torch.dtype, head_dim: int) -> int:
    # fp32's FMA dot with 4 warps spills 8 bytes on sm_80 at head dim 64; 8 warps do not (but
    # 8 warps spill at head dim 128 on sm_86/89, where 4 do not).
    return 8 if dtype == torch.float32 and head_dim == 64 else NUM_WARPS


def _delta_block(head_dim: int) -> int:
    return 8 if head_dim > 64 else 16


def flatten_tokens(sizes: list[int], strides: list[int]) -> list[int] | None:
    """[b, c, g0, g1, n0, n1, n2] strides -> [b, c, g0, g1, n] when the token axes form one
    arithmetic progression (true for every layout the model produces), else None."""
    n0, n1, n2 = sizes[5:8]
    s0, s1, s2 = strides[4:7]
    stride = s2 if n2 > 1 else (s1 if n1 > 1 else s0)
    if (n1 > 1 and s1 != stride * n2) or (n0 > 1 and s0 != stride * n2 * n1):
        return None
    return [*strides[:4], stride]


def _geom(sizes: list[int]) -> tuple[int, int, int, int, int, int]:
    B, heads, D, g0, g1, n0, n1, n2 = sizes
    return B, heads, D, g0 * g1, n0 * n1 * n2, g1


def _check(D: int, *flat) -> None:
    if D not in HEAD_DIMS:
        raise ValueError(f"temporal_spatial_attention (triton): head_dim must be one of {HEAD_DIMS}, got {D}")
    if any(f is None for f in flat):
        raise ValueError("temporal_spatial_attention (triton): token axes must flatten to one stride "
                         "(call flatten_tokens first; the op layer copies exotic layouts)")


def forward(qkv, out, lse, sizes, qkv_strides, out_strides, scale) -> None:
    B, heads, D, G, N, g1 = _geom(sizes)
    si, so = flatten_tokens(sizes, qkv_strides), flatten_tokens(sizes, out_strides)
    _check(D, si, so)
    bm, bn = _blocks(qkv.dtype, D)
    grid = (B * heads * G * triton.cdiv(N, bm),)
    launch(_fwd, grid, qkv, out, lse, heads, G, N, g1, *si, *so, scale * LOG2E,
           HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, PRECISION=_precision(qkv.dtype),
           num_warps=_fwd_warps(qkv.dtype, D), num_stages=NUM_STAGES)


def backward(dout, qkv, out, lse, dqkv, sizes, dout_strides, qkv_strides, out_strides, dqkv_strides, scale) -> None:
    B, heads, D, G, N, g1 = _geom(sizes)
    sd, si, so, sg = (flatten_tokens(sizes, x) for x in (dout_strides, qkv_strides, out_strides, dqkv_strides))
    _check(D, sd, si, so, sg)
    config = _bwd_config(qkv.dtype, D)
    P = B * heads * G
    delta = torch.empty(P * N, dtype=torch.float32, device=qkv.device)
    launch(_delta, (P * triton.cdiv(N, _delta_block(D)),), dout, out, delta, heads, G, N, g1, *sd, *so,
           HEAD_DIM=D, BLOCK_M=_delta_block(D), num_warps=NUM_WARPS)
    args = (dout, qkv, lse, delta, dqkv, heads, G, N, g1, *sd, *si, *sg, scale, scale * LOG2E)
    bm, bn, warps = config["dkdv"]  # one program per key tile
    launch(_dkdv, (P * triton.cdiv(N, bn),), *args, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn,
           PRECISION=_precision(qkv.dtype), num_warps=warps, num_stages=NUM_STAGES)
    bm, bn, warps = config["dq"]  # one program per query tile
    launch(_dq, (P * triton.cdiv(N, bm),), *args, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn,
           PRECISION=_precision(qkv.dtype), num_warps=warps, num_stages=NUM_STAGES)
