"""Temporal-spatial attention: every backend against the fp64 reference, forward and backward."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import avfast
from avfast.backends import BackendUnavailableError
from avfast.ops import AvfastInputError, attention_reference, temporal_spatial_attention
from avfast.ops import attention as A
from _compare import assert_accurate
from _oracles import flash_attention_lse
from _spy import dispatched_ops
from conftest import HAS_CUDA, HAS_TRITON, TRITON_DEVICE

MODES = ("spatial", "temporal", "joint")

# (qkv shape, head_dim): odd token counts, ones, the 128-px model's first level (F=18, 16x16).
VIDEO = [
    ((1, 3 * 64, 1, 1, 1), 64),
    ((2, 3 * 64, 5, 3, 3), 32),
    ((1, 3 * 128, 18, 3, 3), 64),
    ((1, 3 * 64, 36, 1, 3), 64),
    ((1, 3 * 128, 18, 16, 16), 64),
]
AUDIO = [((2, 3 * 64, 1), 64), ((1, 3 * 64, 7), 32), ((1, 3 * 128, 112), 64)]
IDS = lambda cases: ["x".join(map(str, s)) + f"-d{d}" for s, d in cases]  # noqa: E731

# Every result is held to tests/_compare.py's rule: its error against the fp64 reference at most 2x
# PyTorch's own in that dtype (attention_sdpa: permute + the fused SDPA kernel), plus half an ulp
# of the output's size.
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16")]
# Triton's interpreter (no GPU) has no bf16; on a GPU the bf16 cases run.
TRITON_DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
                 pytest.param(torch.bfloat16, id="bf16", marks=pytest.mark.skipif(
                     not HAS_CUDA, reason="Triton's interpreter has no bf16 (runs on a CUDA GPU)"))]


def _inputs(shape, dtype, device, noncontig=False, cropped=False) -> torch.Tensor:
    """qkv in `dtype` on `device`, made in its final layout (`.to` would make a cropped view contiguous)."""
    if noncontig:  # channels-last-like strides and a sliced batch: nothing is contiguous
        big = torch.randn(2 * shape[0], *shape[2:], shape[1], dtype=dtype, device=device)
        x = big.movedim(-1, 1)[::2]
        assert not x.is_contiguous() or x.numel() == 1
    elif cropped:  # a crop of a wider tensor: W is unit-stride but rows of pixels do not flatten
        x = torch.randn(*shape[:-1], shape[-1] + 3, dtype=dtype, device=device)[..., 1:shape[-1] + 1]
        assert not x.is_contiguous()
    else:
        x = torch.randn(shape, dtype=dtype, device=device)
    return x


def _run_and_check(backend, device, shape, head_dim, mode, dtype, noncontig=False, cropped=False, floor_ulps=None):
    xl = _inputs(shape, dtype, device, noncontig, cropped).requires_grad_(True)
    x = xl.detach().cpu().double()  # the oracle and PyTorch see the kernel's (rounded) inputs
    x64 = x.clone().requires_grad_(True)
    want = attention_reference(x64, mode, head_dim)
    grad = torch.randn_like(want).to(dtype)
    (want_g,) = torch.autograd.grad(want, x64, grad.double())

    with avfast.backend(backend):
        got = temporal_spatial_attention(xl, mode, head_dim)
        (got_g,) = torch.autograd.grad(got, xl, grad.to(device))
    assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous()
    # PyTorch's own result in this dtype (forward and autograd backward through the fused SDPA).
    xb = x.to(dtype).requires_grad_(True)
    base = A.attention_sdpa(xb, mode, head_dim)
    (base_g,) = torch.autograd.grad(base, xb, grad)
    assert_accurate(got, want.detach(), base, what=f"{backend} forward", floor_ulps=floor_ulps)
    assert_accurate(got_g, want_g, base_g, what=f"{backend} backward", floor_ulps=floor_ulps)


# ---------------------------------------------------------------------------------------------
# CPU backend (the C++ kernel) and the reference itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,head_dim", VIDEO, ids=IDS(VIDEO))
def test_cpu_video(shape, head_dim, mode, dtype, request):
    if mode == "joint" and shape == VIDEO[-1][0] and dtype == torch.float32:
        # A known shortfall, kept visible: the kernel's fp32 error stays ~3e-8 rms from N = 512 up while
        # PyTorch's shrinks with the output (9.7e-9 at N = 4608), so here it is ~3x PyTorch's. fp16/bf16
        # (output rounding dominates) pass; strict, so a fix shows up as XPASS.
        request.applymarker(pytest.mark.xfail(strict=True, reason="cpu kernel fp32 error ~3x PyTorch's at N = 4608"))
    _run_and_check("cpu", "cpu", shape, head_dim, mode, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,head_dim", AUDIO, ids=IDS(AUDIO))
def test_cpu_audio(shape, head_dim, dtype):
    _run_and_check("cpu", "cpu", shape, head_dim, "temporal", dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_noncontiguous(mode, dtype):
    _run_and_check("cpu", "cpu", (1, 3 * 64, 5, 4, 3), 32, mode, dtype, noncontig=True)


# The lane kernels (16 small problems side by side in the AVX-512 lanes; by default for N <= 64
# tokens and >= 16 groups, e.g. temporal mode) against the tile kernels, forced either way so each
# covers every shape: F = 1, 5, 18, 36; H*W = 1, 9, 35 (lane blocks with a remainder), 256.
LANE_VIDEO = [
    ((1, 3 * 64, 1, 3, 3), 64),
    ((2, 3 * 64, 5, 3, 3), 32),
    ((1, 3 * 128, 18, 1, 1), 64),
    ((1, 3 * 64, 18, 5, 7), 64),
    ((1, 3 * 64, 36, 3, 3), 64),
    ((1, 3 * 128, 18, 16, 16), 64),
    ((2, 3 * 32, 5, 4, 3), 16),
]


@pytest.mark.parametrize("kernel", ["lanes", "tiles"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,head_dim", LANE_VIDEO, ids=IDS(LANE_VIDEO))
def test_cpu_temporal_kernels(shape, head_dim, dtype, kernel, monkeypatch):
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", kernel)
    _run_and_check("cpu", "cpu", shape, head_dim, "temporal", dtype)


# Contiguous tokens (spatial, joint, audio) take the column kernels (queries in the lanes, fp32
# read in place); forced to the packed tiles, the same shapes check those. N = 1, 9, 21, 45, 105,
# 130 (ragged last query and key tiles), 256.
COLS_CASES = [((1, 3 * 64, 1, 1, 1), 64), ((2, 3 * 64, 5, 3, 7), 32), ((1, 3 * 128, 2, 13, 10), 64),
              ((1, 3 * 64, 2, 16, 16), 64), ((2, 3 * 32, 5, 3, 3), 16)]


@pytest.mark.parametrize("kernel", ["cols", "tiles"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["spatial", "joint"])
@pytest.mark.parametrize("shape,head_dim", COLS_CASES, ids=IDS(COLS_CASES))
def test_cpu_contiguous_token_kernels(shape, head_dim, mode, dtype, kernel, monkeypatch):
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", kernel)
    # A known shortfall, measured on an Intel Xeon (AVX-512 with FP16; it passed on the Zen 4 machines): with
    # one token (N = 1) the tiles backward's dS = P (dP - delta) cancels exactly in exact arithmetic, but dP comes
    # from the GEMM microkernel's lane-wise sums and delta = dO . O from a sequential sum, so dS keeps about one
    # ulp of |dO| |V|: fp32 dq max error 7.15e-7 where 2 ulp of the gradient's size allowed 6.47e-7 (PyTorch's
    # own error there is ~0). 3 ulp covers it; every other case keeps the default floor.
    one_token = kernel == "tiles" and dtype == torch.float32 and shape[2:] == (1, 1, 1)
    _run_and_check("cpu", "cpu", shape, head_dim, mode, dtype, floor_ulps=3.0 if one_token else None)


@pytest.mark.parametrize("kernel", ["cols", "tiles"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_audio_kernels(dtype, kernel, monkeypatch):
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", kernel)
    _run_and_check("cpu", "cpu", (2, 3 * 64, 130), 64, "temporal", dtype)
    _run_and_check("cpu", "cpu", (1, 3 * 64, 112), 64, "temporal", dtype, cropped=True)


@pytest.mark.parametrize("layout", ["noncontig", "cropped"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_lanes_strided(layout, mode, dtype, monkeypatch):
    # Lanes through a non-unit pixel stride (channels-last: gathered) and through rows that do not
    # flatten (cropped W: one lane block per row); spatial / joint here have N <= 64 too.
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", "lanes")
    _run_and_check("cpu", "cpu", (2, 3 * 64, 5, 4, 6), 32, mode, dtype,
                   noncontig=layout == "noncontig", cropped=layout == "cropped")


def test_cpu_kernels_differ_and_lse(monkeypatch):
    monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", "lanes")
    _run_and_check("cpu", "cpu", (3, 3 * 64, 7), 32, "temporal", torch.float32)
    x = torch.randn(2, 3 * 64, 3, 3, 5)  # N <= 64 in every mode
    for mode in MODES:
        ref_out, ref_lse = A.attention_reference_with_lse(x.double(), mode, 32, 0.3)
        got = {}
        for kernel in ("lanes", "cols", "tiles"):
            monkeypatch.setenv("AVFAST_ATTN_CPU_KERNEL", kernel)
            with avfast.backend("cpu"):
                out, lse = got[kernel] = torch.ops.avfast.temporal_spatial_attention(x, mode, 32, 0.3)
            base_out, base_lse = A.attention_sdpa(x, mode, 32, 0.3), flash_attention_lse(x, mode, 32, 0.3)
            assert_accurate(out, ref_out, base_out, what=f"{kernel} {mode} out")
            assert_accurate(lse, ref_lse, base_lse, what=f"{kernel} {mode} lse")
        # The kernels really ran (different summation orders); temporal tokens are strided (no cols).
        assert not torch.equal(got["lanes"][0], got["tiles"][0])
        if mode != "temporal":
            assert not torch.equal(got["cols"][0], got["tiles"][0])
            assert not torch.equal(got["cols"][0], got["lanes"][0])


def test_cpu_inference_fast_path_keeps_the_op_visible():
    # No-grad eager calls on plain CPU tensors skip the custom-op dispatch; anything that must see
    # the op (dispatch modes, torch.compile, functorch) still gets it, with the same numbers.
    x = torch.randn(1, 3 * 64, 5, 3, 3)
    with torch.no_grad():
        fast = temporal_spatial_attention(x, "temporal")
    op_out, _ = torch.ops.avfast.temporal_spatial_attention(x, "temporal", 64, 64 ** -0.5)
    assert torch.equal(fast, op_out)

    with torch.no_grad():
        _, seen = dispatched_ops(lambda: temporal_spatial_attention(x, "temporal"))
    assert any("avfast" in name for name in seen)
    with torch.no_grad():
        compiled = torch.compile(lambda t: temporal_spatial_attention(t, "temporal"), fullgraph=True,
                                 backend="aot_eager")
        torch.testing.assert_close(compiled(x), fast)
        pair = x[None].expand(2, -1, -1, -1, -1, -1)
        batched = torch.func.vmap(lambda t: temporal_spatial_attention(t, "temporal"))(pair)
    torch.testing.assert_close(batched[1], fast)


def test_lse_matches_reference():
    x = torch.randn(2, 3 * 64, 5, 3, 4)
    for mode in MODES:
        with avfast.backend("cpu"):
            out, lse = torch.ops.avfast.temporal_spatial_attention(x, mode, 32, 0.3)
        ref_out, ref_lse = A.attention_reference_with_lse(x.double(), mode, 32, 0.3)
        base_out, base_lse = A.attention_sdpa(x, mode, 32, 0.3), flash_attention_lse(x, mode, 32, 0.3)
        assert_accurate(out, ref_out, base_out, what=f"{mode} out")
        assert_accurate(lse, ref_lse, base_lse, what=f"{mode} lse")


def test_reference_computes_only_what_it_returns():
    """attention_reference is the benchmarks' baseline: no log-sum-exp it would throw away (the lse has
    its own function, attention_reference_with_lse, for the kernels' lse oracle and the backward)."""
    x = torch.randn(1, 3 * 64, 3, 4, 4)
    out, ops = dispatched_ops(lambda: attention_reference(x, "spatial", 32))
    assert not [op for op in ops if "logsumexp" in op], ops
    (ref, lse), ops_lse = dispatched_ops(lambda: A.attention_reference_with_lse(x, "spatial", 32))
    assert [op for op in ops_lse if "logsumexp" in op] and torch.equal(out, ref) and lse.shape == (1, 2, 3, 16)


