"""Easy fusion (CMMD, Fig. 6): cross-modal resample + concat, as one fused op.

    v [B, Cv, F, H, W], a [B, Ca, T]  ->
    v_fused [B, Cv+Ca, F, H, W] = cat(v, nearest_{T->F}(a) repeated over H x W)
    a_fused [B, Ca+Cv, T]       = cat(a, nearest_{F->T}(mean_{H,W}(v)))

Each branch keeps its own channels first. The nearest-neighbour rule is exactly that of
`torch.nn.functional.interpolate(mode="nearest")`; the pooling accumulates in fp32 (fp64 for
fp64 inputs). The op is linear, so its backward is a second fused op whose own backward is the
forward op again (double backward comes for free).

Backends: reference (PyTorch composite, the oracle), cpu (OpenMP C++), cuda (CUDA C++), triton.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _ext
from ..backends import Kernel, dtypes_by_backend, select
from ._native import accumulator_dtype, dtype_code, eager_native_backend, reference_instead, stream_of
from ._validate import FLOATING, check_dim_match, check_same_device, check_same_dtype, check_tensor

OP = "easy_fusion"
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Reference (the oracle)
# ---------------------------------------------------------------------------------------------
def nearest_indices(in_size: int, out_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index of each output position under interpolate(mode="nearest"), as int64 [out_size]."""
    src = torch.arange(in_size, dtype=torch.float32, device=device).view(1, 1, in_size)
    return F.interpolate(src, size=out_size, mode="nearest").view(out_size).long()


