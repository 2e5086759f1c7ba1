"""Memory-efficient temporal-spatial self-attention (CMMD U-Net attention blocks), as one fused op.

    qkv [B, 3C, F, H, W] (video) or [B, 3C, T] (audio) -> out [B, C, F, H, W] / [B, C, T]

q, k, v are the channel blocks [0, C), [C, 2C), [2C, 3C); channel c of a block belongs to head
c // head_dim (CMMD Table 4: attention dim 64, heads = channels // 64). Tokens per mode:
    spatial   the H*W positions of each frame      (F * B independent problems)
    temporal  the F frames at each (h, w) position (H * W * B problems)
    joint     all F*H*W positions
    audio     the T steps (the mode is ignored: audio attention is always over time)

The fused backends read q, k, v straight out of the strided qkv tensor and write `out` in
[B, C, ...] layout (no permute/contiguous copies), with tiled online softmax (beyond 64 tokens the
N x N score matrix is never formed; backward recomputes it tile by tile from the saved log-sum-exp;
the CPU lane kernels, used for N <= 64 as in temporal mode, hold each problem's whole N x N block,
16 problems at a time).
Accumulation is fp32 (fp64 for the fp64 reference); the scale is applied before exp and the
running max is kept in fp32, so fp16 inputs with large logits do not overflow.

Backends: reference (explicit permutes + softmax(QK^T)V in fp32, the oracle), cpu (OpenMP C++,
AVX-512 micro-kernels), cuda (CUDA C++ csrc/cuda/attention.cu: tiled flash-attention-2 style kernels,
fp32 FMA in shared memory; the default for fp32 CUDA tensors), triton (tensor cores through tl.dot:
the default for fp16/bf16 CUDA tensors, and for every dtype when the CUDA extension is not built), xformers (CUDA only; its forward and explicit backward ops on permuted
copies).
"""
from __future__ import annotations

import math

import torch

from .. import _ext
from ..backends import Kernel, dtypes_by_backend, select
from ._native import accumulator_dtype, dtype_code, plain_eager, reference_instead, stream_of
from ._validate import FLOATING, AvfastInputError, check_same_device, check_same_dtype, check_tensor

OP = "temporal_spatial_attention"
MODES = ("spatial", "temporal", "joint")
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Head dims the tiled GPU kernels are compiled for (templates / constexpr tiles); "cuda" must match
# csrc/cuda/attention_cuda.h::kAttnCudaHeadDims (the extension's `attention_head_dims`).
CUDA_HEAD_DIMS = TRITON_HEAD_DIMS = (16, 32, 64, 128)
XFORMERS_HEAD_DIMS = tuple(range(8, 257, 8))

# fp16/bf16 CUDA tensors default to Triton where it is installed: the CUDA C++ kernel multiplies in
# fp32 FMA (no tensor cores) while Triton's tl.dot uses them, and by a roofline estimate at the
# model's shapes (docs/kernels.md, "Which GPU backend") the FMA kernel is at best level (memory-bound small
# problems on GeForce cards) and up to ~15x slower (joint attention on A100/H100). fp32 is FMA in both.
TENSOR_CORE_DTYPES = (torch.float16, torch.bfloat16)

# Which of the three trailing axes (A1, A2, A3) = (F, H, W) are independent groups and which are tokens.
_GROUP_AXES = {"spatial": (0,), "temporal": (1, 2), "joint": ()}
_TOKEN_AXES = {"spatial": (1, 2), "temporal": (0,), "joint": (0, 1, 2)}


def default_scale(head_dim: int) -> float:
    return head_dim ** -0.5


# ---------------------------------------------------------------------------------------------
# Geometry: every tensor seen as [B, channels, A1, A2, A3]
# ---------------------------------------------------------------------------------------------
def _as5d(x: torch.Tensor) -> torch.Tensor:
    """Audio [B, C, T] as the view [B, C, 1, 1, T]; video unchanged."""
    return x[:, :, None, None, :] if x.dim() == 3 else x