def test_reference_matches_sdpa_in_fp64():
    # The oracle itself against an independent formulation (PyTorch's SDPA on permuted copies).
    for shape, d in VIDEO[:3]:
        x = torch.randn(shape, dtype=torch.float64)
        for mode in MODES:
            torch.testing.assert_close(attention_reference(x, mode, d), A.attention_sdpa(x, mode, d))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp32", "fp16", "bf16", "fp64"])
def test_sdpa_baseline_takes_the_fused_kernel(dtype):
    # The baseline of the benchmarks and of the tolerances must be PyTorch's fused kernel, forward
    # and backward; 5-D [B, heads, G, N, D] inputs would silently get the unfused math path.
    from torch.nn.attention import SDPBackend

    for shape, d in [VIDEO[1], VIDEO[3], AUDIO[1]]:
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        for mode in MODES:
            q = A.sdpa_problems(x, mode, d)
            assert torch._fused_sdp_choice(q, q, q) == int(SDPBackend.FLASH_ATTENTION), (shape, mode)
            five_d = A._to_problems(A._as5d(x), A._effective_mode(x, mode), d)
            assert torch._fused_sdp_choice(five_d, five_d, five_d) == int(SDPBackend.MATH)  # why the 4-D layout
            _, ops = dispatched_ops(lambda: torch.autograd.grad(A.attention_sdpa(x, mode, d).sum(), x))
            assert "aten._scaled_dot_product_flash_attention_for_cpu.default" in ops, ops
            assert "aten._scaled_dot_product_flash_attention_for_cpu_backward.default" in ops, ops


