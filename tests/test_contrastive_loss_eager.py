"""`contrastive_loss` in plain eager mode: the cpu/cuda kernels under `_EagerContrastiveLoss`, which
skips the custom-op dispatch and, in fp32/fp64, writes the gradient in the forward pass.

Every way a gradient can reach the loss is checked against the fp64 oracle under autograd
(tests/_oracles.py, tests/_compare.py's rule):
`loss.backward()` (the precomputed gradient handed over as is), a scaled loss (GradScaler: the
precomputed gradient rescaled), gradients into the components (the backward kernel), per-sample
losses, targets with and without gradients, a second backward through a retained graph.
"""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.ops import contrastive_loss, contrastive_loss_reference
from _cases import DTYPES, backends, product
from _compare import assert_accurate
from _oracles import contrastive_loss_oracle

# (G, Kv, B, video sample shape, audio sample shape): odd sizes; more than one CPU chunk (4096).
SHAPES = [
    (3, 1, 2, (4, 3, 5, 5), (7, 9)),
    (4, 3, 3, (4100,), (5,)),
    (2, 0, 1, (3, 2), (9,)),
]
SHAPE_IDS = ["G3Kv1B2", "G4Kv3B3x4100", "G2Kv0B1"]
ETA, WV, WA = 0.3, 0.7, 1.3


def _inputs(shape, dtype, device, targets_grad: bool, contiguous: bool = True):
    G, Kv, B, sv, sa = shape
    if contiguous:
        x = [torch.randn(G, B, *sv), torch.randn(G, B, *sa), torch.randn(B, *sv), torch.randn(B, *sa)]
    else:  # groups/batch swapped in memory, every other element of the last dimension
        x = [torch.randn(B, G, *sv[:-1], 2 * sv[-1]).transpose(0, 1)[..., ::2],
             torch.randn(B, G, *sa[:-1], 2 * sa[-1]).transpose(0, 1)[..., ::2],
             torch.randn(B, *sv[:-1], 2 * sv[-1])[..., ::2], torch.randn(B, *sa[:-1], 2 * sa[-1])[..., ::2]]
    x = [t.to(device=device, dtype=dtype) for t in x]
    for t in x[:2] + (x[2:] if targets_grad else []):
        t.requires_grad_()
    return x


def _objective(outputs, upstream: str, reduction: str, weights: torch.Tensor):
    """What is backpropagated from (loss, positive, negative_video, negative_audio): `loss` alone (the
    training case), a scaled `loss` (a loss scaler), or a weighted sum of all four (gradients into
    the components)."""
    def total(t):
        return t.sum() if reduction == "none" else t
    if upstream == "loss":
        return total(outputs[0])
    if upstream == "scaled":
        return total(outputs[0] * weights[0])
    return sum(total(t * w) for t, w in zip(outputs, weights))


def _composite(rows_fn, x, Kv, reduction, upstream, weights, dtype):
    """(reduced rows, gradients) of a PyTorch composite `rows_fn` ([4, B] rows) on copies of x in `dtype`."""
    xc = [t.detach().cpu().to(dtype).requires_grad_(t.requires_grad) for t in x]
    rows = rows_fn(*xc, Kv, ETA, WV, WA)
    rows = rows.mean(1) if reduction == "mean" else rows.sum(1) if reduction == "sum" else rows
    need = [t for t in xc if t.requires_grad]
    return rows, torch.autograd.grad(_objective(rows.unbind(0), upstream, reduction, weights.to(rows.dtype)), need)


@pytest.mark.parametrize("backend,device,dtype,shape,reduction,upstream", product(
    backends("cpu", "cuda-emulated", "cuda"), DTYPES, [pytest.param(s, id=i) for s, i in zip(SHAPES, SHAPE_IDS)],
    [pytest.param(r, id=r) for r in ("mean", "sum", "none")],
    [pytest.param(u, id=u) for u in ("loss", "scaled", "components")],
    # The CUDA emulation runs one CPU thread at a time (~3 s a case at 4100 elements): the multi-chunk
    # shape runs in fp32 (the fused gradient), the other dtypes at the small shapes.
    keep=lambda backend, device, dtype, shape, *rest: not (
        backend == "cuda-emulated" and shape[3] == (4100,) and dtype != torch.float32)))
