"""avfast: fast joint video-audio diffusion (CMMD) with fused kernels and an export path.

Importing avfast never builds or requires the native extensions: ops fall back to their
PyTorch reference (with one warning) when an extension is missing. See `python -m avfast.info`.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .backends import BACKENDS, BackendUnavailableError, backend, decomposed
from .backends import available as available_backends
from . import ops  # registers the torch.library custom ops (torch.ops.avfast.*)

__all__ = ["__version__", "BACKENDS", "BackendUnavailableError", "available_backends", "backend", "decomposed", "ops"]