def test_fp16_large_logits_do_not_overflow():
    # |q.k| * scale ~ 1e4: exp overflows fp16 (and fp32) unless the max is subtracted first in fp32.
    x = (torch.randn(1, 3 * 64, 4, 4, 4) * 30).half()
    want = attention_reference(x.double(), "joint", 64)  # the same fp16-rounded inputs, in fp64
    with avfast.backend("cpu"):
        got = temporal_spatial_attention(x, "joint", 64)
    assert torch.isfinite(got).all()
    assert_accurate(got, want, A.attention_sdpa(x, "joint", 64), what="fp16 large logits")


def test_scale_argument():
    x = torch.randn(1, 3 * 32, 7)
    with avfast.backend("cpu"):
        got = temporal_spatial_attention(x, "temporal", 32, scale=0.05)
    assert_accurate(got, attention_reference(x.double(), "temporal", 32, scale=0.05),
                    A.attention_sdpa(x, "temporal", 32, scale=0.05), what="scale 0.05")


def test_fp64_gradcheck_reference_backend():
    x = torch.randn(1, 3 * 16, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    with avfast.backend("reference"):
        torch.autograd.gradcheck(lambda t: temporal_spatial_attention(t, "joint", 16), (x,))


# ---------------------------------------------------------------------------------------------
# Triton (interpreter on CPU; small shapes: the interpreter is slow)
# ---------------------------------------------------------------------------------------------
TRITON_CASES = [((1, 3 * 32, 5, 3, 3), 32, "spatial"), ((1, 3 * 32, 5, 3, 3), 32, "temporal"),
                ((1, 3 * 16, 3, 4, 5), 16, "joint"), ((2, 3 * 64, 7), 64, "temporal")]


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (pip install \"avfast[triton]\")")
@pytest.mark.parametrize("dtype", TRITON_DTYPES)
@pytest.mark.parametrize("shape,head_dim,mode", TRITON_CASES, ids=[f"{c[2]}-{'x'.join(map(str, c[0]))}"
                                                                   for c in TRITON_CASES])
def test_triton(shape, head_dim, mode, dtype):
    _run_and_check("triton", TRITON_DEVICE, shape, head_dim, mode, dtype)


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (pip install \"avfast[triton]\")")
def test_triton_noncontiguous():
    _run_and_check("triton", TRITON_DEVICE, (1, 3 * 32, 3, 2, 3), 32, "spatial", torch.float32,
                   noncontig=True)


def test_triton_flatten_tokens():
    from avfast.triton.attention import flatten_tokens

    sizes = [1, 2, 64, 1, 18, 1, 16, 16]
    assert flatten_tokens(sizes, [0, 0, 0, 256, 0, 16, 1]) == [0, 0, 0, 256, 1]
    assert flatten_tokens(sizes, [0, 0, 0, 256, 0, 32, 2]) == [0, 0, 0, 256, 2]
    assert flatten_tokens(sizes, [0, 0, 0, 256, 0, 1, 16]) is None  # transposed H, W


# ---------------------------------------------------------------------------------------------
# GPU-only backends
# ---------------------------------------------------------------------------------------------
# The CUDA C++ kernels (csrc/cuda/attention.cu). Without a GPU they still run on the CPU under a
# host emulation of CUDA threads: tests/test_attention_cuda_emulated.py.
requires_cuda_ext = pytest.mark.skipif(not HAS_CUDA or avfast._ext.load("cuda") is None,
                                       reason="needs a CUDA GPU and the avfast CUDA extension (none here)")


@requires_cuda_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,head_dim", VIDEO + [((2, 3 * 128, 5, 3, 7), 64), ((1, 3 * 32, 3, 5, 4), 16),
                                                    ((1, 3 * 256, 3, 4, 5), 128)],
                         ids=IDS(VIDEO + [((2, 3 * 128, 5, 3, 7), 64), ((1, 3 * 32, 3, 5, 4), 16),
                                          ((1, 3 * 256, 3, 4, 5), 128)]))
