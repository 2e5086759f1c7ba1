"""Denoiser runtimes: the same call `runtime(v_t, a_t, t_v, t_a, labels=None) -> (v_pred, a_pred)` on
PyTorch (eager with reference or fused ops, torch.compile), ONNX Runtime (CPU, or CUDA with IO binding),
TensorRT and OpenVINO, so `avfast.diffusion.sample(runtime, ...)` (and `avfast.Pipeline`) drives any of them.

    runtime = avfast.runtime.create("onnxruntime", model)          # exports (cached) and loads
    runtime = avfast.runtime.create("onnxruntime", path="export/out/tiny-fp32-b1-f18.onnx")
    video, audio = avfast.diffusion.sample(runtime, steps=50)

Each has `name` and `supports_grad` (False for exported graphs: reconstruction guidance needs autograd
and refuses them). onnxruntime, tensorrt and openvino are imported only when their runtime is created;
a missing one raises RuntimeUnavailable naming the extra to install.

`precision=` is honoured by every runtime or refused before any work, naming what the runtime runs
(`RUNTIME_PRECISIONS`): the PyTorch runtimes autocast (fp32/bf16/fp16, outputs handed back in fp32), the
exported ones run a graph exported in that precision (int8: NNCF post-training quantisation on the CPU
runtimes; OpenVINO's bf16 is its CPU plugin's bf16 kernels on the fp32 graph).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .._precision import FLOAT_PRECISIONS, check_precision
from ._optional import RuntimeUnavailable
from .base import IOSpec, Runtime

TORCH_RUNTIMES = ("eager-reference", "eager-fused", "compile")
EXPORTED_RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt", "openvino")
NAMES = TORCH_RUNTIMES + EXPORTED_RUNTIMES

# What each runtime runs (names from avfast/_precision.py's table); anything else is refused by name.
RUNTIME_PRECISIONS: dict[str, tuple[str, ...]] = {
    "eager-reference": FLOAT_PRECISIONS, "eager-fused": FLOAT_PRECISIONS, "compile": FLOAT_PRECISIONS,
    "onnxruntime": ("fp32", "fp16", "int8"),
    "onnxruntime-cuda": ("fp32", "fp16"),
    "tensorrt": ("fp32", "fp16", "bf16"),
    "openvino": ("fp32", "bf16", "int8"),
}
_WHY_NOT = {
    ("onnxruntime", "bf16"): "its CPU provider has no bf16 kernels (Gemm, Conv)",
    ("onnxruntime-cuda", "bf16"): "its bf16 graphs are not tested here (TensorRT runs bf16)",
    ("onnxruntime-cuda", "int8"): "int8 is calibrated and checked for the CPU runtimes only",
    ("tensorrt", "int8"): "int8 is calibrated and checked for the CPU runtimes only",
    ("openvino", "fp16"): "its CPU plugin has no fp16 kernels on most CPUs and would compute in f32 or bf16",
}

__all__ = ["EXPORTED_RUNTIMES", "IOSpec", "NAMES", "RUNTIME_PRECISIONS", "Runtime", "RuntimeUnavailable",
           "TORCH_RUNTIMES", "check_runtime_precision", "create", "load"]


def check_runtime_precision(name: str, precision: str) -> str:
    """`precision` if runtime `name` runs it; else a ValueError naming what it runs and what runs `precision`."""
    if name not in NAMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(NAMES)}")
    check_precision(precision)
    runs = RUNTIME_PRECISIONS[name]
    if precision not in runs:
        why = _WHY_NOT.get((name, precision), "PyTorch autocasts to float dtypes only" if name in TORCH_RUNTIMES
                           else "not supported")
        others = [r for r in NAMES if precision in RUNTIME_PRECISIONS[r]]
        raise ValueError(f"runtime {name!r} cannot run precision {precision!r}: {why}; it runs {', '.join(runs)}; "
                         f"{precision} runs on: {', '.join(others)}")
    return precision


def load(name: str, path: str | Path, device: str | torch.device | None = None, precision: str | None = None,
         first_step=None):
    """The exported runtime `name` on an existing file: .onnx for onnxruntime*/openvino, .engine for tensorrt.

    `precision` is for openvino only: "bf16" runs an fp32 graph with the CPU plugin's bf16 kernels.
    `first_step` (onnxruntime, openvino): an int8 export's first-step graph, read from its manifest when None;
    False runs every call on the main graph (avfast.runtime.manifest.first_step_graph)."""
    if precision is not None and name != "openvino":
        raise ValueError(f"load: `precision` applies to the openvino runtime only (got it for {name!r}); the "
                         f"other runtimes compute in the precision their file was exported in")
    if name == "onnxruntime":
        from .ort import OnnxRuntimeDenoiser

        return OnnxRuntimeDenoiser(path, device="cpu", first_step=first_step)
    if name == "onnxruntime-cuda":
        from .ort import OnnxRuntimeDenoiser

        if device is not None and torch.device(device).type != "cuda":  # never ONNX Runtime's CPU provider in silence
            raise ValueError(f"runtime 'onnxruntime-cuda' runs on CUDA, not {device}; use 'onnxruntime' for the CPU")
        return OnnxRuntimeDenoiser(path, device=device or "cuda", first_step=first_step)
    if name == "tensorrt":
        from .trt import TensorRTDenoiser

        return TensorRTDenoiser(path, device=device or "cuda")
    if name == "openvino":
        from .ov import OpenVinoDenoiser

        return OpenVinoDenoiser(path, inference_precision=precision, first_step=first_step)
    raise ValueError(f"unknown exported runtime {name!r}; expected one of {', '.join(EXPORTED_RUNTIMES)}")


def create(name: str, model: torch.nn.Module | None = None, *, path: str | Path | None = None,
           batch_size: int = 1, frames: int | None = None, audio_length: int | None = None,
           precision: str = "fp32", dynamic_batch: bool = False, cache_dir: str | Path | None = None,
           device: str | torch.device | None = None, progress: bool = True, export: Callable[..., Path] | None = None):
    """A denoiser for the sampler on runtime `name` (one of NAMES).

    Torch runtimes wrap `model`. Exported runtimes load `path`, or export `model` first with `export`
    (avfast.export.create_runtime passes avfast.export.pipeline.export_cached: into `cache_dir`, default
    ~/.cache/avfast/export or $AVFAST_EXPORT_CACHE, checked for parity and reused while the weights and
    options are the same; without `export` this warns, deprecated). An export has fixed shapes: `batch_size` is the batch of each
    denoiser call (2x the clips with classifier-free guidance), `frames`/`audio_length` default to the
    model's; `dynamic_batch=True` accepts any batch up to the profile's maximum instead. OpenVINO in "bf16"
    loads the fp32 export and computes with its CPU plugin's bf16 kernels (the graph stays fp32). "int8"
    (onnxruntime, openvino) loads an int8 export: the fp32 graph quantised by NNCF on calibration data
    from the sampler's trajectory (avfast.export.int8). PyTorch runtimes autocast to bf16/fp16 and hand
    back fp32. A precision a runtime does not run is refused, naming what it runs.
    """
    if name not in NAMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(NAMES)}")
    check_runtime_precision(name, precision)
    if name in TORCH_RUNTIMES:
        if model is None:
            raise ValueError(f"runtime {name!r} runs the PyTorch model: pass `model`")
        from .torch_runtimes import CompiledDenoiser, EagerDenoiser

        if name == "compile":
            return CompiledDenoiser(model, precision=precision)
        return EagerDenoiser(model, name.split("-", 1)[1], precision=precision)
    openvino_bf16 = name == "openvino" and precision == "bf16"
    if path is None:
        if model is None:
            raise ValueError(f"runtime {name!r} needs `path` (an exported file) or `model` (to export)")
        if export is None:  # the exporter lives above runtime/ (avfast.export.create_runtime hands it in)
            import warnings

            from ..export.pipeline import export_cached as export  # deprecated fallback, one release (test_layering)

            warnings.warn(f"avfast.runtime.create({name!r}, model) exporting on demand is deprecated: use "
                          f"avfast.export.create_runtime({name!r}, model) (runtime.create loads exported files)",
                          DeprecationWarning, stacklevel=2)
        path = export(model, name, batch_size=batch_size, frames=frames, audio_length=audio_length,
                             precision="fp32" if openvino_bf16 else precision, dynamic_batch=dynamic_batch,
                             cache_dir=cache_dir, progress=progress)
    else:
        from .manifest import read_manifest

        exported = (read_manifest(path) or {}).get("precision")
        wanted = "fp32" if openvino_bf16 else precision
        if exported is not None and exported != wanted:
            raise ValueError(f"runtime {name!r} in precision {precision!r} needs a {wanted} export; {path} was exported "
                             f"in {exported} (its manifest says so)")
    return load(name, path, device, precision="bf16" if openvino_bf16 else None)