def test_eager_matches_oracle(use_backend, backend, device, dtype, shape, reduction, upstream):
    backend = use_backend(backend)
    Kv = shape[1]
    targets_grad = upstream == "components"  # targets are data in training; cover both
    x = _inputs(shape, dtype, device, targets_grad, contiguous=reduction != "sum")
    weights = torch.tensor([1024.0, -0.5, 2.0, 3.0])  # 1024: a loss scale, exact in every dtype
    want_rows, want = _composite(contrastive_loss_oracle, x, Kv, reduction, upstream, weights, torch.float64)
    # PyTorch's own: the reference composite in the inputs' dtype (fp64: none, the oracle rounded instead).
    base_rows, base = ((None, [None] * len(want)) if dtype == torch.float64 else
                       _composite(contrastive_loss_reference, x, Kv, reduction, upstream, weights, dtype))

    with avfast.backend(backend):
        out = contrastive_loss(*x, Kv, ETA, WV, WA, reduction=reduction)
        assert "EagerContrastiveLoss" in type(out.loss.grad_fn).__name__  # the path under test
        got = torch.autograd.grad(_objective(tuple(out), upstream, reduction, weights.to(out.loss.dtype)),
                                  [t for t in x if t.requires_grad])
    rows = torch.stack(list(out))
    # Known shortfall of the cpu kernel on strided inputs (serial sums): see test_contrastive_loss._check.
    strided_cpu = backend == "cpu" and not all(t.is_contiguous() for t in x)
    assert_accurate(rows, want_rows.detach(), None if base_rows is None else base_rows.detach(),
                    what=f"{backend} rows", floor_ulps=16 if strided_cpu else None)
    for i, (g, w, b, t) in enumerate(zip(got, want, base, [t for t in x if t.requires_grad])):
        assert g.dtype == dtype and g.shape == t.shape
        assert_accurate(g, w, b, what=f"{backend} gradient {i}")


@pytest.mark.parametrize("backend,device", backends("cpu", "cuda-emulated", "cuda"))
def test_retained_graph_backward_twice(use_backend, backend, device):
    """The precomputed gradient is handed over once; a second backward recomputes it."""
    backend = use_backend(backend)
    x = _inputs(SHAPES[1], torch.float32, device, targets_grad=True)
    with avfast.backend(backend):
        loss = contrastive_loss(*x, SHAPES[1][1], ETA, WV, WA).loss
        (loss * 2).backward(retain_graph=True)  # upstream 2: the handed-over gradient is rescaled
        first = [t.grad.clone() for t in x]
        (loss * 3).backward()
    for t, g in zip(x, first):
        torch.testing.assert_close(t.grad, 2.5 * g, atol=1e-6 * g.abs().max().item(), rtol=1e-5)  # the gradient's scale


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_through_public_api(reduction):
    """gradcheck calls backward once per output element with a retained graph, so this covers the
    handed-over gradient and the recomputed one (fp64: the precomputing path)."""
    x = _inputs(SHAPES[0], torch.float64, "cpu", targets_grad=True)
    with avfast.backend("cpu"):
        assert torch.autograd.gradcheck(
            lambda *t: tuple(contrastive_loss(*t, 1, ETA, WV, WA, reduction=reduction)), x)


def test_no_grad_and_grad_agree_with_the_op():
    x = _inputs(SHAPES[0], torch.float32, "cpu", targets_grad=False)
    with avfast.backend("cpu"):
        rows = torch.ops.avfast.contrastive_loss(*x, 1, ETA, WV, WA).mean(1)
        with torch.no_grad():
            plain = contrastive_loss(*x, 1, ETA, WV, WA)
        tracked = contrastive_loss(*x, 1, ETA, WV, WA)
    assert plain.loss.grad_fn is None and tracked.loss.grad_fn is not None
    torch.testing.assert_close(torch.stack(list(plain)), rows.detach(), rtol=0, atol=0)
    torch.testing.assert_close(torch.stack(list(tracked)).detach(), rows.detach(), rtol=0, atol=0)


def test_reference_backend_goes_through_the_op():
    """Only the native kernels take the eager path; other backends keep the registered op's autograd."""
    x = _inputs(SHAPES[0], torch.float32, "cpu", targets_grad=False)
    with avfast.backend("reference"):
        out = contrastive_loss(*x, 1, ETA, WV, WA)
    assert "EagerContrastiveLoss" not in type(out.loss.grad_fn).__name__