def test_cuda_video(shape, head_dim, mode, dtype, request):
    if mode == "joint" and shape == VIDEO[-1][0] and dtype == torch.float32:
        # The CPU kernel's known shortfall (test_cpu_video), seen on the CUDA kernel too: at N = 4608 in fp32
        # its error stays flat while PyTorch's shrinks with the output. It failed on an H200 with the 3-ulp
        # floor below (bench/results/gpu-nvidia-h200.json, second run); the margin was not measured, so this
        # is not strict: a GPU run that passes shows as XPASS.
        request.applymarker(pytest.mark.xfail(strict=False, reason="cuda kernel fp32 error above 2x PyTorch's "
                                                                   "at N = 4608 (H200)"))
    # A known shortfall, measured on an H200 (bench/results/gpu-nvidia-h200.json): in fp32 at head dim 64 the
    # kernel's max forward error was 3.59e-7 where 2 ulp allowed 3.34e-7 (temporal N = 18 and joint N = 4608).
    # It works in log2 space (scores scaled by log2(e)/sqrt(d), then exp2): one more rounding per score than
    # PyTorch's softmax. 3 ulp of the output's size covers it; fp16/bf16 keep the default floor.
    floor = 3.0 if dtype == torch.float32 else None
    _run_and_check("cuda", "cuda", shape, head_dim, mode, dtype, floor_ulps=floor)


