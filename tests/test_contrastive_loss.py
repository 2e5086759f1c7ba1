"""Joint contrastive loss: every backend against an independent fp64 oracle (tests/_compare.py's rule);
batched evaluation; gradient direction."""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.backends import BackendUnavailableError, decomposed
from avfast.nn import JointContrastiveLoss
from avfast.ops import AvfastInputError, contrastive_loss, contrastive_loss_reference
from avfast.ops.contrastive_loss import contrastive_loss_backward_reference
from avfast.train import NegativeConfig, evaluate_groups, make_negatives
from _cases import DTYPES, backends, product
from _compare import assert_accurate
from _oracles import contrastive_loss_oracle
from _spy import dispatched_ops
from conftest import HAS_CUDA

# (G, Kv, B, video sample shape, audio sample shape): no negatives, odd sizes, only video / only
# audio negatives, more elements than one CPU chunk (4096) / Triton block (1024), the 128-px model.
SHAPES = [
    (1, 0, 1, (1,), (1,)),
    (3, 1, 2, (4, 3, 5, 5), (7, 9)),
    (5, 2, 3, (3, 5, 4), (1, 7, 11)),
    (4, 3, 2, (5003,), (3,)),
    (3, 0, 1, (2, 3), (4100,)),
    (3, 1, 2, (4, 18, 16, 16), (80, 112)),
]
SHAPE_IDS = [f"G{s[0]}Kv{s[1]}B{s[2]}" + "x".join(map(str, s[3])) for s in SHAPES]

ETA, WV, WA = 0.3, 0.7, 1.3  # large eta so the negatives' terms are visible at fp32 tolerance


def _inputs(shape, dtype, device, contiguous=True, requires_grad=True):
    G, Kv, B, sv, sa = shape

    def randn(*size):
        return torch.randn(*size, dtype=dtype, device=device)
    if contiguous:
        pv, pa = randn(G, B, *sv), randn(G, B, *sa)
        tv, ta = randn(B, *sv), randn(B, *sa)
    else:  # groups/batch swapped in memory, every other element of the last dimension
        pv = randn(B, G, *sv[:-1], 2 * sv[-1]).transpose(0, 1)[..., ::2]
        pa = randn(B, G, *sa[:-1], 2 * sa[-1]).transpose(0, 1)[..., ::2]
        tv = randn(B, *sv[:-1], 2 * sv[-1])[..., ::2]
        ta = randn(B, *sa[:-1], 2 * sa[-1])[..., ::2]
    return [x.requires_grad_(requires_grad) for x in (pv, pa, tv, ta)]


def _with_grads(loss_rows, x, grad):
    """(rows [4, B], gradients of <grad, rows> with respect to x)."""
    rows = loss_rows(*x)
    return rows, torch.autograd.grad(rows, x, grad.to(rows.dtype))


def _check(backend, x, Kv, rows, grads, grad):
    """rows and gradients against the fp64 oracle, with the reference composite in the inputs' dtype as
    PyTorch's own (none for the reference backend itself and in fp64: the oracle rounded instead)."""
    x64 = [t.detach().cpu().double().requires_grad_() for t in x]
    want, want_grads = _with_grads(lambda *t: contrastive_loss_oracle(*t, Kv, ETA, WV, WA), x64, grad.cpu())
    base, base_grads = None, [None] * 4
    if backend != "reference" and x[0].dtype != torch.float64:
        xb = [t.detach().cpu().requires_grad_() for t in x]
        base, base_grads = _with_grads(lambda *t: contrastive_loss_reference(*t, Kv, ETA, WV, WA), xb, grad.cpu())
    # Known shortfall: the cpu kernel sums strided inputs serially in 4096-element chunks (contiguous
    # ones in 64 lanes), ~10 fp32 ulps of the rows against PyTorch's <= 1; judged with a 16-ulp floor.
    strided_cpu = backend == "cpu" and not all(t.is_contiguous() for t in x)
    assert_accurate(rows, want.detach(), base, what=f"{backend} rows", floor_ulps=16 if strided_cpu else None)
    for name, g, w, b in zip(("pred_v", "pred_a", "target_v", "target_a"), grads, want_grads, base_grads):
        assert_accurate(g, w, b, what=f"{backend} grad {name}")


