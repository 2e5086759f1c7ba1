"""Lazy imports of the optional runtime packages, each failing with the extra that installs it."""
from __future__ import annotations

import importlib
from types import ModuleType

from .._deps import EXTRAS, RuntimeUnavailable, install_hint


__all__ = ["EXTRAS", "RuntimeUnavailable", "require", "require_cuda"]  # EXTRAS: avfast._deps' table


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import `module` or raise RuntimeUnavailable naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        hint = install_hint(extras=[extra]) if extra else install_hint([module])
        raise RuntimeUnavailable(f"{purpose} needs the Python package {module!r}, which cannot be imported here "
                                 f"({e}); install it with: {hint}") from None


def require_cuda(purpose: str):
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailable(f"{purpose} needs a CUDA GPU, and torch sees none here "
                                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
