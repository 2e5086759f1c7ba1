"""Denoiser runtimes: the same call `runtime(v_t, a_t, t_v, t_a, labels=None) -> (v_pred, a_pred)` on
PyTorch (eager with reference or fused ops, torch.compile), ONNX Runtime (CPU, or CUDA with IO binding),
TensorRT and OpenVINO, so `avfast.diffusion.sample(runtime, ...)` (and `avfast.Pipeline`) drives any of them.

    runtime = avfast.runtime.create("onnxruntime", model)          # exports (cached) and loads
    runtime = avfast.runtime.create("onnxruntime", path="export/out/tiny-fp32-b1-f18.onnx")
    video, audio = avfast.diffusion.sample(runtime, steps=50)

Each has `name` and `supports_grad` (False for exported graphs: reconstruction guidance needs autograd
and refuses them). onnxruntime, tensorrt and openvino are imported only when their runtime is created;
a missing one raises RuntimeUnavailable naming the extra to install.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ._optional import RuntimeUnavailable
from .base import IOSpec, Runtime

TORCH_RUNTIMES = ("eager-reference", "eager-fused", "compile")
EXPORTED_RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt", "openvino")
NAMES = TORCH_RUNTIMES + EXPORTED_RUNTIMES

__all__ = ["EXPORTED_RUNTIMES", "IOSpec", "NAMES", "Runtime", "RuntimeUnavailable", "TORCH_RUNTIMES", "create", "load"]


def load(name: str, path: str | Path, device: str | torch.device | None = None, precision: str | None = None):
    """The exported runtime `name` on an existing file: .onnx for onnxruntime*/openvino, .engine for tensorrt.

    `precision` is for openvino only: "bf16" runs an fp32 graph with the CPU plugin's bf16 kernels."""
    if precision is not None and name != "openvino":
        raise ValueError(f"load: `precision` applies to the openvino runtime only (got it for {name!r}); the "
                         f"other runtimes compute in the precision their file was exported in")
    if name == "onnxruntime":
        from .ort import OnnxRuntimeDenoiser

        return OnnxRuntimeDenoiser(path, device="cpu")
    if name == "onnxruntime-cuda":
        from .ort import OnnxRuntimeDenoiser

        if device is not None and torch.device(device).type != "cuda":  # never ONNX Runtime's CPU provider in silence
            raise ValueError(f"runtime 'onnxruntime-cuda' runs on CUDA, not {device}; use 'onnxruntime' for the CPU")
        return OnnxRuntimeDenoiser(path, device=device or "cuda")
    if name == "tensorrt":
        from .trt import TensorRTDenoiser

        return TensorRTDenoiser(path, device=device or "cuda")
    if name == "openvino":
        from .ov import OpenVinoDenoiser

        return OpenVinoDenoiser(path, inference_precision=precision)
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
    loads the fp32 export and computes with its CPU plugin's bf16 kernels (the graph stays fp32).
    """
    if name not in NAMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(NAMES)}")
    if name in TORCH_RUNTIMES:
        if model is None:
            raise ValueError(f"runtime {name!r} runs the PyTorch model: pass `model`")
        from .torch_runtimes import CompiledDenoiser, EagerDenoiser

        return CompiledDenoiser(model) if name == "compile" else EagerDenoiser(model, name.split("-", 1)[1])
    if name == "onnxruntime" and precision == "bf16":
        raise ValueError("runtime 'onnxruntime' (CPU) cannot run precision 'bf16': its CPU provider has no bf16 "
                         "kernels; use fp32 or fp16, or runtime 'openvino' with precision 'bf16'")
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
    return load(name, path, device, precision="bf16" if openvino_bf16 else None)