@pytest.mark.parametrize("backend,device,dtype,shape,contiguous", product(
    backends("reference", "cpu", "triton", "cuda", "cuda-emulated"), DTYPES,
    [pytest.param(s, id=i) for s, i in zip(SHAPES, SHAPE_IDS)],
    [pytest.param(True, id="contig"), pytest.param(False, id="strided")],
    # The CUDA emulation runs one CPU thread at a time: the 18432-element shape would take seconds a
    # case; its chunk boundaries are covered by the 5003- and 4100-element shapes.
    keep=lambda backend, device, dtype, shape, contiguous: not (backend == "cuda-emulated" and shape == SHAPES[-1])))
def test_forward_backward_match_oracle(use_backend, backend, device, dtype, shape, contiguous):
    backend = use_backend(backend)
    Kv = shape[1]
    x = _inputs(shape, dtype, device, contiguous)
    grad = torch.randn(4, shape[2], dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device)
    with avfast.backend(backend):
        rows, grads = _with_grads(lambda *t: torch.ops.avfast.contrastive_loss(*t, Kv, ETA, WV, WA), x, grad)
    assert rows.shape == (4, shape[2]) and rows.dtype == grad.dtype
    assert all(g.dtype == dtype and g.shape == t.shape for g, t in zip(grads, x))
    _check(backend, x, Kv, rows, grads, grad)


@pytest.mark.parametrize("backend,device", backends("reference", "cpu", "triton", "cuda", "cuda-emulated"))
def test_explicit_backward_matches_oracle(use_backend, backend, device):
    # The backward op on its own (what the custom op's autograd calls), and the written-out reference
    # backward directly, against autograd through the oracle.
    backend = use_backend(backend)
    x = _inputs(SHAPES[2], torch.float32, device)
    grad = torch.randn(4, SHAPES[2][2], device=device)
    plain = [t.detach() for t in x]
    _, want = _with_grads(lambda *t: contrastive_loss_oracle(*t, 2, ETA, WV, WA),
                          [t.cpu().double().requires_grad_() for t in plain], grad.cpu())
    _, base = _with_grads(lambda *t: contrastive_loss_reference(*t, 2, ETA, WV, WA),
                          [t.cpu().requires_grad_() for t in plain], grad.cpu())
    with avfast.backend(backend):
        got = torch.ops.avfast.contrastive_loss_backward(grad, *plain, 2, ETA, WV, WA)
    direct = contrastive_loss_backward_reference(grad, *plain, 2, ETA, WV, WA)
    for name, g, d, w, b in zip(("pred_v", "pred_a", "target_v", "target_a"), got, direct, want, base):
        assert_accurate(g, w, None if backend == "reference" else b, what=f"{backend} backward op {name}")
        assert_accurate(d, w, what=f"written-out reference backward {name}")


def test_components_and_reductions():
    G, Kv, B = 6, 2, 4
    pv, pa, tv, ta = _inputs((G, Kv, B, (3, 4), (5,)), torch.float64, "cpu", requires_grad=False)
    ev = ((pv - tv) ** 2).flatten(2).mean(-1)
    ea = ((pa - ta) ** 2).flatten(2).mean(-1)
    j = WV * ev + WA * ea
    none = contrastive_loss(pv, pa, tv, ta, Kv, ETA, WV, WA, reduction="none")
    torch.testing.assert_close(none.positive, j[0])
    torch.testing.assert_close(none.negative_video, j[1:3].mean(0))
    torch.testing.assert_close(none.negative_audio, j[3:].mean(0))
    torch.testing.assert_close(none.loss, j[0] - ETA * (j[1:3].mean(0) + j[3:].mean(0)))
    mean = contrastive_loss(pv, pa, tv, ta, Kv, ETA, WV, WA)
    total = contrastive_loss(pv, pa, tv, ta, Kv, ETA, WV, WA, reduction="sum")
    for n, m, s in zip(none, mean, total):
        torch.testing.assert_close(m, n.mean())
        torch.testing.assert_close(s, n.sum())
    module = JointContrastiveLoss(eta=ETA, weight_video=WV, weight_audio=WA)
    torch.testing.assert_close(module(pv, pa, tv, ta, Kv).loss, mean.loss)
    assert JointContrastiveLoss().eta == 5e-5


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_opcheck(backend):
    x = _inputs(SHAPES[2], torch.float32, "cpu")
    with avfast.backend(backend):
        torch.library.opcheck(torch.ops.avfast.contrastive_loss.default, (*x, 2, ETA, WV, WA))
        grad = torch.randn(4, SHAPES[2][2])
        torch.library.opcheck(torch.ops.avfast.contrastive_loss_backward.default,
                              (grad, *[t.detach() for t in x], 2, ETA, WV, WA))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gradcheck_float64(backend):
    x = _inputs((4, 1, 2, (2, 3), (5,)), torch.float64, "cpu")
    with avfast.backend(backend):
        assert torch.autograd.gradcheck(lambda *t: torch.ops.avfast.contrastive_loss(*t, 1, ETA, WV, WA), x)


