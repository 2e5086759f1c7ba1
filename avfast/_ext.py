"""Lazy loading of the native extension modules (avfast._C_cpu, avfast._C_cuda).

`import avfast` never fails because an extension is missing: the first op that wants one gets
`None` back, a single warning says what is missing and how to build it, and the op falls back
to the reference implementation (unless a backend was explicitly requested: then it is an error).
"""
from __future__ import annotations

import importlib
import threading
import warnings
from types import ModuleType

EXTENSIONS = {"cpu": "avfast._C_cpu", "cuda": "avfast._C_cuda"}

BUILD_HINT = (
    "build it with `pip install -e .` from the avfast checkout (needs CMake, a C++17 compiler with "
    "OpenMP{extra})"
)

_lock = threading.Lock()
_cache: dict[str, ModuleType | None] = {}
_errors: dict[str, str] = {}
_warned: set[str] = set()


def load(name: str) -> ModuleType | None:
    """The extension module `name` ("cpu" or "cuda"), or None when it was not built."""
    if name not in EXTENSIONS:
        raise ValueError(f"unknown avfast extension {name!r}; expected one of {sorted(EXTENSIONS)}")
    with _lock:
        if name not in _cache:
            try:
                _cache[name] = importlib.import_module(EXTENSIONS[name])
            except ImportError as exc:  # not built, or built for another Python
                _cache[name] = None
                _errors[name] = f"{type(exc).__name__}: {exc}"
        return _cache[name]


def error(name: str) -> str | None:
    """Why extension `name` could not be loaded (None if it loaded)."""
    load(name)
    return _errors.get(name)


def missing_message(name: str) -> str:
    extra = " and the CUDA toolkit's nvcc" if name == "cuda" else ""
    return (
        f"the avfast {name} extension ({EXTENSIONS[name]}) is not available "
        f"({error(name)}); " + BUILD_HINT.format(extra=extra)
    )


def warn_missing_once(name: str, fallback: str = "reference") -> None:
    with _lock:
        if name in _warned:
            return
        _warned.add(name)
    warnings.warn(f"{missing_message(name)}. Falling back to the {fallback} implementation.", stacklevel=3)


def cuda_kernels_compiled() -> bool:
    return load("cuda") is not None
