"""avfast: fast joint video-audio diffusion (CMMD) with fused kernels and an export path.

Importing avfast never builds or requires the native extensions: ops fall back to their
PyTorch reference (with one warning) when an extension is missing. See `python -m avfast.info`.
"""
from __future__ import annotations

__version__ = "0.1.0"

# Numba (librosa's JIT, used by the beat tracker) caches in a per-user folder, not in site-packages, where a
# corrupted shared cache made librosa crash with SIGSEGV (avfast/_numba.py); set before anything imports
# librosa, unless the user set NUMBA_CACHE_DIR.
from ._numba import use_user_cache as _use_user_cache

_use_user_cache()

from .backends import BACKENDS, BackendUnavailableError, backend, decomposed
from .backends import available as available_backends
from . import ops  # registers the torch.library custom ops (torch.ops.avfast.*)

__all__ = ["__version__", "BACKENDS", "BackendUnavailableError", "available_backends", "backend", "decomposed", "ops",
           "nn", "train", "data", "metrics", "Pipeline", "Clip"]

# Imported on first use (`avfast.nn.EasyFusion`, `avfast.train.make_negatives`, ...), so that
# `import avfast` stays light and optional media packages are never imported eagerly.
_LAZY_SUBMODULES = ("nn", "train", "data", "metrics", "sample", "diffusion", "pipeline", "models", "runtime",
                    "distill")
# `avfast.Pipeline` (avfast/pipeline.py): a model folder in, clips with sound out.
_LAZY_NAMES = {"Pipeline": "pipeline", "Clip": "pipeline"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'avfast' has no attribute {name!r}")
