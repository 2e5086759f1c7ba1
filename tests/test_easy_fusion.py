"""Easy fusion: every backend against the reference, forward and backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import avfast
from avfast.ops import AvfastInputError, easy_fusion, easy_fusion_reference
from avfast.ops.easy_fusion import easy_fusion_backward_reference, nearest_indices
from conftest import HAS_CUDA, HAS_TRITON, TRITON_DEVICE, TRITON_DTYPES

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

# (dtype, atol, rtol) against the reference in the same dtype.
DTYPES = [
    pytest.param(torch.float32, 1e-5, 1e-5, id="fp32"),
    pytest.param(torch.float16, 2e-3, 2e-3, id="fp16"),
    pytest.param(torch.bfloat16, 1.6e-2, 1.6e-2, id="bf16"),
    pytest.param(torch.float64, 1e-12, 1e-12, id="fp64"),
]


def _backends():
    out = [pytest.param("reference", "cpu", id="reference"), pytest.param("cpu", "cpu", id="cpu")]
    out.append(pytest.param("triton", TRITON_DEVICE, id="triton", marks=pytest.mark.skipif(
        not HAS_TRITON, reason="Triton is not installed (pip install 'avfast[triton]')")))
    out.append(pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.skipif(
        not HAS_CUDA, reason="needs a CUDA GPU (none visible to torch here)")))
    # The CUDA kernels compiled as host C++ and run on CPU threads (tests/cuda_emu): every
    # machine checks their indexing, masking and reductions, GPU or not.
    out.append(pytest.param("cuda-emulated", "cpu", id="cuda-emulated"))
    return out


def _supported(backend: str, dtype: torch.dtype) -> bool:
    if backend == "triton":
        return dtype in TRITON_DTYPES
    return True


def _inputs(shape, dtype, device, contiguous=True, requires_grad=False):
    B, Cv, Ca, Fr, H, W, T = shape
    if contiguous:
        v = torch.randn(B, Cv, Fr, H, W)
        a = torch.randn(B, Ca, T)
    else:  # every dimension strided differently from the logical layout
        v = torch.randn(B, Fr, W, Cv, 2 * H).permute(0, 3, 1, 4, 2)[:, :, :, ::2, :]
        a = torch.randn(B, 2 * T, Ca).transpose(1, 2)[:, :, ::2]
        assert (v.numel() == 1 or not v.is_contiguous()) and (a.numel() == 1 or not a.is_contiguous())
    v = v.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    a = a.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    return v, a


@pytest.mark.parametrize("backend,device", _backends())
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
def test_forward_backward_match_reference(use_backend, backend, device, dtype, atol, rtol, shape, contiguous):
    backend = use_backend(backend)
    if not _supported(backend, dtype):
        pytest.skip(f"the {backend} backend does not take {dtype} here (Triton's interpreter has no bf16/fp64)")
    v, a = _inputs(shape, dtype, device, contiguous, requires_grad=True)
    vf_ref, af_ref = easy_fusion_reference(v, a)
    gvf = torch.randn_like(vf_ref)
    gaf = torch.randn_like(af_ref)
    gv_ref, ga_ref = torch.autograd.grad((vf_ref, af_ref), (v, a), (gvf, gaf))

    with avfast.backend(backend):
        vf, af = easy_fusion(v, a)
        gv, ga = torch.autograd.grad((vf, af), (v, a), (gvf, gaf))

    B, Cv, Ca, Fr, H, W, T = shape
    assert vf.shape == (B, Cv + Ca, Fr, H, W) and af.shape == (B, Ca + Cv, T)
    assert vf.dtype == dtype and af.dtype == dtype and vf.is_contiguous() and af.is_contiguous()
    # The copied and resampled channels are exact in every dtype; only the pooled mean rounds.
    torch.testing.assert_close(vf, vf_ref, atol=0, rtol=0)
    torch.testing.assert_close(af[:, :Ca], af_ref[:, :Ca], atol=0, rtol=0)
    torch.testing.assert_close(af, af_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(gv, gv_ref, atol=atol * 4, rtol=rtol * 4)
    torch.testing.assert_close(ga, ga_ref, atol=atol * 4, rtol=rtol * 4)


@pytest.mark.parametrize("backend,device", _backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_error_no_worse_than_pytorch(use_backend, backend, device, dtype):
    """flash-attention's criterion: error vs an fp64 truth at most 2x PyTorch's own low-precision error."""
    backend = use_backend(backend)
    if not _supported(backend, dtype):
        pytest.skip(f"the {backend} backend does not take {dtype} here (Triton's interpreter has no bf16)")
    shape = (2, 8, 4, 18, 16, 16, 112)
    v, a = _inputs(shape, dtype, device, requires_grad=True)
    v64, a64 = (x.detach().double().requires_grad_() for x in (v, a))
    truth = easy_fusion_reference(v64, a64)
    grads = [torch.randn_like(t) for t in truth]
    truth_grads = torch.autograd.grad(truth, (v64, a64), grads)
    low_grads = [g.to(dtype) for g in grads]
    torch_out = easy_fusion_reference(v, a)
    torch_grads = torch.autograd.grad(torch_out, (v, a), low_grads)
    with avfast.backend(backend):
        out = easy_fusion(v, a)
        out_grads = torch.autograd.grad(out, (v, a), low_grads)
    for ours, theirs, exact in zip((*out, *out_grads), (*torch_out, *torch_grads), (*truth, *truth_grads)):
        err = (ours.double() - exact).abs().max().item()
        torch_err = (theirs.double() - exact).abs().max().item()
        assert err <= 2 * torch_err + 1e-6, (err, torch_err)


def test_nearest_rule_is_interpolates():
    for in_size, out_size in [(112, 18), (18, 112), (7, 17), (17, 7), (5, 10), (10, 5), (1, 9), (9, 1), (36, 224)]:
        x = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size)
        expected = F.interpolate(x, size=out_size, mode="nearest").view(-1).long()
        assert torch.equal(nearest_indices(in_size, out_size), expected)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[4]], ids=[SHAPE_IDS[1], SHAPE_IDS[2], SHAPE_IDS[4]])
def test_explicit_backward_reference_matches_autograd(shape):
    v, a = _inputs(shape, torch.float64, "cpu", requires_grad=True)
    out = easy_fusion_reference(v, a)
    grads = [torch.randn_like(t) for t in out]
    expected = torch.autograd.grad(out, (v, a), grads)
    got = easy_fusion_backward_reference(*grads, shape[1], shape[2])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


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
    def block(v, a):
        vf, af = easy_fusion(v * 2, a + 1)
        return vf.sum(dim=1), af.relu()

    v, a = _inputs(SHAPES[1], torch.float32, "cpu", requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend=compile_backend)
    got = compiled(v, a)
    expected = block(v, a)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    gc = torch.autograd.grad(sum(t.sum() for t in got), (v, a))
    ge = torch.autograd.grad(sum(t.sum() for t in expected), (v, a))
    for g, e in zip(gc, ge):
        torch.testing.assert_close(g, e)


def test_module_is_drop_in():
    v, a = _inputs(SHAPES[2], torch.float32, "cpu")
    from avfast.nn import EasyFusion

    vf, af = EasyFusion()(v, a)
    ref = easy_fusion_reference(v, a)
    torch.testing.assert_close(vf, ref[0])
    torch.testing.assert_close(af, ref[1])


def test_decomposed_path_is_the_reference():
    v, a = _inputs(SHAPES[1], torch.float32, "cpu")
    with avfast.decomposed():
        vf, af = easy_fusion(v, a)
    ref = easy_fusion_reference(v, a)
    torch.testing.assert_close(vf, ref[0], atol=0, rtol=0)
    torch.testing.assert_close(af, ref[1], atol=0, rtol=0)


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
