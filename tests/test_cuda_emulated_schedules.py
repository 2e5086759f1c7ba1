"""Every CUDA kernel gives the same bits whatever order its threads and blocks run in.

The emulation (tests/cuda_emu/include/emu.h) runs one CUDA thread at a time, from barrier to
barrier, and one block after another, so a race cannot show as a nondeterministic result. Instead
each op runs under every schedule the emulation has: threads in index order, reversed, alternating
between the two per barrier phase, and a fresh random permutation per phase (blocks shuffled too).
All of them are legal CUDA schedules, so a kernel without races gives identical results under each,
and a missing __syncthreads or a block that reads another block's output does not. The toy kernels
(tests/cuda_emu/toy_kernels.cu) prove that the schedules catch exactly those two mistakes.
"""
from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import avfast
from avfast.ops import attention as A
from avfast.ops import contrastive_loss, easy_fusion
from cuda_emu.build import SCHEDULES, build_library, schedule

TOY_SOURCE = Path(__file__).resolve().parent / "cuda_emu" / "toy_kernels.cu"
TOY_THREADS = 64  # kToyThreads in toy_kernels.cu
# (name, seed): the shuffled schedule twice, with different permutations.
RUNS = [("alternating", 0), ("forward", 0), ("reverse", 0), ("shuffled", 1), ("shuffled", 2)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("no host C++ compiler (g++) to build the CUDA emulation")
    lib = build_library(TOY_SOURCE, tmp_path_factory.mktemp("cuda_emu_toy"))
    lib.toy_neighbour_sum.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.toy_read_previous_block.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


def _neighbour_sum(toy, name: str, seed: int, sync: bool, blocks: int = 3) -> np.ndarray:
    x = np.arange(blocks * TOY_THREADS, dtype=np.float32) + 1
    out = np.zeros_like(x)
    with schedule(toy, name, seed):
        toy.toy_neighbour_sum(x.ctypes.data, out.ctypes.data, blocks, int(sync))
    return out


def test_toy_kernel_with_barrier_gives_the_same_result_under_every_schedule(toy):
    x = np.arange(3 * TOY_THREADS, dtype=np.float32).reshape(3, TOY_THREADS) + 1
    want = (x + np.roll(x, -1, axis=1)).ravel()
    for name, seed in RUNS:
        np.testing.assert_array_equal(_neighbour_sum(toy, name, seed, sync=True), want, err_msg=name)


def test_missing_syncthreads_is_caught(toy):
    results = {(name, seed): _neighbour_sum(toy, name, seed, sync=False) for name, seed in RUNS}
    correct = _neighbour_sum(toy, "forward", 0, sync=True)
    # In index order every thread but the last reads its neighbour's slot before the neighbour wrote it.
    assert not np.array_equal(results["forward", 0], correct)
    assert not np.array_equal(results["forward", 0], results["reverse", 0])
    assert not np.array_equal(results["shuffled", 1], results["shuffled", 2])
    # alternating alone already catches it: its first phase runs forward, so it reads stale slots.
    assert not np.array_equal(results["alternating", 0], correct)


def _read_previous_block(toy, name: str, seed: int, blocks: int = 4) -> np.ndarray:
    # 4 blocks: within the AVFAST_EMU_MAX_GRID=4 cap that the session's emulated_cuda fixture sets (the
    # emulation reads it once per library), so the launch is never folded into fewer blocks.
    flags = np.zeros(blocks, dtype=np.float32)
    out = np.zeros(blocks, dtype=np.float32)
    with schedule(toy, name, seed):
        toy.toy_read_previous_block(flags.ctypes.data, out.ctypes.data, blocks)
    return out


def test_cross_block_race_is_caught(toy):
    in_order = _read_previous_block(toy, "forward", 0)
    np.testing.assert_array_equal(in_order, np.arange(4, dtype=np.float32))  # blocks one after another
    assert not np.array_equal(_read_previous_block(toy, "reverse", 0), in_order)
    assert not np.array_equal(_read_previous_block(toy, "shuffled", 1), in_order)


def _same_bits_under_every_schedule(module, run) -> None:
    """`run()` returns tensors; each schedule must give exactly the bits of the first one."""
    want = None
    for name, seed in RUNS:
        with schedule(module, name, seed):
            got = [t.detach().clone() for t in run()]
        if want is None:
            want = got
            continue
        for i, (g, w) in enumerate(zip(got, want)):
            bits = lambda t: t.contiguous().view(torch.uint8)  # noqa: E731  (NaN and -0.0 compared too)
            assert torch.equal(bits(g), bits(w)), f"output {i} differs under schedule {name}/{seed}"


def _easy_fusion_fwd_bwd(dtype):
    torch.manual_seed(0)
    v = torch.randn(2, 5, 3, 4, 5, dtype=dtype, requires_grad=True)
    a = torch.randn(2, 3, 7, dtype=dtype, requires_grad=True)
    gv, ga = torch.randn(2, 8, 3, 4, 5, dtype=dtype), torch.randn(2, 8, 7, dtype=dtype)

    def run():
        with avfast.backend("cuda"):
            vf, af = easy_fusion(v, a)
            dv, da = torch.autograd.grad((vf, af), (v, a), (gv, ga))
        return vf, af, dv, da
    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_easy_fusion_same_bits_under_every_schedule(emulated_cuda, dtype):
    _same_bits_under_every_schedule(emulated_cuda, _easy_fusion_fwd_bwd(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32-fused-gradient", "fp16-backward-kernel"])
def test_contrastive_loss_same_bits_under_every_schedule(emulated_cuda, dtype):
    # 2100 elements a sample: three 1024-element chunks, 6 block tasks over the emulation's 4 blocks.
    torch.manual_seed(0)
    G, Kv, B = 3, 1, 2
    x = [torch.randn(G, B, 2100), torch.randn(G, B, 35), torch.randn(B, 2100), torch.randn(B, 35)]
    x = [t.to(dtype).requires_grad_() for t in x]

    def run():
        with avfast.backend("cuda"):
            out = contrastive_loss(*x, Kv, eta=0.3, weight_v=0.7, weight_a=1.3, reduction="none")
            grads = torch.autograd.grad(out.loss.sum(), x)
        return (*out, *grads)
    _same_bits_under_every_schedule(emulated_cuda, run)


# Every head dim (each has its own tile sizes) with more tokens than one tile, odd counts.
ATTENTION_CASES = [
    ((1, 3 * 16, 70), 16, "joint", torch.float32),
    ((2, 3 * 32, 3, 3, 5), 32, "spatial", torch.float32),
    ((1, 3 * 64, 37), 64, "joint", torch.bfloat16),
    ((1, 3 * 128, 5, 2, 2), 128, "temporal", torch.float32),
]


@pytest.mark.parametrize("shape,head_dim,mode,dtype", ATTENTION_CASES,
                         ids=[f"{m}-{'x'.join(map(str, s))}-d{d}" for s, d, m, _ in ATTENTION_CASES])
def test_attention_same_bits_under_every_schedule(emulated_cuda, shape, head_dim, mode, dtype):
    torch.manual_seed(0)
    qkv = torch.randn(shape, dtype=dtype)
    grad_out = torch.randn(A.attention_reference(qkv.float(), mode, head_dim).shape).to(dtype)
    scale = A.default_scale(head_dim)

    def run():
        with avfast.backend("cuda"):
            out, lse = torch.ops.avfast.temporal_spatial_attention(qkv, mode, head_dim, scale)
            grad = torch.ops.avfast.temporal_spatial_attention_backward(grad_out, qkv, out, lse, mode,
                                                                        head_dim, scale)
        return out, lse, grad
    _same_bits_under_every_schedule(emulated_cuda, run)