@requires_cuda_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,head_dim", AUDIO, ids=IDS(AUDIO))
def test_cuda_audio(shape, head_dim, dtype):
    _run_and_check("cuda", "cuda", shape, head_dim, "temporal", dtype)


@requires_cuda_ext
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_noncontiguous(mode, dtype):
    _run_and_check("cuda", "cuda", (1, 3 * 64, 5, 4, 3), 32, mode, dtype, noncontig=True)


@requires_cuda_ext
@pytest.mark.parametrize("shape", [(1, 3 * 64, 18, 16, 16), (1, 3 * 64, 36, 16, 16)], ids=["N4608", "N9216"])
def test_cuda_long_joint(shape):
    # The model's joint attention at 16 x 16 latents (18 and 36 frames); oracle in fp64 on the GPU.
    x = torch.randn(shape, device="cuda")
    with avfast.backend("cuda"):
        out, lse = torch.ops.avfast.temporal_spatial_attention(x, "joint", 64, 0.125)
        g = torch.randn_like(out)
        grad = torch.ops.avfast.temporal_spatial_attention_backward(g, x, out, lse, "joint", 64, 0.125)
    ref_out, ref_lse = A.attention_reference_with_lse(x.double(), "joint", 64, 0.125)
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-4, rtol=1e-5)
    want = A.attention_backward_reference(g.double(), x.double(), ref_out, ref_lse, "joint", 64, 0.125)
    scale = want.abs().max().item()
    torch.testing.assert_close(grad.double() / scale, want / scale, atol=2e-5, rtol=0)


