"""avfast: fast joint video-audio diffusion (CMMD) with fused kernels and an export path.

Start here: `avfast.Pipeline` (a model folder in, clips with sound out; `help(avfast.Pipeline)`):

    pipe = avfast.Pipeline.from_pretrained()            # the shipped default model
    clip = pipe("joint", seed=0)                        # an avfast.Clip: pixels, waveform, .save("out.mp4")
    clip = pipe("v2a", video="in.mp4")                  # sound for a video; "a2v": video for a sound

The fused ops are `avfast.ops` and `avfast.nn`; the samplers `avfast.diffusion`; export and runtimes
`avfast.export` / `avfast.runtime`; metrics `avfast.metrics`. Command lines: `python -m avfast.sample`,
`avfast.demo`, `avfast.export`, `avfast.train`, `avfast.distill`, `avfast.metrics`, `avfast.info`.

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
