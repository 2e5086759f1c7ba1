"""ms per function evaluation (one denoiser call) on every runtime and precision, for `tiny` and
`paper-128` (18 frames, 112 mel steps) at batch 1 and 4, in one run.

Rows per case "ms/FE <model> B<b>": eager-reference fp32 (every avfast op on its PyTorch reference:
the baseline each speedup is measured against), eager-fused fp32 and bf16 autocast, torch.compile fp32,
ONNX Runtime fp32/fp16 (CPU), OpenVINO fp32 and bf16 (the fp32 graph on the CPU plugin's bf16
kernels; where installed), int8 on ONNX Runtime and OpenVINO (NNCF post-training quantisation with
calibration data from the sampler's trajectory, avfast.export.int8; needs nncf), and on a GPU ONNX Runtime's CUDA
provider and TensorRT fp32/fp16. The exported runtimes load a dynamic-batch export of each model and
precision, made once and cached (~/.cache/avfast/export, or $AVFAST_EXPORT_CACHE); exports and
compilation happen before timing (OpenVINO compiles the dynamic graph once per batch, at that static
batch, on the warm-up call: avfast.runtime.ov). Weights are stand-ins (timing does not depend on their values),
the same in every run (`avfast.export.stand_in_model`), so a later run reuses the cached exports.

    pytest bench/bench_runtimes.py --benchmark-only      # ~20 min on 2 CPU cores the first time, most of it exports
"""
from __future__ import annotations

import functools
import importlib.util

import pytest
import torch

from avfast import models
from avfast.export import create_runtime, stand_in_model
from avfast.runtime import RuntimeUnavailable, create
from conftest import warm_up

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODELS = {"tiny": 10, "paper-128": 3}          # preset -> timed rounds
BATCHES = (1, 4)
# row label -> (runtime, precision, impl label in the summary)
ROWS = {
    "eager-reference fp32": ("eager-reference", "fp32", "reference"),
    "eager-fused fp32": ("eager-fused", "fp32", "fused"),
    "eager-fused bf16": ("eager-fused", "bf16", "fused-bf16"),
    "compile fp32": ("compile", "fp32", "compile"),
    "onnxruntime fp32": ("onnxruntime", "fp32", "ort"),
    "onnxruntime fp16": ("onnxruntime", "fp16", "ort-fp16"),
    "openvino fp32": ("openvino", "fp32", "openvino"),
    "openvino bf16": ("openvino", "bf16", "openvino-bf16"),
    "onnxruntime int8": ("onnxruntime", "int8", "ort-int8"),
    "openvino int8": ("openvino", "int8", "openvino-int8"),
    "onnxruntime-cuda fp32": ("onnxruntime-cuda", "fp32", "ort-cuda"),
    "tensorrt fp32": ("tensorrt", "fp32", "trt"),
    "tensorrt fp16": ("tensorrt", "fp16", "trt-fp16"),
}
GPU_ONLY = {"onnxruntime-cuda", "tensorrt"}


@functools.lru_cache(maxsize=1)  # a model's cases run back to back: keep one alive
def _model(preset: str) -> models.JointUNet:
    return stand_in_model(preset).to(DEVICE)  # the same weights in every run: the export cache is reused


@functools.lru_cache(maxsize=8)
def _runtime(preset: str, name: str, precision: str, batch: int):
    model = _model(preset)
    if name in ("eager-reference", "eager-fused", "compile"):  # compile: dynamic=False, one compilation per batch
        return create(name, model, precision=precision)      # bf16/fp16: autocast inside the runtime
    profile_max = max(BATCHES)
    return create_runtime(name, model, batch_size=profile_max, precision=precision, dynamic_batch=True,
                          device=DEVICE if name in GPU_ONLY else None, progress=False)


@functools.lru_cache(maxsize=None)
def _flops(preset: str, batch: int) -> int | None:
    try:
        from bench._flops import count_flops
    except ImportError:  # the harness without FLOP counting
        return None
    model = _model(preset)
    inputs = model.example_inputs(batch_size=batch)
    with torch.no_grad():
        return count_flops(lambda: model(*inputs))


def _skip_reason(name: str, preset: str, precision: str = "fp32") -> str | None:
    if name == "compile" and preset != "tiny" and DEVICE == "cpu":
        return ("torch.compile of paper-128 takes over 10 minutes on a small CPU (tiny: ~4 min on 2 cores); "
                "its row is measured on GPUs")
    if name in GPU_ONLY and DEVICE != "cuda":
        return f"{name} needs a CUDA GPU (none visible to torch here)"
    package = {"onnxruntime": "onnxruntime", "onnxruntime-cuda": "onnxruntime", "openvino": "openvino",
               "tensorrt": "tensorrt"}.get(name)
    if package and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install \"avfast[{'ort' if 'onnx' in package else package}]\")"
    if precision == "int8" and importlib.util.find_spec("nncf") is None:
        return "int8 quantisation needs nncf (pip install \"avfast[int8]\")"
    return None


def _params():
    for preset in MODELS:
        for batch in BATCHES:
            for label in ROWS:  # varies fastest: a case's rows run back to back
                marks = [pytest.mark.smoke] if preset == "tiny" and batch == 1 and label in (
                    "eager-reference fp32", "onnxruntime fp32") else []
                yield pytest.param(preset, batch, label, marks=marks, id=f"{preset}-B{batch}-{label.replace(' ', '-')}")


@pytest.mark.parametrize("preset,batch,label", list(_params()))
def test_ms_per_fe(benchmark, preset, batch, label):
    name, precision, impl = ROWS[label]
    reason = _skip_reason(name, preset, precision)
    if reason:
        pytest.skip(reason)
    try:
        runtime = _runtime(preset, name, precision, batch)
    except RuntimeUnavailable as e:
        pytest.skip(str(e))
    model = _model(preset)
    v, a, t_v, t_a = model.example_inputs(batch_size=batch)
    device = getattr(runtime, "device", torch.device(DEVICE))
    inputs = tuple(x.to(device) for x in (v, a, t_v, t_a))
    def fe():
        with torch.no_grad():
            return runtime(*inputs)

    benchmark.group = f"ms/FE {preset} B{batch}"
    benchmark.extra_info.update(impl=impl, dtype=precision, model=preset, fe=True, runtime=name,
                                baseline=label == "eager-reference fp32")
    flops = _flops(preset, batch)
    if flops is not None:  # the PyTorch model's count: an exported graph computes the same function
        benchmark.extra_info["flops"] = flops
    warm_up(fe, 3 if preset == "tiny" else 1)   # compile / session warm-up happens here, untimed
    benchmark.pedantic(fe, rounds=MODELS[preset], iterations=1)