@requires_cuda_ext
def test_cuda_fp16_large_logits_and_determinism():
    x = (torch.randn(1, 3 * 64, 4, 4, 4) * 30).half().cuda()
    want = attention_reference(x.double(), "joint", 64)
    with avfast.backend("cuda"):
        got = temporal_spatial_attention(x, "joint", 64)
        out, lse = torch.ops.avfast.temporal_spatial_attention(x, "joint", 64, 0.125)
        g = torch.randn_like(out)
        g1 = torch.ops.avfast.temporal_spatial_attention_backward(g, x, out, lse, "joint", 64, 0.125)
        g2 = torch.ops.avfast.temporal_spatial_attention_backward(g, x, out, lse, "joint", 64, 0.125)
    assert torch.isfinite(got).all()
    assert (got.double() - want).abs().max().item() <= 2e-3 * want.abs().max().item()
    assert torch.equal(g1, g2), "the CUDA backward must be bitwise deterministic (no atomics)"


@requires_cuda_ext
def test_cuda_is_the_default_on_cuda_tensors():
    x = torch.randn(1, 3 * 64, 5, device="cuda")
    assert A._choose(A.OP, x, 64) == "cuda"
    assert A._choose(A.OP, x, 48) == "reference"  # head dims the kernels are not compiled for
    with avfast.backend("cuda"), pytest.raises(BackendUnavailableError, match="supports head_dim in"):
        temporal_spatial_attention(torch.randn(1, 3 * 48, 5, device="cuda"), "temporal", 48)


@requires_cuda_ext
def test_cuda_opcheck():
    x = torch.randn(1, 3 * 32, 3, 2, 3, device="cuda", requires_grad=True)
    with avfast.backend("cuda"):
        torch.library.opcheck(torch.ops.avfast.temporal_spatial_attention.default, (x, "spatial", 32, 0.2))
        out, lse = torch.ops.avfast.temporal_spatial_attention(x.detach(), "spatial", 32, 0.2)
        torch.library.opcheck(torch.ops.avfast.temporal_spatial_attention_backward.default,
                              (torch.randn_like(out), x.detach(), out, lse, "spatial", 32, 0.2))


def test_cuda_backend_is_declared():
    # Runs without a GPU: the op lists the CUDA kernel, and its head dims match what was compiled.
    assert "cuda" in A.SUPPORTS and set(A.SUPPORTS["cuda"]) == {torch.float32, torch.float16, torch.bfloat16}
    ext = avfast._ext.load("cuda")
    if ext is not None:
        assert tuple(ext.attention_head_dims) == A.GPU_HEAD_DIMS["cuda"]
    x = torch.randn(1, 3 * 64, 3)
    with avfast.backend("cuda"), pytest.raises(BackendUnavailableError, match="runs on CUDA tensors"):
        temporal_spatial_attention(x, "temporal")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none visible to torch here)")
@pytest.mark.skipif(importlib.util.find_spec("xformers") is None, reason="xformers is not installed")
@pytest.mark.parametrize("mode", MODES)
def test_xformers(mode):
    _run_and_check("xformers", "cuda", (2, 3 * 128, 5, 3, 7), 64, mode, torch.float16)


def test_forced_gpu_backend_on_cpu_is_an_error():
    x = torch.randn(1, 3 * 64, 3)
    for name in ("cuda", "xformers"):
        with avfast.backend(name), pytest.raises(BackendUnavailableError, match=repr(name)):
            temporal_spatial_attention(x, "temporal")