def easy_fusion_reference(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch composite of easy fusion; differentiable, exportable, the oracle for every backend."""
    B, _, frames, H, W = v.shape
    Ca, T = a.shape[1], a.shape[2]
    a_on_frames = F.interpolate(a, size=frames, mode="nearest")  # [B, Ca, F]
    v_fused = torch.cat([v, a_on_frames[..., None, None].expand(B, Ca, frames, H, W)], dim=1)
    # The plain mean, as a model would write it: torch's reductions accumulate bf16/fp16 in fp32
    # already, so this has the bits of v.to(fp32).mean(...) forward and backward (tested) without the
    # fp32 copy of v that mean(dtype=fp32) makes on the CPU.
    pooled = v.mean(dim=(3, 4))  # [B, Cv, F]
    a_fused = torch.cat([a, F.interpolate(pooled, size=T, mode="nearest")], dim=1)
    return v_fused, a_fused


def easy_fusion_backward_reference(grad_vf: torch.Tensor, grad_af: torch.Tensor, video_channels: int,
                                   audio_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjoint of easy fusion written out with index_add (an independent check of autograd)."""
    Cv, Ca = video_channels, audio_channels
    B, _, frames, H, W = grad_vf.shape
    T = grad_af.shape[2]
    acc = accumulator_dtype(grad_vf.dtype)
    frame_of_step = nearest_indices(frames, T, grad_vf.device)  # a_fused step t reads frame [t]
    step_of_frame = nearest_indices(T, frames, grad_vf.device)  # v_fused frame f reads step [f]
    gpool = torch.zeros(B, Cv, frames, dtype=acc, device=grad_vf.device)
    gpool.index_add_(2, frame_of_step, grad_af[:, Ca:].to(acc))
    grad_v = (grad_vf[:, :Cv].to(acc) + (gpool / (H * W))[..., None, None]).to(grad_vf.dtype)
    gsum = torch.zeros(B, Ca, T, dtype=acc, device=grad_vf.device)
    gsum.index_add_(2, step_of_frame, grad_vf[:, Cv:].to(acc).sum(dim=(3, 4)))
    grad_a = (grad_af[:, :Ca].to(acc) + gsum).to(grad_af.dtype)
    return grad_v, grad_a


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _check_inputs(v: torch.Tensor, a: torch.Tensor) -> None:
    check_tensor(OP, "v", v, ndim=5, layout="[B, Cv, F, H, W]")
    check_tensor(OP, "a", a, ndim=3, layout="[B, Ca, T]")
    check_same_device(OP, v=v, a=a)
    check_same_dtype(OP, v=v, a=a)
    check_dim_match(OP, "batch size (dim 0)", v=v.shape[0], a=a.shape[0])


def _check_grads(grad_vf: torch.Tensor, grad_af: torch.Tensor, video_channels: int, audio_channels: int) -> None:
    op = OP + "_backward"
    check_tensor(op, "grad_vf", grad_vf, ndim=5, layout="[B, Cv+Ca, F, H, W]")
    check_tensor(op, "grad_af", grad_af, ndim=3, layout="[B, Ca+Cv, T]")
    check_same_device(op, grad_vf=grad_vf, grad_af=grad_af)
    check_same_dtype(op, grad_vf=grad_vf, grad_af=grad_af)
    check_dim_match(op, "batch size (dim 0)", grad_vf=grad_vf.shape[0], grad_af=grad_af.shape[0])
    total = video_channels + audio_channels
    check_dim_match(op, "channels (dim 1) = video_channels + audio_channels",
                    grad_vf=grad_vf.shape[1], grad_af=grad_af.shape[1], video_plus_audio=total)
    if video_channels < 1 or audio_channels < 1:
        raise ValueError(f"{op}: video_channels and audio_channels must be >= 1, got {video_channels}, {audio_channels}")


def _sizes(B: int, Cv: int, Ca: int, frames: int, H: int, W: int, T: int) -> list[int]:
    return [B, Cv, Ca, frames, H, W, T]


def _outputs_like(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, Cv, frames, H, W = v.shape
    Ca, T = a.shape[1], a.shape[2]
    return v.new_empty(B, Cv + Ca, frames, H, W), a.new_empty(B, Ca + Cv, T)


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
def _forward_cpu(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vf, af = _outputs_like(v, a)
    B, Cv, frames, H, W = v.shape
    _ext.load("cpu").easy_fusion_forward(
        dtype_code(v), v.data_ptr(), a.data_ptr(), vf.data_ptr(), af.data_ptr(),
        _sizes(B, Cv, a.shape[1], frames, H, W, a.shape[2]), list(v.stride()), list(a.stride()))
    return vf, af


def _backward_cpu(gvf: torch.Tensor, gaf: torch.Tensor, Cv: int, Ca: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, _, frames, H, W = gvf.shape
    T = gaf.shape[2]
    gv, ga = gvf.new_empty(B, Cv, frames, H, W), gaf.new_empty(B, Ca, T)
    _ext.load("cpu").easy_fusion_backward(
        dtype_code(gvf), gvf.data_ptr(), gaf.data_ptr(), gv.data_ptr(), ga.data_ptr(),
        _sizes(B, Cv, Ca, frames, H, W, T), list(gvf.stride()), list(gaf.stride()))
    return gv, ga


def _forward_cuda(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vf, af = _outputs_like(v, a)
    B, Cv, frames, H, W = v.shape
    workspace = torch.empty(B * Cv * frames, dtype=accumulator_dtype(v.dtype), device=v.device)
    with torch.cuda.device(v.device):
        _ext.load("cuda").easy_fusion_forward(
            dtype_code(v), v.data_ptr(), a.data_ptr(), vf.data_ptr(), af.data_ptr(), workspace.data_ptr(),
            _sizes(B, Cv, a.shape[1], frames, H, W, a.shape[2]), list(v.stride()), list(a.stride()), stream_of(v))
    return vf, af


def _backward_cuda(gvf: torch.Tensor, gaf: torch.Tensor, Cv: int, Ca: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, _, frames, H, W = gvf.shape
    T = gaf.shape[2]
    gv, ga = gvf.new_empty(B, Cv, frames, H, W), gaf.new_empty(B, Ca, T)
    workspace = torch.empty(B * (Cv + Ca) * frames, dtype=accumulator_dtype(gvf.dtype), device=gvf.device)
    with torch.cuda.device(gvf.device):
        _ext.load("cuda").easy_fusion_backward(
            dtype_code(gvf), gvf.data_ptr(), gaf.data_ptr(), gv.data_ptr(), ga.data_ptr(), workspace.data_ptr(),
            _sizes(B, Cv, Ca, frames, H, W, T), list(gvf.stride()), list(gaf.stride()), stream_of(gvf))
    return gv, ga


def _forward_triton(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from ..triton import easy_fusion as kernels  # imported lazily: TRITON_INTERPRET must be set first

    return kernels.forward(v, a)


def _backward_triton(gvf: torch.Tensor, gaf: torch.Tensor, Cv: int, Ca: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..triton import easy_fusion as kernels

    return kernels.backward(gvf, gaf, Cv, Ca)


# What each backend supports for this op, in default order (see avfast.backends.Kernel).
KERNELS = {
    "reference": Kernel(easy_fusion_reference, easy_fusion_backward_reference, FLOATING),
    "cpu": Kernel(_forward_cpu, _backward_cpu, FLOATING, devices=("cpu",)),
    "cuda": Kernel(_forward_cuda, _backward_cuda, FLOATING, devices=("cuda",)),
    "triton": Kernel(_forward_triton, _backward_triton, TRITON_DTYPES, devices=("cuda",)),
}
SUPPORTS = dtypes_by_backend(KERNELS)  # a view of KERNELS


# ---------------------------------------------------------------------------------------------
# Custom ops: forward, backward, fake (meta) impls and autograd
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("avfast::easy_fusion", mutates_args=())
def _easy_fusion_op(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(v, a)
    vf, af = KERNELS[select(OP, v.device, v.dtype, KERNELS)].forward(v, a)
    return vf.contiguous(), af.contiguous()


@_easy_fusion_op.register_fake
def _(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(v, a)
    return _outputs_like(v, a)


@torch.library.custom_op("avfast::easy_fusion_backward", mutates_args=())
def _easy_fusion_backward_op(grad_vf: torch.Tensor, grad_af: torch.Tensor, video_channels: int,
                             audio_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_grads(grad_vf, grad_af, video_channels, audio_channels)
    backend = select(OP + "_backward", grad_vf.device, grad_vf.dtype, KERNELS)
    gv, ga = KERNELS[backend].backward(grad_vf, grad_af, video_channels, audio_channels)
    return gv.contiguous(), ga.contiguous()


@_easy_fusion_backward_op.register_fake
def _(grad_vf: torch.Tensor, grad_af: torch.Tensor, video_channels: int,
      audio_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_grads(grad_vf, grad_af, video_channels, audio_channels)
    B, _, frames, H, W = grad_vf.shape
    return grad_vf.new_empty(B, video_channels, frames, H, W), grad_af.new_empty(B, audio_channels, grad_af.shape[2])


def _setup_context(ctx, inputs, output) -> None:
    v, a = inputs
    ctx.video_channels, ctx.audio_channels = v.shape[1], a.shape[1]


def _backward(ctx, grad_vf: torch.Tensor, grad_af: torch.Tensor):
    return torch.ops.avfast.easy_fusion_backward(grad_vf, grad_af, ctx.video_channels, ctx.audio_channels)


_easy_fusion_op.register_autograd(_backward, setup_context=_setup_context)


def _backward_of_backward(ctx, grad_gv: torch.Tensor, grad_ga: torch.Tensor):
    # The backward map is the adjoint of a linear map, so its adjoint is the forward op itself.
    gvf, gaf = torch.ops.avfast.easy_fusion(grad_gv, grad_ga)
    return gvf, gaf, None, None


_easy_fusion_backward_op.register_autograd(_backward_of_backward, setup_context=lambda ctx, inputs, output: None)


# ---------------------------------------------------------------------------------------------
# Eager fast path: the cpu/cuda kernels without the custom-op dispatch
# ---------------------------------------------------------------------------------------------
class _EagerEasyFusion(torch.autograd.Function):
    """Autograd for the cpu/cuda kernels in plain eager mode (see `plain_eager`): the custom-op
    dispatch costs ~20 us a call, a fifth of a batch-1 forward. A backward that must itself be
    differentiable (create_graph) goes through the registered backward op, whose autograd gives
    double backward."""

    @staticmethod
    def forward(ctx, backend, v, a):
        ctx.backend, ctx.channels = backend, (v.shape[1], a.shape[1])
        return KERNELS[backend].forward(v, a)

    @staticmethod
    def backward(ctx, grad_vf, grad_af):
        Cv, Ca = ctx.channels
        if torch.is_grad_enabled():
            gv, ga = torch.ops.avfast.easy_fusion_backward(grad_vf, grad_af, Cv, Ca)
        else:
            _check_grads(grad_vf, grad_af, Cv, Ca)
            gv, ga = KERNELS[ctx.backend].backward(grad_vf, grad_af, Cv, Ca)
        return None, gv, ga


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def easy_fusion(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse video features `v` [B, Cv, F, H, W] and audio features `a` [B, Ca, T] (CMMD easy fusion).

    Returns `(v_fused [B, Cv+Ca, F, H, W], a_fused [B, Ca+Cv, T])`. Differentiable, works under
    torch.compile(fullgraph=True); the backend follows the device unless forced with
    `avfast.backend(...)` / `AVFAST_BACKEND`.
    """
    _check_inputs(v, a)  # here too, so a wrong argument type gets our message, not the dispatcher's
    if reference_instead(v, a):
        return easy_fusion_reference(v, a)
    backend = eager_native_backend(OP, KERNELS, v, a)
    if backend is not None:
        if torch.is_grad_enabled() and (v.requires_grad or a.requires_grad):
            return _EagerEasyFusion.apply(backend, v, a)
        return KERNELS[backend].forward(v, a)
    return torch.ops.avfast.easy_fusion(v, a)
