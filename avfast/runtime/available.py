"""Whether a runtime can run here, checked before any work: its packages are found without importing
them (onnxruntime-cuda imports onnxruntime to read its providers), CUDA runtimes need a CUDA device and
a CUDA `device`. So `--runtime tensorrt` without TensorRT, or `onnxruntime-cuda` on a CPU-only machine,
is one line before a model is loaded or exported, naming the runtimes that do run here, instead of
minutes of export first (or, for onnxruntime-cuda, a silent run on ONNX Runtime's CPU provider).
"""
from __future__ import annotations

import torch

from .._deps import install_hint, missing_packages
from ._optional import RuntimeUnavailable

TORCH_RUNTIMES = ("eager-reference", "eager-fused", "compile")
# What each exported runtime needs: the packages of exporting on demand (onnx, onnxscript) and its own.
_PACKAGES = {"onnxruntime": ("onnx", "onnxscript", "onnxruntime"),
             "onnxruntime-cuda": ("onnx", "onnxscript", "onnxruntime"),
             "tensorrt": ("onnx", "onnxscript", "tensorrt"),
             "openvino": ("onnx", "onnxscript", "openvino")}
_CUDA = ("onnxruntime-cuda", "tensorrt")


def why_unavailable(name: str, device: str | torch.device = "cpu", precision: str = "fp32") -> str | None:
    """None when runtime `name` can run on `device` here, else why not (with what to install or use)."""
    if name == "torch" or name in TORCH_RUNTIMES:
        return None
    if name not in _PACKAGES:
        return f"unknown runtime {name!r}"
    device = torch.device(device)
    packages = _PACKAGES[name] + (("nncf",) if precision == "int8" else ())
    missing = missing_packages(packages)
    if missing:
        return f"it needs {missing}"
    if name in _CUDA:
        if not torch.cuda.is_available():
            return (f"it runs on a CUDA GPU, and torch sees none here (torch {torch.__version__}, CUDA build: "
                    f"{torch.version.cuda or 'no'})")
        if device.type != "cuda":
            return f"it runs on a CUDA GPU, and the device asked for is {device}; use --device cuda"
        if name == "onnxruntime-cuda":
            import onnxruntime

            providers = onnxruntime.get_available_providers()
            if "CUDAExecutionProvider" not in providers:
                return (f"this onnxruntime has no CUDA execution provider (it has {', '.join(providers)}); "
                        f"install the GPU build: {install_hint(extras=['ort-gpu'])}")
    elif device.type != "cpu" and name in ("openvino", "onnxruntime"):  # their CPU builds: state on the CPU
        return f"it runs on the CPU, and the device asked for is {device}; ask for the cpu device"
    return None


def available(device: str | torch.device = "cpu", names: tuple[str, ...] | None = None) -> list[str]:
    """The runtimes of `names` (default: torch, then avfast.runtime.NAMES) that run on `device` here."""
    from . import NAMES

    names = ("torch",) + NAMES if names is None else names
    return [n for n in names if why_unavailable(n, device) is None]


def check_available(name: str, device: str | torch.device = "cpu", precision: str = "fp32") -> None:
    """Raises RuntimeUnavailable (one line: why, and which runtimes run here) unless `name` runs on `device`."""
    why = why_unavailable(name, device, precision)
    if why is not None:
        raise RuntimeUnavailable(f"runtime {name!r} cannot run here: {why}; runtimes that run on "
                                 f"{torch.device(device)} here: {', '.join(available(device))}")