# ---------------------------------------------------------------------------------------------
# torch.library / torch.compile
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_opcheck(backend):
    x = torch.randn(1, 3 * 32, 3, 2, 3, requires_grad=True)
    with avfast.backend(backend):
        torch.library.opcheck(torch.ops.avfast.temporal_spatial_attention.default, (x, "spatial", 32, 0.2))
        out, lse = torch.ops.avfast.temporal_spatial_attention(x.detach(), "spatial", 32, 0.2)
        torch.library.opcheck(torch.ops.avfast.temporal_spatial_attention_backward.default,
                              (torch.randn_like(out), x.detach(), out, lse, "spatial", 32, 0.2))


def test_torch_compile_fullgraph():
    def block_with(attention, t):
        return attention(t * 2, "temporal", 32).sum(dim=1)

    def block(t):
        return block_with(temporal_spatial_attention, t)

    # Compiled (the op in the graph, the cpu kernel inside) against the fp64 oracle, forward and
    # backward, with PyTorch's fused SDPA in fp32 as the baseline.
    x = torch.randn(1, 3 * 64, 5, 2, 2, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    (got_g,) = torch.autograd.grad(got, x, torch.ones_like(got))
    x64 = x.detach().double().requires_grad_(True)
    want = block_with(attention_reference, x64)
    (want_g,) = torch.autograd.grad(want, x64, torch.ones_like(want))
    base = block_with(A.attention_sdpa, x)
    (base_g,) = torch.autograd.grad(base, x, torch.ones_like(base))
    assert_accurate(got, want.detach(), base, what="compiled forward")
    assert_accurate(got_g, want_g, base_g, what="compiled backward")


def test_decomposed_path_is_the_reference():
    # Decomposed: plain aten ops only (what ONNX export sees), and still the right numbers (fp64
    # oracle written differently: PyTorch's SDPA on permuted copies).
    x = torch.randn(1, 3 * 32, 4, 2, 2)
    with avfast.backends.decomposed():
        got, ops = dispatched_ops(lambda: temporal_spatial_attention(x, "joint", 32))
    assert ops and not any("avfast" in name for name in ops), ops
    assert_accurate(got, A.attention_sdpa(x.double(), "joint", 32), A.attention_sdpa(x, "joint", 32),
                    what="decomposed")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,head_dim,mode,match", [
    ((1, 3 * 48, 2, 2, 2), 32, "spatial", "divisible by `head_dim`"),
    ((1, 100, 2, 2, 2), 32, "spatial", "not divisible by 3"),
    ((1, 3 * 64, 2, 2), 64, "spatial", "must have 5 dimensions"),
    ((3 * 64,), 64, "spatial", "must have 5 dimensions"),
    ((1, 3 * 64, 2, 2, 2), 64, "spatio", "must be one of spatial, temporal, joint"),
    ((1, 3 * 64, 2, 2, 2), 0, "spatial", "`head_dim` must be a positive int"),
])
def test_bad_arguments(shape, head_dim, mode, match):
    with pytest.raises(AvfastInputError, match=match):
        temporal_spatial_attention(torch.randn(shape), mode, head_dim)


def test_bad_dtype_and_mismatches():
    with pytest.raises(AvfastInputError, match="dtype"):
        temporal_spatial_attention(torch.ones(1, 3 * 64, 4, dtype=torch.int32), "temporal")
    x = torch.randn(1, 3 * 32, 5)
    out, lse = torch.ops.avfast.temporal_spatial_attention(x, "temporal", 32, 0.2)
    with pytest.raises(AvfastInputError, match="one dtype"):
        torch.ops.avfast.temporal_spatial_attention_backward(out.half(), x, out, lse, "temporal", 32, 0.2)
    with pytest.raises(AvfastInputError, match="`grad_out` must have shape"):
        torch.ops.avfast.temporal_spatial_attention_backward(out[..., :4], x, out, lse, "temporal", 32, 0.2)
    with pytest.raises(AvfastInputError, match="one device"):
        A._check_backward(out.to("meta"), x, out, lse, "temporal", 32)