def test_compile_fullgraph_and_decomposition():
    x = _inputs(SHAPES[1], torch.float32, "cpu")
    fn = torch.compile(lambda *t: contrastive_loss(*t, 1, ETA, WV, WA).loss, backend="aot_eager", fullgraph=True)
    want = contrastive_loss_oracle(*x, 1, ETA, WV, WA)[0].mean().detach()
    assert_accurate(fn(*x), want, contrastive_loss_reference(*x, 1, ETA, WV, WA)[0].mean(), what="compiled")
    # Decomposed: plain aten ops only (what ONNX export sees); it is PyTorch's own computation, so
    # judged against the oracle rounded to fp32.
    with decomposed():
        loss, ops = dispatched_ops(lambda: contrastive_loss(*x, 1, ETA, WV, WA).loss)
    assert ops and not any("avfast" in name for name in ops), ops
    assert_accurate(loss, want, what="decomposed")


def test_cpu_backend_is_deterministic():
    x = _inputs(SHAPES[-1], torch.float32, "cpu", requires_grad=False)
    grad = torch.randn(4, SHAPES[-1][2])
    with avfast.backend("cpu"):
        a = torch.ops.avfast.contrastive_loss(*x, 1, ETA, WV, WA)
        b = torch.ops.avfast.contrastive_loss(*x, 1, ETA, WV, WA)
        ga = torch.ops.avfast.contrastive_loss_backward(grad, *x, 1, ETA, WV, WA)
        gb = torch.ops.avfast.contrastive_loss_backward(grad, *x, 1, ETA, WV, WA)
    assert torch.equal(a, b) and all(torch.equal(p, q) for p, q in zip(ga, gb))


def test_errors_name_the_argument():
    pv, pa, tv, ta = _inputs(SHAPES[1], torch.float32, "cpu", requires_grad=False)
    with pytest.raises(AvfastInputError, match=r"`pred_v` must have shape \[G, 2, 4, 3, 5, 5\].*got \[3, 2, 4, 3, 5, 4\]"):
        contrastive_loss(pv[..., :4], pa, tv, ta, 1)
    with pytest.raises(AvfastInputError, match=r"`pred_a` must have shape \[G, 2, 7, 9\]"):
        contrastive_loss(pv, pa[:, :1], tv, ta, 1)
    with pytest.raises(AvfastInputError, match=r"number of groups G.*`pred_v` has 3, `pred_a` has 2"):
        contrastive_loss(pv, pa[:2], tv, ta, 1)
    with pytest.raises(AvfastInputError, match=r"`num_video_negatives` must be an int in \[0, G - 1\] = \[0, 2\], got 3"):
        contrastive_loss(pv, pa, tv, ta, 3)
    with pytest.raises(AvfastInputError, match=r"one dtype.*`target_a` is float16"):
        contrastive_loss(pv, pa, tv, ta.half(), 1)
    with pytest.raises(AvfastInputError, match=r"`reduction` must be"):
        contrastive_loss(pv, pa, tv, ta, 1, reduction="max")
    if not HAS_CUDA:
        with avfast.backend("cuda"), pytest.raises(BackendUnavailableError, match="cuda backend runs on CUDA tensors"):
            contrastive_loss(pv, pa, tv, ta, 1)


