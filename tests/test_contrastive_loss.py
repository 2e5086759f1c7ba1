"""Joint contrastive loss: every backend against the reference; batched evaluation; gradient direction."""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.backends import BackendUnavailableError, decomposed
from avfast.nn import JointContrastiveLoss
from avfast.ops import AvfastInputError, contrastive_loss, contrastive_loss_reference
from avfast.ops.contrastive_loss import contrastive_loss_backward_reference
from avfast.train import NegativeConfig, evaluate_groups, make_negatives
from conftest import HAS_CUDA, HAS_TRITON, TRITON_DEVICE, TRITON_DTYPES

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

# (dtype, atol, rtol): the loss rows are accumulated in fp32 by every backend; the gradients are
# stored in the input dtype, so their tolerance is that dtype's rounding.
DTYPES = [
    pytest.param(torch.float32, 1e-5, 1e-5, id="fp32"),
    pytest.param(torch.float16, 2e-3, 2e-3, id="fp16"),
    pytest.param(torch.bfloat16, 1.6e-2, 1.6e-2, id="bf16"),
    pytest.param(torch.float64, 1e-12, 1e-12, id="fp64"),
]
ETA, WV, WA = 0.3, 0.7, 1.3  # large eta so the negatives' terms are visible at fp32 tolerance


def _backends():
    return [
        pytest.param("reference", "cpu", id="reference"),
        pytest.param("cpu", "cpu", id="cpu"),
        pytest.param("triton", TRITON_DEVICE, id="triton", marks=pytest.mark.skipif(
            not HAS_TRITON, reason="Triton is not installed (pip install 'avfast[triton]')")),
        pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.skipif(
            not HAS_CUDA, reason="needs a CUDA GPU (none visible to torch here)")),
        # The CUDA kernels compiled as host C++ on CPU threads (tests/cuda_emu; conftest.emulated_cuda).
        pytest.param("cuda-emulated", "cpu", id="cuda-emulated"),
    ]


def _inputs(shape, dtype, device, contiguous=True, requires_grad=True):
    G, Kv, B, sv, sa = shape
    if contiguous:
        pv, pa = torch.randn(G, B, *sv), torch.randn(G, B, *sa)
        tv, ta = torch.randn(B, *sv), torch.randn(B, *sa)
    else:  # groups/batch swapped in memory, every other element of the last dimension
        pv = torch.randn(B, G, *sv[:-1], 2 * sv[-1]).transpose(0, 1)[..., ::2]
        pa = torch.randn(B, G, *sa[:-1], 2 * sa[-1]).transpose(0, 1)[..., ::2]
        tv = torch.randn(B, *sv[:-1], 2 * sv[-1])[..., ::2]
        ta = torch.randn(B, *sa[:-1], 2 * sa[-1])[..., ::2]
    return [x.to(device=device, dtype=dtype).requires_grad_(requires_grad) for x in (pv, pa, tv, ta)]


def _close(got, want, atol, rtol, what):
    torch.testing.assert_close(got.double().cpu(), want.double().cpu(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("backend,device", _backends())
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
def test_forward_backward_match_reference(use_backend, backend, device, dtype, atol, rtol, shape, contiguous):
    if backend == "cuda-emulated" and shape == SHAPES[-1]:
        pytest.skip("the CUDA emulation runs one CPU thread at a time (~8 s for this 18432-element shape); "
                    "its chunk boundaries are covered by the 5003- and 4100-element shapes")
    backend = use_backend(backend)
    if backend == "triton" and dtype not in TRITON_DTYPES:
        pytest.skip(f"the triton backend does not take {dtype} here (Triton's interpreter has no bf16/fp64)")
    Kv = shape[1]
    x = _inputs(shape, dtype, device, contiguous)
    # The oracle: the composite under autograd, in fp64 from the same (rounded) inputs.
    x64 = [t.detach().double().requires_grad_() for t in x]
    ref = contrastive_loss_reference(*x64, Kv, ETA, WV, WA)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, x64, grad)

    with avfast.backend(backend):
        rows = torch.ops.avfast.contrastive_loss(*x, Kv, ETA, WV, WA)
        grads = torch.autograd.grad(rows, x, grad.to(rows.dtype))
    assert rows.shape == (4, shape[2]) and rows.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    _close(rows, ref, 1e-5 if dtype != torch.float64 else 1e-12, 1e-5 if dtype != torch.float64 else 1e-12, "rows")
    for name, g, r in zip(("pred_v", "pred_a", "target_v", "target_a"), grads, ref_grads):
        assert g.dtype == dtype and g.shape == r.shape
        _close(g, r, atol * max(1.0, r.abs().max().item()), rtol, f"grad {name}")


@pytest.mark.parametrize("backend,device", _backends())
def test_explicit_backward_matches_autograd(use_backend, backend, device):
    backend = use_backend(backend)
    dtype = torch.float32
    x = _inputs(SHAPES[2], dtype, device)
    grad = torch.randn(4, SHAPES[2][2], device=device)
    want = torch.autograd.grad(contrastive_loss_reference(*x, 2, ETA, WV, WA), x, grad)
    with avfast.backend(backend):
        got = torch.ops.avfast.contrastive_loss_backward(grad, *[t.detach() for t in x], 2, ETA, WV, WA)
    for g, w in zip(got, want):
        _close(g, w, 1e-6, 1e-5, "explicit backward")
    direct = contrastive_loss_backward_reference(grad, *[t.detach() for t in x], 2, ETA, WV, WA)
    for g, w in zip(direct, want):
        _close(g, w, 1e-6, 1e-5, "reference backward")


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
    got = fn(*x)
    want = contrastive_loss_reference(*x, 1, ETA, WV, WA)[0].mean()
    torch.testing.assert_close(got, want)
    with decomposed():
        torch.testing.assert_close(contrastive_loss(*x, 1, ETA, WV, WA).loss, want)


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
