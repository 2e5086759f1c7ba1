"""Joint contrastive diffusion loss (CMMD Eq. 6, Algorithm 1) as one fused op.

    pred_v [G, B, *Sv], pred_a [G, B, *Sa]  predictions of the denoiser for G groups of B pairs:
                                            group 0 the positives, groups 1..Kv video negatives (with
                                            their true audio), groups Kv+1..G-1 audio negatives
                                            (with their true video), as avfast.train.evaluate_groups
                                            returns them;
    target_v [B, *Sv], target_a [B, *Sa]    the positives' velocity targets. A negative's target is
                                            its positive's: Eq. 6 scores how well the model still
                                            predicts the true v when the pair is broken.

    e_m[g, b] = mean over elements of (pred_m[g, b] - target_m[b])^2           (m = video, audio)
    j[g, b]   = weight_v e_v[g, b] + weight_a e_a[g, b]                         (joint error)
    L = j[0], Lneg_v = mean of j over the video groups, Lneg_a = over the audio groups (0 if none)
    L_cont = L - eta (Lneg_v + Lneg_a)                                          (eta = 5e-5)

The op returns a [4, B] tensor (L_cont, L, Lneg_v, Lneg_a) in the accumulator dtype (fp32, fp64
for fp64 inputs): per-sample values; `contrastive_loss` reduces them. Forward reads every input
once; backward is one fused pass that writes grad_pred of all groups and grad_target. Accumulation
is fp32 for fp16/bf16. Backends: reference, cpu (OpenMP), cuda, triton; all deterministic (no
atomics). Double backward is not implemented.

`contrastive_loss` calls the cpu/cuda kernels in plain eager mode without the custom-op dispatch
(`_EagerContrastiveLoss`), and in fp32/fp64 computes forward and backward in one pass over the
data; torch.compile, export, functorch and tensor subclasses go through the registered ops.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from .. import _ext
from ..backends import Kernel, dtypes_by_backend, select
from ._native import accumulator_dtype, dtype_code, eager_native_backend, reference_instead, stream_of
from ._validate import FLOATING, AvfastInputError, check_dim_match, check_same_device, check_same_dtype, check_tensor

OP = "contrastive_loss"
DEFAULT_ETA = 5e-5
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ROWS = ("loss", "positive", "negative_video", "negative_audio")


# ---------------------------------------------------------------------------------------------
# Reference (the oracle)
# ---------------------------------------------------------------------------------------------
def combine(sum_v: torch.Tensor, sum_a: torch.Tensor, n_v: int, n_a: int, num_video_negatives: int, eta: float,
            weight_v: float, weight_a: float) -> torch.Tensor:
    """[4, B] rows from the summed squared errors [G, B] of each modality (mirror of contrastive_combine)."""
    G, Kv = sum_v.shape[0], num_video_negatives
    Ka = G - 1 - Kv
    j = weight_v * (sum_v / n_v) + weight_a * (sum_a / n_a)
    pos = j[0]
    neg_v = j[1:1 + Kv].mean(0) if Kv > 0 else torch.zeros_like(pos)
    neg_a = j[1 + Kv:].mean(0) if Ka > 0 else torch.zeros_like(pos)
    return torch.stack([pos - eta * (neg_v + neg_a), pos, neg_v, neg_a])


def group_coefficients(grad: torch.Tensor, G: int, num_video_negatives: int, eta: float) -> torch.Tensor:
    """dOut/dj [G, B] from the upstream gradient [4, B] (mirror of contrastive_group_coef)."""
    Kv, Ka = num_video_negatives, G - 1 - num_video_negatives
    gc, gl, gnv, gna = grad.unbind(0)
    parts = [(gc + gl)[None]]
    if Kv > 0:
        parts.append(((gnv - eta * gc) / Kv)[None].expand(Kv, -1))
    if Ka > 0:
        parts.append(((gna - eta * gc) / Ka)[None].expand(Ka, -1))
    return torch.cat(parts)


def contrastive_loss_reference(pred_v: torch.Tensor, pred_a: torch.Tensor, target_v: torch.Tensor,
                               target_a: torch.Tensor, num_video_negatives: int, eta: float = DEFAULT_ETA,
                               weight_v: float = 1.0, weight_a: float = 1.0) -> torch.Tensor:
    """PyTorch composite of the loss, [4, B]; differentiable, exportable, the oracle for every backend."""
    acc = accumulator_dtype(pred_v.dtype)
    G, B = pred_v.shape[:2]

    def sq_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.to(acc) - target.to(acc).unsqueeze(0)).square().reshape(G, B, -1).sum(-1)

    return combine(sq_sum(pred_v, target_v), sq_sum(pred_a, target_a), target_v[0].numel(), target_a[0].numel(),
                   num_video_negatives, eta, weight_v, weight_a)


def contrastive_loss_backward_reference(grad: torch.Tensor, pred_v: torch.Tensor, pred_a: torch.Tensor,
                                        target_v: torch.Tensor, target_a: torch.Tensor, num_video_negatives: int,
                                        eta: float, weight_v: float, weight_a: float, targets: bool = True):
    """The gradient written out (an independent check of autograd): (g_pred_v, g_pred_a, g_target_v,
    g_target_a); the target gradients are None unless `targets`."""
    acc = accumulator_dtype(pred_v.dtype)
    G = pred_v.shape[0]
    coef = group_coefficients(grad.to(acc), G, num_video_negatives, eta)

    def one(pred: torch.Tensor, target: torch.Tensor, w: float):
        n = target[0].numel()
        c = (coef * (w * 2.0 / n)).view(*coef.shape, *([1] * (pred.dim() - 2)))
        gp = c * (pred.to(acc) - target.to(acc).unsqueeze(0))
        return gp.to(pred.dtype), (-gp.sum(0)).to(target.dtype) if targets else None

    gpv, gtv = one(pred_v, target_v, weight_v)
    gpa, gta = one(pred_a, target_a, weight_a)
    return gpv, gpa, gtv, gta


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _check_inputs(op: str, pred_v, pred_a, target_v, target_a, num_video_negatives: int) -> None:
    check_tensor(op, "pred_v", pred_v, layout="[G, B, ...]")
    check_tensor(op, "pred_a", pred_a, layout="[G, B, ...]")
    check_tensor(op, "target_v", target_v, layout="[B, ...]")
    check_tensor(op, "target_a", target_a, layout="[B, ...]")
    check_same_device(op, pred_v=pred_v, pred_a=pred_a, target_v=target_v, target_a=target_a)
    check_same_dtype(op, pred_v=pred_v, pred_a=pred_a, target_v=target_v, target_a=target_a)
    for m, pred, target in (("v", pred_v, target_v), ("a", pred_a, target_a)):
        if pred.dim() < 2 or pred.shape[1:] != target.shape:
            raise AvfastInputError(
                f"{op}: `pred_{m}` must have shape [G, {', '.join(map(str, target.shape))}] (G groups of "
                f"`target_{m}`'s shape), got [{', '.join(map(str, pred.shape))}]")
    check_dim_match(op, "number of groups G (dim 0)", pred_v=pred_v.shape[0], pred_a=pred_a.shape[0])
    G = pred_v.shape[0]
    if not isinstance(num_video_negatives, int) or not 0 <= num_video_negatives <= G - 1:
        raise AvfastInputError(f"{op}: `num_video_negatives` must be an int in [0, G - 1] = [0, {G - 1}], "
                               f"got {num_video_negatives!r}")


def _flat(pred_v, pred_a, target_v, target_a):
    G, B = pred_v.shape[:2]
    return pred_v.reshape(G, B, -1), pred_a.reshape(G, B, -1), target_v.reshape(B, -1), target_a.reshape(B, -1)


def _native_args(pv, pa, tv, ta, Kv: int, eta: float, wv: float, wa: float):
    G, B, Nv = pv.shape
    sizes = [G, B, Kv, Nv, pa.shape[2]]
    strides = [*pv.stride(), *pa.stride(), *tv.stride(), *ta.stride()]
    return sizes, strides, [float(eta), float(wv), float(wa)]


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _grads_like(pred_v, pred_a, target_v, target_a, targets: bool = True):
    """Contiguous gradient buffers; the target ones only when `targets` (None otherwise)."""
    def like(t):
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)

    return like(pred_v), like(pred_a), like(target_v) if targets else None, like(target_a) if targets else None


def _run_native(backend, pred_v, pred_a, target_v, target_a, Kv, eta, wv, wa, grad=None, targets=False):
    """(out [4, B], gradients) from the cpu or cuda kernels: with `grad` (the upstream gradient
    [4, B] to expect) the same pass also writes the gradients (the targets' only when `targets`);
    without it they are None."""
    pv, pa, tv, ta = _flat(pred_v, pred_a, target_v, target_a)
    acc = accumulator_dtype(pv.dtype)
    args = _native_args(pv, pa, tv, ta, Kv, eta, wv, wa)
    ext = _ext.load(backend)
    out = torch.empty(4, pv.shape[1], dtype=acc, device=pv.device)
    grads = _grads_like(pred_v, pred_a, target_v, target_a, targets) if grad is not None else (None,) * 4
    ptrs = [pv.data_ptr(), pa.data_ptr(), tv.data_ptr(), ta.data_ptr(), out.data_ptr()]
    if backend == "cpu":
        ext.contrastive_loss_forward(dtype_code(pv), *ptrs, *args, _ptr(grad), *map(_ptr, grads))
        return out, grads
    workspace = torch.empty(ext.contrastive_loss_workspace_elems(*args), dtype=acc, device=pv.device)
    with torch.cuda.device(pv.device):
        ext.contrastive_loss_forward(dtype_code(pv), *ptrs, workspace.data_ptr(), *args, stream_of(pv), _ptr(grad),
                                     *map(_ptr, grads))
    return out, grads


def _forward_native(backend, *args):
    return _run_native(backend, *args)[0]


def _backward_native(backend, grad, pred_v, pred_a, target_v, target_a, Kv, eta, wv, wa, targets=True):
    """The backward kernel of the cpu or cuda backend; target gradients only when `targets`."""
    pv, pa, tv, ta = _flat(pred_v, pred_a, target_v, target_a)
    outs = _grads_like(pred_v, pred_a, target_v, target_a, targets)
    g = grad.to(accumulator_dtype(pv.dtype)).contiguous()
    call = [dtype_code(pv), g.data_ptr(), pv.data_ptr(), pa.data_ptr(), tv.data_ptr(), ta.data_ptr(),
            *map(_ptr, outs), *_native_args(pv, pa, tv, ta, Kv, eta, wv, wa)]
    if backend == "cpu":
        _ext.load("cpu").contrastive_loss_backward(*call)
    else:
        with torch.cuda.device(pv.device):
            _ext.load("cuda").contrastive_loss_backward(*call, stream_of(pv))
    return outs


def _forward_triton(pred_v, pred_a, target_v, target_a, Kv, eta, wv, wa):
    from ..triton import contrastive_loss as kernels  # lazily: TRITON_INTERPRET must be set first

    pv, pa, tv, ta = _flat(pred_v, pred_a, target_v, target_a)
    return combine(kernels.sq_sums(pv, tv), kernels.sq_sums(pa, ta), pv.shape[2], pa.shape[2], Kv, eta, wv, wa)


def _backward_triton(grad, pred_v, pred_a, target_v, target_a, Kv, eta, wv, wa, targets=True):
    from ..triton import contrastive_loss as kernels

    pv, pa, tv, ta = _flat(pred_v, pred_a, target_v, target_a)
    gpv, gpa, gtv, gta = _grads_like(pred_v, pred_a, target_v, target_a, targets)
    coef = group_coefficients(grad.float(), pv.shape[0], Kv, eta)
    kernels.backward(coef * (2.0 * wv / pv.shape[2]), pv, tv, gpv, gtv)
    kernels.backward(coef * (2.0 * wa / pa.shape[2]), pa, ta, gpa, gta)
    return gpv, gpa, gtv, gta


# What each backend supports for this op, in default order (see avfast.backends.Kernel).
KERNELS = {
    "reference": Kernel(contrastive_loss_reference, contrastive_loss_backward_reference, FLOATING),
    "cpu": Kernel(functools.partial(_forward_native, "cpu"), functools.partial(_backward_native, "cpu"), FLOATING,
                  devices=("cpu",)),
    "cuda": Kernel(functools.partial(_forward_native, "cuda"), functools.partial(_backward_native, "cuda"), FLOATING,
                   devices=("cuda",)),
    "triton": Kernel(_forward_triton, _backward_triton, TRITON_DTYPES, devices=("cuda",)),
}
SUPPORTS = dtypes_by_backend(KERNELS)  # a view of KERNELS


# ---------------------------------------------------------------------------------------------
# Custom ops: forward, backward, fake (meta) impls and autograd
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("avfast::contrastive_loss", mutates_args=())
def _contrastive_loss_op(pred_v: torch.Tensor, pred_a: torch.Tensor, target_v: torch.Tensor, target_a: torch.Tensor,
                         num_video_negatives: int, eta: float, weight_v: float, weight_a: float) -> torch.Tensor:
    _check_inputs(OP, pred_v, pred_a, target_v, target_a, num_video_negatives)
    backend = select(OP, pred_v.device, pred_v.dtype, KERNELS)
    return KERNELS[backend].forward(pred_v, pred_a, target_v, target_a, num_video_negatives, eta, weight_v, weight_a)


@_contrastive_loss_op.register_fake
def _(pred_v, pred_a, target_v, target_a, num_video_negatives, eta, weight_v, weight_a):
    _check_inputs(OP, pred_v, pred_a, target_v, target_a, num_video_negatives)
    return pred_v.new_empty(4, pred_v.shape[1], dtype=accumulator_dtype(pred_v.dtype))


@torch.library.custom_op("avfast::contrastive_loss_backward", mutates_args=())
def _contrastive_loss_backward_op(grad: torch.Tensor, pred_v: torch.Tensor, pred_a: torch.Tensor,
                                  target_v: torch.Tensor, target_a: torch.Tensor, num_video_negatives: int,
                                  eta: float, weight_v: float, weight_a: float, grad_targets: bool = True
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_pred_v, grad_pred_a, grad_target_v, grad_target_a); the target gradients are empty
    [0]-tensors unless `grad_targets` (autograd asks only for what needs a gradient)."""
    op = OP + "_backward"
    _check_inputs(op, pred_v, pred_a, target_v, target_a, num_video_negatives)
    check_tensor(op, "grad", grad, ndim=2, layout="[4, B]")
    if grad.shape != (4, pred_v.shape[1]):
        raise AvfastInputError(f"{op}: `grad` must have shape [4, {pred_v.shape[1]}], got {list(grad.shape)}")
    backend = select(op, pred_v.device, pred_v.dtype, KERNELS)
    outs = KERNELS[backend].backward(grad, pred_v, pred_a, target_v, target_a, num_video_negatives, eta, weight_v, weight_a,
                              targets=grad_targets)
    return tuple(o.contiguous() if o is not None else _no_grad_like(ref) for o, ref in zip(outs, (pred_v, pred_a, target_v, target_a)))


def _no_grad_like(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(0)


@_contrastive_loss_backward_op.register_fake
def _(grad, pred_v, pred_a, target_v, target_a, num_video_negatives, eta, weight_v, weight_a, grad_targets=True):
    gpv, gpa, gtv, gta = _grads_like(pred_v, pred_a, target_v, target_a, grad_targets)
    return gpv, gpa, gtv if grad_targets else _no_grad_like(target_v), gta if grad_targets else _no_grad_like(target_a)


def _setup_context(ctx, inputs, output) -> None:
    pred_v, pred_a, target_v, target_a, ctx.kv, ctx.eta, ctx.wv, ctx.wa = inputs
    ctx.save_for_backward(pred_v, pred_a, target_v, target_a)


def _backward(ctx, grad: torch.Tensor):
    pred_v, pred_a, target_v, target_a = ctx.saved_tensors
    need = ctx.needs_input_grad
    gpv, gpa, gtv, gta = torch.ops.avfast.contrastive_loss_backward(
        grad, pred_v, pred_a, target_v, target_a, ctx.kv, ctx.eta, ctx.wv, ctx.wa, need[2] or need[3])
    return (gpv if need[0] else None, gpa if need[1] else None, gtv if need[2] else None,
            gta if need[3] else None, None, None, None, None)


_contrastive_loss_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Eager fast path: the cpu/cuda kernels under a plain autograd.Function, forward + backward fused
# ---------------------------------------------------------------------------------------------
# Where the forward also writes the gradient. The gradient it writes assumes an upstream gradient
# of 1 on `loss`; the backward scales it by the real one (GradScaler's factor, say). That product is
# as exact as computing it directly only when the stored gradient is in fp32/fp64: an fp16
# gradient of 2/(B N) * (pred - target) would underflow before a loss scale could rescue it, and
# bf16 would round twice.
_FUSED_GRAD_DTYPES = (torch.float32, torch.float64)


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    return rows.mean(1) if reduction == "mean" else rows.sum(1) if reduction == "sum" else rows


def _upstream_rows(grads, B: int, reduction: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The [4, B] upstream gradient of the op's rows from the gradients of the reduced outputs."""
    return torch.stack([torch.zeros(B, dtype=dtype, device=device) if g is None
                        else (g / B if reduction == "mean" else g).to(dtype).expand(B) for g in grads])


def _scale_(grad: torch.Tensor, upstream: torch.Tensor, batch_dim: int) -> torch.Tensor:
    """grad *= upstream in place (a scalar, or [B] per sample along `batch_dim`); skipped for an
    upstream of exactly 1 on the CPU, where checking costs no device sync."""
    if upstream.device.type == "cpu" and bool((upstream == 1).all()):
        return grad
    if upstream.dim() == 1:
        upstream = upstream.view(*([1] * batch_dim), -1, *([1] * (grad.dim() - batch_dim - 1)))
    return grad.mul_(upstream)


class _EagerContrastiveLoss(torch.autograd.Function):
    """Autograd for the cpu/cuda kernels in plain eager mode (see `plain_eager`): no custom-op
    dispatch, the batch reduction folded in, and, in fp32/fp64, ONE pass over the data for
    forward and backward: the loss is quadratic, so its gradient needs only the upstream gradient,
    and the forward writes it for an upstream gradient of 1 on `loss`. The backward hands that
    buffer over (scaled by the real upstream gradient) once; gradients flowing into the components,
    a second backward through a retained graph, and fp16/bf16 run the backward kernel instead.
    Memory: the precomputed gradient (the size of the predictions) lives from forward to backward."""

    @staticmethod
    def forward(ctx, backend, reduction, pred_v, pred_a, target_v, target_a, Kv, eta, wv, wa):
        B = pred_v.shape[1]
        ctx.set_materialize_grads(False)
        ctx.backend, ctx.reduction, ctx.params = backend, reduction, (Kv, eta, wv, wa)
        ctx.save_for_backward(pred_v, pred_a, target_v, target_a)
        grad = None
        if pred_v.dtype in _FUSED_GRAD_DTYPES:
            grad = torch.zeros(4, B, dtype=accumulator_dtype(pred_v.dtype), device=pred_v.device)
            grad[0] = 1.0 / B if reduction == "mean" else 1.0
        need = ctx.needs_input_grad[2:6]
        rows, grads = _run_native(backend, pred_v, pred_a, target_v, target_a, Kv, eta, wv, wa, grad,
                                  need[2] or need[3])
        ctx.grads = grads if grad is not None else None
        return tuple(_reduce(rows, reduction).unbind(0))

    @staticmethod
    def backward(ctx, g_loss, g_pos, g_neg_v, g_neg_a):
        need = ctx.needs_input_grad[2:6]
        grads, ctx.grads = ctx.grads, None  # handed over at most once: a retained graph recomputes
        if grads is not None and g_pos is None and g_neg_v is None and g_neg_a is None:
            if g_loss is None:
                return (None,) * 10
            if ctx.reduction == "none":
                grads = [None if g is None else _scale_(g, g_loss, 1 if k < 2 else 0) for k, g in enumerate(grads)]
            else:
                grads = [None if g is None else _scale_(g, g_loss, 0) for g in grads]
        else:
            pred_v, pred_a, target_v, target_a = saved = ctx.saved_tensors
            upstream = _upstream_rows((g_loss, g_pos, g_neg_v, g_neg_a), pred_v.shape[1], ctx.reduction,
                                      accumulator_dtype(pred_v.dtype), pred_v.device)
            grads = KERNELS[ctx.backend].backward(upstream, *saved, *ctx.params, targets=need[2] or need[3])
        return (None, None, *(g if n else None for g, n in zip(grads, need)), None, None, None, None)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
class ContrastiveLossOutput(NamedTuple):
    loss: torch.Tensor            # L_cont = L - eta (Lneg_v + Lneg_a), reduced: what to backpropagate
    positive: torch.Tensor        # L: the joint diffusion loss of the positives
    negative_video: torch.Tensor  # Lneg_v: mean joint error on the video negatives (0 if none)
    negative_audio: torch.Tensor  # Lneg_a: mean joint error on the audio negatives (0 if none)


def contrastive_loss(pred_v: torch.Tensor, pred_a: torch.Tensor, target_v: torch.Tensor, target_a: torch.Tensor,
                     num_video_negatives: int, eta: float = DEFAULT_ETA, weight_v: float = 1.0,
                     weight_a: float = 1.0, reduction: str = "mean") -> ContrastiveLossOutput:
    """CMMD's joint contrastive diffusion loss (see the module docstring for the layout).

    reduction: "mean" or "sum" over the batch, or "none" for per-sample [B] values. Every field of
    the result is differentiable; log the components with `.detach()`.
    """
    if reduction not in ("mean", "sum", "none"):
        raise AvfastInputError(f"{OP}: `reduction` must be 'mean', 'sum' or 'none', got {reduction!r}")
    args = (pred_v, pred_a, target_v, target_a, num_video_negatives, float(eta), float(weight_v), float(weight_a))
    _check_inputs(OP, *args[:5])  # here too, so a wrong argument gets our message, not the dispatcher's
    if reference_instead(*args[:4]):
        rows = contrastive_loss_reference(*args)
    else:
        backend = eager_native_backend(OP, KERNELS, *args[:4])
        if backend is not None:
            if torch.is_grad_enabled() and any(t.requires_grad for t in args[:4]):
                return ContrastiveLossOutput(*_EagerContrastiveLoss.apply(backend, reduction, *args))
            return ContrastiveLossOutput(*_reduce(_run_native(backend, *args)[0], reduction).unbind(0))
        rows = torch.ops.avfast.contrastive_loss(*args)
    return ContrastiveLossOutput(*_reduce(rows, reduction).unbind(0))