def _effective_mode(x: torch.Tensor, mode: str) -> str:
    return "joint" if x.dim() == 3 else mode  # audio: tokens are all of T whatever the mode says


def _split(mode: str, sizes: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Group sizes padded to 2 and token sizes padded to 3 (padding in front: outermost)."""
    g = [sizes[a] for a in _GROUP_AXES[mode]]
    n = [sizes[a] for a in _TOKEN_AXES[mode]]
    return [1] * (2 - len(g)) + g, [1] * (3 - len(n)) + n


def _geometry(x: torch.Tensor, mode: str, head_dim: int) -> tuple[list[int], int, int]:
    """(sizes = [B, heads, D, g0, g1, n0, n1, n2], G, N) for qkv-shaped or out-shaped `x`."""
    x5 = _as5d(x)
    mode = _effective_mode(x, mode)
    g, n = _split(mode, tuple(x5.shape[2:]))
    return [x5.shape[0], -1, head_dim, *g, *n], math.prod(g), math.prod(n)


def _strides(x: torch.Tensor, mode: str) -> list[int]:
    """Strides [b, c, g0, g1, n0, n1, n2] of `x` in elements (size-1 padding gets stride 0)."""
    x5 = _as5d(x)
    mode = _effective_mode(x, mode)
    st = x5.stride()[2:]
    g = [st[a] for a in _GROUP_AXES[mode]]
    n = [st[a] for a in _TOKEN_AXES[mode]]
    return [x5.stride(0), x5.stride(1), *([0] * (2 - len(g)) + g), *([0] * (3 - len(n)) + n)]


def _native_sizes(qkv: torch.Tensor, mode: str, head_dim: int) -> list[int]:
    sizes, _, _ = _geometry(qkv, mode, head_dim)
    sizes[1] = qkv.shape[1] // 3 // head_dim
    return sizes


def _out_shape(qkv: torch.Tensor) -> list[int]:
    return [qkv.shape[0], qkv.shape[1] // 3, *qkv.shape[2:]]


def _lse_shape(qkv: torch.Tensor, mode: str, head_dim: int) -> list[int]:
    _, G, N = _geometry(qkv, mode, head_dim)
    return [qkv.shape[0], qkv.shape[1] // 3 // head_dim, G, N]


# ---------------------------------------------------------------------------------------------
# Reference (the oracle)
# ---------------------------------------------------------------------------------------------
def _to_problems(x: torch.Tensor, mode: str, head_dim: int) -> torch.Tensor:
    """[B, heads*D, A1, A2, A3] -> [B, heads, G, N, D] (explicit permute + reshape)."""
    B, C = x.shape[:2]
    A = x.shape[2:]
    x = x.reshape(B, C // head_dim, head_dim, *A)
    ga = [3 + a for a in _GROUP_AXES[mode]]
    ta = [3 + a for a in _TOKEN_AXES[mode]]
    G = math.prod(A[a] for a in _GROUP_AXES[mode])
    N = math.prod(A[a] for a in _TOKEN_AXES[mode])
    return x.permute(0, 1, *ga, *ta, 2).reshape(B, C // head_dim, G, N, head_dim)


def _from_problems(o: torch.Tensor, mode: str, shape5: tuple[int, ...]) -> torch.Tensor:
    """Inverse of _to_problems: [B, heads, G, N, D] -> [B, heads*D, A1, A2, A3]."""
    B, heads, _, _, D = o.shape
    A = shape5[2:]
    ga, ta = _GROUP_AXES[mode], _TOKEN_AXES[mode]
    o = o.reshape(B, heads, *[A[a] for a in ga], *[A[a] for a in ta], D)
    order = list(ga) + list(ta)  # positions of A axes in o, starting at dim 2
    perm = [0, 1, o.dim() - 1] + [2 + order.index(a) for a in range(3)]
    return o.permute(*perm).reshape(B, heads * D, *A)


def _reference(qkv: torch.Tensor, mode: str, head_dim: int, scale: float | None,
               with_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    scale = default_scale(head_dim) if scale is None else scale
    x5 = _as5d(qkv)
    mode = _effective_mode(qkv, mode)
    acc = accumulator_dtype(qkv.dtype)
    C = x5.shape[1] // 3
    q, k, v = (_to_problems(t.to(acc), mode, head_dim) for t in x5.split(C, dim=1))
    s = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, heads, G, N, N]: the oracle may materialise it
    lse = torch.logsumexp(s, dim=-1) if with_lse else None
    o = torch.matmul(torch.softmax(s, dim=-1), v)
    out = _from_problems(o, mode, (x5.shape[0], C, *x5.shape[2:])).to(qkv.dtype)
    return out.reshape(_out_shape(qkv)), lse


def attention_reference_with_lse(qkv: torch.Tensor, mode: str = "spatial", head_dim: int = 64,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale Q K^T) V with explicit permutes, in fp32 (fp64 for fp64), and the log-sum-exp of
    each query row (what a kernel's backward needs; the oracle for the kernels' lse output)."""
    return _reference(qkv, mode, head_dim, scale, with_lse=True)


def attention_reference(qkv: torch.Tensor, mode: str = "spatial", head_dim: int = 64,
                        scale: float | None = None) -> torch.Tensor:
    """The PyTorch composite (differentiable, exportable): the oracle for every backend, and the
    benchmarks' baseline, so it computes only what it returns (no log-sum-exp)."""
    return _reference(qkv, mode, head_dim, scale, with_lse=False)[0]


def attention_backward_reference(grad_out, qkv, out, lse, mode, head_dim, scale):
    """The attention backward written out (softmax Jacobian, explicit permutes, fp32/fp64): an
    oracle independent of autograd. `out` and `lse` are accepted for signature parity."""
    x5 = _as5d(qkv)
    mode = _effective_mode(qkv, mode)
    acc = accumulator_dtype(qkv.dtype)
    C = x5.shape[1] // 3
    q, k, v = (_to_problems(t.to(acc), mode, head_dim) for t in x5.split(C, dim=1))
    g = _to_problems(_as5d(grad_out).to(acc), mode, head_dim)
    p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)
    dv = torch.matmul(p.transpose(-1, -2), g)
    dp = torch.matmul(g, v.transpose(-1, -2))
    ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True))
    dq = torch.matmul(ds, k) * scale
    dk = torch.matmul(ds.transpose(-1, -2), q) * scale
    shape5 = (x5.shape[0], C, *x5.shape[2:])
    grad = torch.cat([_from_problems(t, mode, shape5) for t in (dq, dk, dv)], dim=1)
    return grad.to(qkv.dtype).reshape(qkv.shape)


