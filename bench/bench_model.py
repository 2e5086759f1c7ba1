"""The whole denoiser: ms per function evaluation (FE), fused ops vs the PyTorch reference ops.

One FE is one forward of the joint U-Net at batch 1 under no_grad, as a sampler calls it:
`tiny`, `paper-128` at 18 frames (training length) and 36 frames (test length, 224 mel steps) and
`paper-512`; fp32 and bf16 autocast. "reference" runs the same model with every avfast op on its
PyTorch reference (`avfast.backend("reference")`), "fused" with the default backend. FLOPs per FE
are counted once per model with FlopCounterMode (bench/_flops.py) and shared by both backends and
dtypes, so GFLOP/s and the fraction of the matmul peak compare like with like.
"""
from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import avfast
from avfast import models
from bench._flops import count_flops
from conftest import DEVICE, warm_up

# label -> (preset, overrides, timed rounds, warm-up calls); the rounds keep the suite near 20 min on 2 cores.
CONFIGS = {
    "tiny 18f": ("tiny", {}, 10, 3),
    "paper-128 18f": ("paper-128", {}, 3, 1),
    "paper-128 36f": ("paper-128", {"frames": 36, "audio_length": 224}, 3, 1),
    "paper-512 18f": ("paper-512", {}, 3, 1),
}
SMOKE = {"tiny 18f"}          # the big models and 36 frames stay out of the CI smoke run
DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # autocast dtype
IMPLS = {"fused": None, "reference": "reference"}  # avfast.backend() argument


@functools.lru_cache(maxsize=1)  # cases of one model run back to back: build it once, keep one alive
def _model(label: str) -> models.JointUNet:
    preset, overrides, _, _ = CONFIGS[label]
    torch.manual_seed(0)
    return models.create(preset, **overrides).eval().to(DEVICE.name)


@functools.lru_cache(maxsize=None)
def _flops_per_fe(label: str) -> int:
    model = _model(label)
    inputs = model.example_inputs(batch_size=1)
    with torch.no_grad():
        return count_flops(lambda: model(*inputs))


def _params():
    for label in CONFIGS:
        for dtype in DTYPES:
            for impl in IMPLS:  # varies fastest: a case's rows run back to back
                marks = [pytest.mark.smoke] if label in SMOKE and dtype == "fp32" else []
                yield pytest.param(label, dtype, impl, marks=marks, id=f"{label.replace(' ', '-')}-{dtype}-{impl}")


@pytest.mark.parametrize("label,dtype,impl", list(_params()))
def test_denoiser_forward(benchmark, label, dtype, impl):
    model = _model(label)
    inputs = model.example_inputs(batch_size=1)
    autocast = (torch.autocast(DEVICE.name, dtype=DTYPES[dtype]) if DTYPES[dtype] is not None
                else contextlib.nullcontext())

    def fe():
        with torch.no_grad(), autocast:
            return model(*inputs)

    _, _, rounds, warm = CONFIGS[label]
    benchmark.group = f"denoiser fwd {label} B1 {dtype}"
    benchmark.extra_info.update(impl=impl, dtype=dtype, model=CONFIGS[label][0], fe=True, runtime="eager",
                                flops=_flops_per_fe(label))
    with avfast.backend(IMPLS[impl]):
        warm_up(fe, warm)
        benchmark.pedantic(fe, rounds=rounds, iterations=1)