# ---------------------------------------------------------------------------------------------
# Batched evaluation
# ---------------------------------------------------------------------------------------------
class PairProbe(torch.nn.Module):
    """A denoiser whose outputs depend on both modalities and the timesteps, and that counts calls."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, v, a, t_v, t_a):
        self.calls.append(v.shape[0])
        v_out = v + a.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + t_v.view(-1, 1, 1, 1, 1)
        a_out = a * 2 + v.mean(dim=(1, 2, 3, 4)).view(-1, 1, 1) - t_a.view(-1, 1, 1)
        return v_out, a_out


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 100])
def test_evaluate_groups_matches_separate_passes(chunk_size):
    B, Kv, Ka = 3, 2, 1
    v, a = torch.randn(B, 2, 5, 3, 3), torch.randn(B, 4, 7)
    vn, an = torch.randn(Kv, B, 2, 5, 3, 3), torch.randn(Ka, B, 4, 7)
    tv, ta = torch.rand(B), torch.rand(B)
    probe = PairProbe()
    out = evaluate_groups(probe, v, a, tv, ta, vn, an, chunk_size=chunk_size)
    rows = (1 + Kv + Ka) * B
    assert probe.calls == ([rows] if chunk_size is None else
                           [min(chunk_size, rows - s) for s in range(0, rows, chunk_size)])
    assert out.video.shape == (1 + Kv + Ka, B, 2, 5, 3, 3) and out.audio.shape == (1 + Kv + Ka, B, 4, 7)
    assert (out.num_video_negatives, out.num_audio_negatives) == (Kv, Ka)
    ref = PairProbe()
    expected = [ref(v, a, tv, ta)] + [ref(vn[k], a, tv, ta) for k in range(Kv)] + [ref(v, an[k], tv, ta) for k in range(Ka)]
    for g, (ev, ea) in enumerate(expected):
        torch.testing.assert_close(out.video[g], ev)
        torch.testing.assert_close(out.audio[g], ea)


def test_evaluate_groups_errors():
    v, a = torch.randn(2, 2, 5, 3, 3), torch.randn(2, 4, 7)
    with pytest.raises(ValueError, match=r"`v_neg_t` must have shape \[K, 2, 2, 5, 3, 3\]"):
        evaluate_groups(PairProbe(), v, a, torch.zeros(2), torch.zeros(2), v_neg_t=v)
    with pytest.raises(ValueError, match=r"`t_a` must be a scalar or have shape \[2\]"):
        evaluate_groups(PairProbe(), v, a, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        evaluate_groups(PairProbe(), v, a, 0.5, 0.5, chunk_size=0)


# ---------------------------------------------------------------------------------------------
# What the loss is for: with eta > 0 a step pushes the negatives' error up relative to eta = 0
# ---------------------------------------------------------------------------------------------
class TinyJointDenoiser(torch.nn.Module):
    def __init__(self, nv: int, na: int):
        super().__init__()
        self.nv = nv
        self.mix = torch.nn.Linear(nv + na, nv + na)

    def forward(self, v, a, t_v, t_a):
        y = self.mix(torch.cat([v.flatten(1), a.flatten(1)], 1))
        return y[:, :self.nv].view_as(v), y[:, self.nv:].view_as(a)


def _step_and_measure(eta: float, lr: float = 0.05):
    torch.manual_seed(1)
    B, vshape, ashape = 4, (1, 6, 2, 2), (3, 30)
    v0, a0 = torch.randn(B, *vshape), torch.randn(B, *ashape)
    target_v, target_a = torch.randn(B, *vshape), torch.randn(B, *ashape)
    gen = torch.Generator().manual_seed(7)
    cfg = NegativeConfig(num_video=2, num_audio=2, video_rate=10.0, audio_rate=62.5)
    neg = make_negatives(v0, a0, cfg, gen)
    model = TinyJointDenoiser(v0[0].numel(), a0[0].numel())
    t = torch.full((B,), 0.5)

    def losses():
        g = evaluate_groups(model, v0, a0, t, t, neg.video, neg.audio)
        return contrastive_loss(g.video, g.audio, target_v, target_a, g.num_video_negatives, eta)

    before = losses()
    model.zero_grad()
    before.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    after = losses()
    return before, after


def test_eta_pushes_negatives_error_up():
    b0, a0 = _step_and_measure(eta=0.0)
    b1, a1 = _step_and_measure(eta=0.5)
    torch.testing.assert_close(b0.positive, b1.positive)  # same start
    neg0 = a0.negative_video + a0.negative_audio
    neg1 = a1.negative_video + a1.negative_audio
    assert neg1 > neg0, (neg0.item(), neg1.item())
    assert (neg1 - a1.positive) > (neg0 - a0.positive)  # the gap between negatives and positives widens
    assert a1.positive < b1.positive  # and the positives still improve
