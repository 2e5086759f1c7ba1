"""Lazy imports of the optional runtime packages, each failing with the extra that installs it."""
from __future__ import annotations

import importlib
from types import ModuleType


class RuntimeUnavailable(RuntimeError):
    """A runtime's package or device is missing here; the message says what to install or use instead."""


# The pip extra of avfast that provides each optional package.
EXTRAS = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "ort", "tensorrt": "tensorrt", "openvino": "openvino",
          "nncf": "int8"}


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import `module` or raise RuntimeUnavailable naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = extra or EXTRAS.get(module, module)
        raise RuntimeUnavailable(f"{purpose} needs the Python package {module!r}, which cannot be imported here "
                                 f"({e}); install it with: pip install 'avfast[{extra}]'") from None


def require_cuda(purpose: str):
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailable(f"{purpose} needs a CUDA GPU, and torch sees none here "
                                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