# ---------------------------------------------------------------------------------------------
# PyTorch's own attention: the baseline the benchmarks and the low-precision tests measure against
# ---------------------------------------------------------------------------------------------
def sdpa_problems(x: torch.Tensor, mode: str, head_dim: int) -> torch.Tensor:
    """[B, heads*D, ...] -> [B*G, heads, N, D] in one copy: the 4-D layout PyTorch's fused SDPA
    kernels take (given 5-D [B, heads, G, N, D] inputs SDPA falls back to its unfused math path)."""
    x5 = _as5d(x)
    mode = _effective_mode(x, mode)
    B, C = x5.shape[:2]
    A = x5.shape[2:]
    ga, ta = _GROUP_AXES[mode], _TOKEN_AXES[mode]
    x6 = x5.reshape(B, C // head_dim, head_dim, *A)
    problems = x6.permute(0, *[3 + a for a in ga], 1, *[3 + a for a in ta], 2)
    shape = (B * math.prod(A[a] for a in ga), C // head_dim, math.prod(A[a] for a in ta), head_dim)
    return problems.reshape(shape).contiguous()  # the fused kernels need unit-stride D (joint mode's view has not)


def attention_sdpa(qkv: torch.Tensor, mode: str = "spatial", head_dim: int = 64,
                   scale: float | None = None) -> torch.Tensor:
    """What a model does without the fused op: q, k, v permuted to [B*G, heads, N, D] copies,
    `F.scaled_dot_product_attention` (PyTorch's fused flash kernel on CPU and CUDA), permuted back."""
    x5 = _as5d(qkv)
    mode = _effective_mode(qkv, mode)
    C = x5.shape[1] // 3
    q, k, v = (sdpa_problems(t, mode, head_dim) for t in x5.split(C, dim=1))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
    B, A = x5.shape[0], x5.shape[2:]
    ga, ta = _GROUP_AXES[mode], _TOKEN_AXES[mode]
    o = o.reshape(B, *[A[a] for a in ga], -1, *[A[a] for a in ta], head_dim)  # a view
    # o's dims: B, group axes, heads, token axes, D -> B, heads, D, A1, A2, A3.
    where = {a: 1 + i for i, a in enumerate(ga)} | {a: 2 + len(ga) + i for i, a in enumerate(ta)}
    out = o.permute(0, 1 + len(ga), o.dim() - 1, *[where[a] for a in range(3)])
    return out.reshape(_out_shape(qkv))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _check_args(op: str, qkv: torch.Tensor, mode: str, head_dim: int, scale: float | None) -> None:
    check_tensor(op, "qkv", qkv, layout="[B, 3C, F, H, W] or [B, 3C, T]")
    if qkv.dim() not in (3, 5):
        raise AvfastInputError(f"{op}: `qkv` must have 5 dimensions [B, 3C, F, H, W] (video) or 3 [B, 3C, T] "
                               f"(audio), got {qkv.dim()} with shape {list(qkv.shape)}")
    if not isinstance(mode, str) or mode not in MODES:
        raise AvfastInputError(f"{op}: `mode` must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(head_dim, int) or head_dim < 1:
        raise AvfastInputError(f"{op}: `head_dim` must be a positive int, got {head_dim!r}")
    if qkv.shape[1] % 3:
        raise AvfastInputError(f"{op}: `qkv` channels (dim 1) must be 3 * C (q, k, v blocks), got {qkv.shape[1]}, "
                               f"not divisible by 3")
    C = qkv.shape[1] // 3
    if C % head_dim:
        raise AvfastInputError(f"{op}: channels per q/k/v block C = {C} must be divisible by `head_dim` = "
                               f"{head_dim} (heads = C // head_dim), got remainder {C % head_dim}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise AvfastInputError(f"{op}: `scale` must be a finite float or None, got {scale!r}")


def _check_backward(grad_out, qkv, out, lse, mode, head_dim) -> None:
    op = OP + "_backward"
    _check_args(op, qkv, mode, head_dim, None)
    check_tensor(op, "grad_out", grad_out, ndim=qkv.dim())
    check_tensor(op, "lse", lse, ndim=4, dtypes=(accumulator_dtype(qkv.dtype),))
    check_same_device(op, grad_out=grad_out, qkv=qkv, out=out, lse=lse)
    check_same_dtype(op, grad_out=grad_out, qkv=qkv, out=out)
    for name, t, want in (("grad_out", grad_out, _out_shape(qkv)), ("out", out, _out_shape(qkv)),
                          ("lse", lse, _lse_shape(qkv, mode, head_dim))):
        if list(t.shape) != want:
            raise AvfastInputError(f"{op}: `{name}` must have shape {want}, got {list(t.shape)}")


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
def _empty_outputs(qkv, mode, head_dim):
    out = qkv.new_empty(_out_shape(qkv))
    lse = torch.empty(_lse_shape(qkv, mode, head_dim), dtype=accumulator_dtype(qkv.dtype), device=qkv.device)
    return out, lse


# The CPU kernels take microseconds on small problems (audio: ~30 us), so the Python geometry
# (views, list building: ~15 us) is memoised per (shape, strides, mode, head_dim).
_CPU_GEOMETRY: dict = {}


def _cpu_geometry(mode, head_dim, *tensors):
    key = (mode, head_dim, tensors[0].shape, *(t.stride() for t in tensors))
    hit = _CPU_GEOMETRY.get(key)
    if hit is None:
        if len(_CPU_GEOMETRY) > 4096:
            _CPU_GEOMETRY.clear()
        qkv = tensors[0]
        hit = _CPU_GEOMETRY[key] = (_native_sizes(qkv, mode, head_dim), _out_shape(qkv),
                                    _lse_shape(qkv, mode, head_dim), *(_strides(t, mode) for t in tensors))
    return hit


def _forward_cpu(qkv, mode, head_dim, scale):
    sizes, out_shape, lse_shape, _ = _cpu_geometry(mode, head_dim, qkv)
    out = qkv.new_empty(out_shape)
    lse = torch.empty(lse_shape, dtype=torch.float32)
    _, _, _, qkv_strides, out_strides = _cpu_geometry(mode, head_dim, qkv, out)
    _ext.load("cpu").attention_forward(dtype_code(qkv), qkv.data_ptr(), out.data_ptr(), lse.data_ptr(), sizes,
                                       qkv_strides, out_strides, scale)
    return out, lse


def _backward_cpu(grad_out, qkv, out, lse, mode, head_dim, scale):
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    lse = lse.contiguous()  # keep a reference: the kernel gets a raw pointer
    sizes, _, _, qkv_strides, go_strides, out_strides, gq_strides = _cpu_geometry(mode, head_dim, qkv, grad_out,
                                                                                  out, grad_qkv)
    _ext.load("cpu").attention_backward(dtype_code(qkv), grad_out.data_ptr(), qkv.data_ptr(), out.data_ptr(),
                                        lse.data_ptr(), grad_qkv.data_ptr(), sizes, go_strides, qkv_strides,
                                        out_strides, gq_strides, scale)
    return grad_qkv


def _forward_cuda(qkv, mode, head_dim, scale):
    out, lse = _empty_outputs(qkv, mode, head_dim)
    with torch.cuda.device(qkv.device):
        _ext.load("cuda").attention_forward(dtype_code(qkv), qkv.data_ptr(), out.data_ptr(), lse.data_ptr(),
                                            _native_sizes(qkv, mode, head_dim), _strides(qkv, mode),
                                            _strides(out, mode), scale, stream_of(qkv))
    return out, lse


def _backward_cuda(grad_out, qkv, out, lse, mode, head_dim, scale):
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    lse = lse.contiguous()
    delta = torch.empty_like(lse)  # workspace: delta_i = dO_i . O_i per query row
    with torch.cuda.device(qkv.device):
        _ext.load("cuda").attention_backward(
            dtype_code(qkv), grad_out.data_ptr(), qkv.data_ptr(), out.data_ptr(), lse.data_ptr(), delta.data_ptr(),
            grad_qkv.data_ptr(), _native_sizes(qkv, mode, head_dim), _strides(grad_out, mode), _strides(qkv, mode),
            _strides(out, mode), _strides(grad_qkv, mode), scale, stream_of(qkv))
    return grad_qkv


def _flat_for_triton(x: torch.Tensor, mode: str, head_dim: int) -> torch.Tensor:
    """x itself when its token axes flatten to one stride (every layout the model makes), else a
    contiguous copy (only exotic strided views pay for it)."""
    from ..triton.attention import flatten_tokens

    ok = flatten_tokens(_geometry(x, mode, head_dim)[0], _strides(x, mode)) is not None
    return x if ok else x.contiguous()


def _forward_triton(qkv, mode, head_dim, scale):
    from ..triton import attention as kernels  # lazily: TRITON_INTERPRET must be set before import

    qkv = _flat_for_triton(qkv, mode, head_dim)
    out, lse = _empty_outputs(qkv, mode, head_dim)
    kernels.forward(qkv, out, lse, _native_sizes(qkv, mode, head_dim), _strides(qkv, mode), _strides(out, mode),
                    scale)
    return out, lse


def _backward_triton(grad_out, qkv, out, lse, mode, head_dim, scale):
    from ..triton import attention as kernels

    grad_out, qkv, out = (_flat_for_triton(t, mode, head_dim) for t in (grad_out, qkv, out))
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    kernels.backward(grad_out, qkv, out, lse.contiguous(), grad_qkv, _native_sizes(qkv, mode, head_dim),
                     _strides(grad_out, mode), _strides(qkv, mode), _strides(out, mode), _strides(grad_qkv, mode),
                     scale)
    return grad_qkv


def _xformers_problems(x, mode, head_dim):
    """[B, C, ...] -> [B*G, N, heads, D] strided view for xformers (it takes the strides as given)."""
    p = _to_problems(_as5d(x), _effective_mode(x, mode), head_dim)  # [B, heads, G, N, D], a copy
    B, heads, G, N, D = p.shape
    return p.permute(0, 2, 3, 1, 4).reshape(B * G, N, heads, D)


def _forward_xformers(qkv, mode, head_dim, scale):
    # xformers wants [batch, tokens, heads, D]; its autograd runs the backward, so this backend
    # returns lse from the (cheap) logsumexp of its own forward op.
    import xformers.ops as xops

    x5 = _as5d(qkv)
    C = x5.shape[1] // 3
    q, k, v = (_xformers_problems(t, _effective_mode(qkv, mode), head_dim) for t in x5.split(C, dim=1))
    o, lse = xops.fmha.memory_efficient_attention_forward_requires_grad(q, k, v, scale=scale)
    B, heads, G, N = _lse_shape(qkv, mode, head_dim)
    o = o.reshape(B, G, N, heads, head_dim).permute(0, 3, 1, 2, 4)
    out = _from_problems(o, _effective_mode(qkv, mode), (x5.shape[0], C, *x5.shape[2:])).reshape(_out_shape(qkv))
    return out, lse[..., :N].reshape(B, G, heads, N).transpose(1, 2).float()


def _backward_xformers(grad_out, qkv, out, lse, mode, head_dim, scale):
    # Custom-op bodies run below autograd, so call xformers' explicit backward op.
    import xformers.ops as xops

    x5 = _as5d(qkv)
    m = _effective_mode(qkv, mode)
    C = x5.shape[1] // 3
    q, k, v = (_xformers_problems(t, m, head_dim) for t in x5.split(C, dim=1))
    B, heads, G, N = lse.shape
    lse_x = lse.transpose(1, 2).reshape(B * G, heads, N).contiguous()
    dq, dk, dv = xops.fmha.memory_efficient_attention_backward(
        _xformers_problems(grad_out, m, head_dim), _xformers_problems(out, m, head_dim), lse_x, q, k, v,
        scale=scale)
    shape5 = (x5.shape[0], C, *x5.shape[2:])
    parts = [_from_problems(t.reshape(B, G, N, heads, head_dim).permute(0, 3, 1, 2, 4), m, shape5)
             for t in (dq, dk, dv)]
    return torch.cat(parts, dim=1).reshape(qkv.shape)


# What each backend supports for this op, in default order (see avfast.backends.Kernel): the CPU
# kernels on CPU tensors; on CUDA tensors the CUDA C++ kernels, or Triton first for fp16/bf16 (tensor
# cores); xformers only when forced.
KERNELS = {
    "reference": Kernel(lambda qkv, mode, d, s: attention_reference_with_lse(qkv, mode, d, s),
                        attention_backward_reference, FLOATING),
    "cpu": Kernel(_forward_cpu, _backward_cpu, GPU_DTYPES, devices=("cpu",)),
    "cuda": Kernel(_forward_cuda, _backward_cuda, GPU_DTYPES, devices=("cuda",), limits={"head_dim": CUDA_HEAD_DIMS}),
    "triton": Kernel(_forward_triton, _backward_triton, GPU_DTYPES, devices=("cuda",),
                     limits={"head_dim": TRITON_HEAD_DIMS}, preferred_for=TENSOR_CORE_DTYPES),
    "xformers": Kernel(_forward_xformers, _backward_xformers, GPU_DTYPES, limits={"head_dim": XFORMERS_HEAD_DIMS}),
}
# Views of KERNELS (read by tests and tools; declare capabilities in KERNELS only).
SUPPORTS = dtypes_by_backend(KERNELS)
GPU_HEAD_DIMS = {name: k.limits["head_dim"] for name, k in KERNELS.items() if "head_dim" in k.limits}


def _choose(op: str, qkv: torch.Tensor, head_dim: int) -> str:
    return select(op, qkv.device, qkv.dtype, KERNELS, head_dim=head_dim)


# ---------------------------------------------------------------------------------------------
# Custom ops: forward (out, lse), backward, fake impls, autograd
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("avfast::temporal_spatial_attention", mutates_args=())
def _attention_op(qkv: torch.Tensor, mode: str, head_dim: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_args(OP, qkv, mode, head_dim, scale)
    out, lse = KERNELS[_choose(OP, qkv, head_dim)].forward(qkv, mode, head_dim, scale)
    return out.contiguous(), lse.contiguous()


@_attention_op.register_fake
def _(qkv: torch.Tensor, mode: str, head_dim: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_args(OP, qkv, mode, head_dim, scale)
    return _empty_outputs(qkv, mode, head_dim)


@torch.library.custom_op("avfast::temporal_spatial_attention_backward", mutates_args=())
def _attention_backward_op(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                           mode: str, head_dim: int, scale: float) -> torch.Tensor:
    _check_backward(grad_out, qkv, out, lse, mode, head_dim)
    backend = _choose(OP + "_backward", qkv, head_dim)
    return KERNELS[backend].backward(grad_out, qkv, out, lse, mode, head_dim, scale).contiguous()


@_attention_backward_op.register_fake
def _(grad_out, qkv, out, lse, mode, head_dim, scale):
    _check_backward(grad_out, qkv, out, lse, mode, head_dim)
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    qkv, mode, head_dim, scale = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse)
    ctx.mode, ctx.head_dim, ctx.scale = mode, head_dim, scale


def _backward(ctx, grad_out: torch.Tensor, grad_lse: torch.Tensor | None):
    # lse is an auxiliary output for the backward pass; gradients flowing into it are not supported.
    qkv, out, lse = ctx.saved_tensors
    grad_qkv = torch.ops.avfast.temporal_spatial_attention_backward(grad_out, qkv, out, lse, ctx.mode,
                                                                    ctx.head_dim, ctx.scale)
    return grad_qkv, None, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def temporal_spatial_attention(qkv: torch.Tensor, mode: str = "spatial", head_dim: int = 64,
                               scale: float | None = None) -> torch.Tensor:
    """Multi-head self-attention over the model's own layout.

    `qkv` [B, 3C, F, H, W] or [B, 3C, T] (q, k, v channel blocks; heads = C // head_dim) ->
    [B, C, F, H, W] / [B, C, T]. `mode` is "spatial", "temporal" or "joint" for video (ignored
    for audio, which attends over T). `scale` defaults to head_dim ** -0.5. Differentiable
    (first order), works under torch.compile(fullgraph=True).
    """
    _check_args(OP, qkv, mode, head_dim, scale)
    scale = default_scale(head_dim) if scale is None else float(scale)
    if reference_instead(qkv):
        return attention_reference(qkv, mode, head_dim, scale)
    if _plain_cpu_inference(qkv) and _choose(OP, qkv, head_dim) == "cpu":
        return _forward_cpu(qkv, mode, head_dim, scale)[0]
    return torch.ops.avfast.temporal_spatial_attention(qkv, mode, head_dim, scale)[0]


def _plain_cpu_inference(qkv: torch.Tensor) -> bool:
    """Eager inference on a plain CPU tensor: the CPU kernel is called directly (the custom-op
    dispatch costs ~12 us, a third of an audio-sized call); autograd still goes through torch.ops."""
    return (qkv.device.type == "cpu" and not (qkv.requires_grad and torch.is_grad_enabled())
            and plain_eager(qkv))
