"""Easy fusion: every backend against an independent fp64 oracle, forward and backward (tests/_compare.py's
rule: error at most 2x PyTorch's own in that dtype)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import avfast
from avfast.ops import AvfastInputError, easy_fusion, easy_fusion_reference
from avfast.ops.easy_fusion import easy_fusion_backward_reference, nearest_indices
from _cases import DTYPES, backends, product
from _compare import assert_accurate
from _oracles import easy_fusion_oracle
from _spy import dispatched_ops

# (B, Cv, Ca, F, H, W, T): odd sizes, T > F, T < F, T == F, T == 2F, ones, the paper's first level.
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1),
    (2, 3, 5, 7, 3, 3, 17),
    (1, 4, 2, 17, 1, 3, 7),
    (3, 7, 3, 5, 4, 5, 5),
    (2, 3, 2, 6, 2, 2, 12),
    (2, 1, 3, 9, 1, 2, 1),
    (1, 2, 3, 18, 16, 16, 112),
    (1, 2, 1, 36, 3, 1, 224),
]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def _inputs(shape, dtype, device, contiguous=True, requires_grad=False):
    B, Cv, Ca, Fr, H, W, T = shape
    if contiguous:
        v = torch.randn(B, Cv, Fr, H, W, dtype=dtype, device=device)
        a = torch.randn(B, Ca, T, dtype=dtype, device=device)
    else:  # every dimension strided differently from the logical layout
        v = torch.randn(B, Fr, W, Cv, 2 * H, dtype=dtype, device=device).permute(0, 3, 1, 4, 2)[:, :, :, ::2, :]
        a = torch.randn(B, 2 * T, Ca, dtype=dtype, device=device).transpose(1, 2)[:, :, ::2]
        assert (v.numel() == 1 or not v.is_contiguous()) and (a.numel() == 1 or not a.is_contiguous())
    return v.requires_grad_(requires_grad), a.requires_grad_(requires_grad)


@pytest.mark.parametrize("backend,device,dtype,shape,contiguous", product(
    backends("reference", "cpu", "triton", "cuda", "cuda-emulated"), DTYPES,
    [pytest.param(s, id=i) for s, i in zip(SHAPES, SHAPE_IDS)],
    [pytest.param(True, id="contig"), pytest.param(False, id="strided")]))
def test_forward_backward_match_oracle(use_backend, backend, device, dtype, shape, contiguous):
    backend = use_backend(backend)
    v, a = _inputs(shape, dtype, device, contiguous, requires_grad=True)
    v64, a64 = (t.detach().cpu().double().requires_grad_() for t in (v, a))
    want = easy_fusion_oracle(v64, a64)
    grads = [torch.randn_like(t).to(dtype) for t in want]
    want_grads = torch.autograd.grad(want, (v64, a64), [g.double() for g in grads])

    with avfast.backend(backend):
        vf, af = easy_fusion(v, a)
        gv, ga = torch.autograd.grad((vf, af), (v, a), [g.to(device) for g in grads])

    B, Cv, Ca, Fr, H, W, T = shape
    assert vf.shape == (B, Cv + Ca, Fr, H, W) and af.shape == (B, Ca + Cv, T)
    assert vf.dtype == dtype and af.dtype == dtype and vf.is_contiguous() and af.is_contiguous()
    # The copied and resampled channels are exact in every dtype; only the pooled mean rounds.
    assert torch.equal(vf.cpu().double(), want[0]) and torch.equal(af[:, :Ca].cpu().double(), want[1][:, :Ca])
    # PyTorch's own result in this dtype: the reference composite (none for the reference backend
    # itself, and none in fp64: there the rule's baseline is the oracle rounded to the dtype).
    if backend == "reference" or dtype == torch.float64:
        base, base_grads = (None, None), (None, None)
    else:
        vb, ab = (t.detach().cpu().requires_grad_() for t in (v, a))
        base = easy_fusion_reference(vb, ab)
        base_grads = torch.autograd.grad(base, (vb, ab), grads)
    assert_accurate(af[:, Ca:], want[1][:, Ca:].detach(), None if base[1] is None else base[1][:, Ca:],
                    what=f"{backend} pooled")
    assert_accurate(gv, want_grads[0], base_grads[0], what=f"{backend} grad v")
    assert_accurate(ga, want_grads[1], base_grads[1], what=f"{backend} grad a")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "fp32"])
def test_reference_pooling_has_the_bits_of_an_fp32_copy(dtype):
    """The reference pools with the plain v.mean() (the baseline a model would write: no fp32 copy of v),
    which has the bits of v.to(fp32).mean() and of v.mean(dtype=fp32), forward and backward, for
    contiguous, strided and channels-last v."""
    for shape in [(2, 3, 7, 3, 3), (1, 128, 18, 16, 16), (1, 3, 2, 31, 17)]:
        v = torch.randn(shape, dtype=dtype)
        for layout in (v, v.transpose(3, 4), v.contiguous(memory_format=torch.channels_last_3d)):
            x = layout.detach().requires_grad_()
            a = torch.randn(shape[0], 2, shape[2], dtype=dtype)  # T == F: the pooled frames as they are
            new = easy_fusion_reference(x, a)[1][:, 2:]
            old = x.to(torch.float32).mean(dim=(3, 4)).to(dtype)
            asked = x.mean(dim=(3, 4), dtype=torch.float32).to(dtype)
            assert torch.equal(new, old) and torch.equal(new, asked)
            g = torch.randn_like(old)
            want = torch.autograd.grad(old, x, g)[0]
            assert torch.equal(torch.autograd.grad(new, x, g)[0], want)
            assert torch.equal(torch.autograd.grad(asked, x, g)[0], want)


def test_nearest_rule_is_interpolates():
    for in_size, out_size in [(112, 18), (18, 112), (7, 17), (17, 7), (5, 10), (10, 5), (1, 9), (9, 1), (36, 224)]:
        x = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size)
        expected = F.interpolate(x, size=out_size, mode="nearest").view(-1).long()
        assert torch.equal(nearest_indices(in_size, out_size), expected)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[4]], ids=[SHAPE_IDS[1], SHAPE_IDS[2], SHAPE_IDS[4]])
def test_explicit_backward_reference_matches_autograd(shape):
    v, a = _inputs(shape, torch.float64, "cpu", requires_grad=True)
    out = easy_fusion_oracle(v, a)
    grads = [torch.randn_like(t) for t in out]
    expected = torch.autograd.grad(out, (v, a), grads)
    got = easy_fusion_backward_reference(*grads, shape[1], shape[2])
    for g, e, name in zip(got, expected, ("grad v", "grad a")):
        assert_accurate(g, e, what=f"explicit backward {name}")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2]], ids=[SHAPE_IDS[1], SHAPE_IDS[2]])
def test_gradcheck_float64(backend, shape):
    v, a = _inputs(shape, torch.float64, "cpu", requires_grad=True)
    with avfast.backend(backend):
        assert torch.autograd.gradcheck(easy_fusion, (v, a))
        assert torch.autograd.gradgradcheck(easy_fusion, (v, a))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
def test_opcheck(backend, contiguous):
    v, a = _inputs(SHAPES[1], torch.float32, "cpu", contiguous, requires_grad=True)
    with avfast.backend(backend):
        torch.library.opcheck(torch.ops.avfast.easy_fusion.default, (v, a))
        gvf = torch.randn(2, 8, 7, 3, 3, requires_grad=True)
        gaf = torch.randn(2, 8, 17, requires_grad=True)
        torch.library.opcheck(torch.ops.avfast.easy_fusion_backward.default, (gvf, gaf, 3, 5))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    def block_with(fusion, v, a):
        vf, af = fusion(v * 2, a + 1)
        return vf.sum(dim=1), af.relu()

    # Compiled (the op in the graph, the cpu kernel inside) against the fp64 oracle, outputs and
    # gradients, with the reference composite in fp32 as PyTorch's own.
    v, a = _inputs(SHAPES[1], torch.float32, "cpu", requires_grad=True)
    compiled = torch.compile(lambda v, a: block_with(easy_fusion, v, a), fullgraph=True, backend=compile_backend)
    v64, a64 = (t.detach().double().requires_grad_() for t in (v, a))
    runs = [(compiled, (v, a)),  # got, want, PyTorch's own
            (lambda v, a: block_with(easy_fusion_oracle, v, a), (v64, a64)),
            (lambda v, a: block_with(easy_fusion_reference, v, a), (v, a))]
    results = []
    for fn, x in runs:
        out = fn(*x)
        results.append((*out, *torch.autograd.grad(sum(t.sum() for t in out), x)))
    for name, got, want, base in zip(("vf.sum", "af.relu", "grad v", "grad a"), *results):
        assert_accurate(got, want.detach(), base, what=f"{compile_backend} {name}")


def test_module_is_drop_in():
    v, a = _inputs(SHAPES[2], torch.float32, "cpu")
    from avfast.nn import EasyFusion

    for got, want, base in zip(EasyFusion()(v, a), easy_fusion_oracle(v, a), easy_fusion_reference(v, a)):
        assert_accurate(got, want, base, what="EasyFusion")


def test_decomposed_path_is_plain_pytorch():
    # Decomposed: plain aten ops only (what ONNX export sees), and still the oracle's numbers (the
    # decomposed path is PyTorch's own computation, so the baseline is the oracle rounded to fp32).
    v, a = _inputs(SHAPES[1], torch.float32, "cpu")
    with avfast.decomposed():
        (vf, af), ops = dispatched_ops(lambda: easy_fusion(v, a))
    assert ops and not any("avfast" in name for name in ops), ops
    for got, want in zip((vf, af), easy_fusion_oracle(v, a)):
        assert_accurate(got, want, what="decomposed")


# ------------------------------------------------------------------ bad inputs
def _good():
    return torch.randn(2, 3, 4, 5, 5), torch.randn(2, 2, 9)


@pytest.mark.parametrize("make,match", [
    (lambda v, a: (v[0], a), r"`v` must have 5 dimensions \[B, Cv, F, H, W\], got 4"),
    (lambda v, a: (v, a[0]), r"`a` must have 3 dimensions \[B, Ca, T\], got 2"),
    (lambda v, a: (v.long(), a), r"`v` must have dtype .*float32.*, got int64"),
    (lambda v, a: (v, a.half()), r"one dtype, got `v` is float32, `a` is float16"),
    (lambda v, a: (v, a[:1]), r"batch size \(dim 0\) must match, got `v` has 2, `a` has 1"),
    (lambda v, a: (v[:, :, :0], a), r"`v` must not be empty, got shape \[2, 3, 0, 5, 5\]"),
    (lambda v, a: (v, a[:, :, :0]), r"`a` must not be empty"),
    (lambda v, a: (v, a.to("meta")), r"one device, got `v` on cpu, `a` on meta"),
    (lambda v, a: (v.numpy(), a), r"`v` must be a torch.Tensor, got ndarray"),
])
def test_bad_inputs_raise_clear_errors(make, match):
    with pytest.raises(AvfastInputError, match=match):
        easy_fusion(*make(*_good()))


def test_backward_op_rejects_inconsistent_channels():
    with pytest.raises(AvfastInputError, match=r"channels .* must match"):
        torch.ops.avfast.easy_fusion_backward(torch.randn(1, 5, 2, 2, 2), torch.randn(1, 5, 3), 3, 3)


@pytest.mark.parametrize("backend,device", [("cpu", "cpu"), ("cuda-emulated", "cpu")])
def test_eager_path_matches_registered_op(use_backend, backend, device):
    """`easy_fusion` in plain eager mode calls the kernels without torch.ops (`_EagerEasyFusion`);
    it must agree bit for bit with the registered op, forward and backward."""
    backend = use_backend(backend)
    v, a = _inputs(SHAPES[2], torch.float32, device, contiguous=False, requires_grad=True)
    with avfast.backend(backend):
        eager = easy_fusion(v, a)
        assert "EagerEasyFusion" in type(eager[0].grad_fn).__name__  # the path under test
        op = torch.ops.avfast.easy_fusion(v, a)
        assert "EagerEasyFusion" not in type(op[0].grad_fn).__name__
        grads = [torch.randn_like(t) for t in op]
        for got, want in zip((*eager, *torch.autograd.grad(eager, (v, a), grads)),
                             (*op, *torch.autograd.grad(op, (v, a), grads))):
            torch.testing.assert_close(got, want, atol=0, rtol=0)
        with torch.no_grad():
            plain = easy_fusion(v, a)
    assert plain[0].grad_fn is None
    torch.testing.assert_close(plain, op, atol=0, rtol=0)
