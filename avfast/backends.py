"""Backend choice for avfast ops.

Every op has a `reference` implementation (PyTorch, the oracle) and some of the fused backends
`cpu` (OpenMP C++), `cuda` (CUDA C++), `triton` and, for attention, `xformers`. The default is
chosen by the tensors' device; `AVFAST_BACKEND=<name>` or `with avfast.backend("<name>"):` forces
one, and forcing a backend that cannot run here is an error that says why, never a silent fallback.

What each backend supports for an op (dtypes, devices, head dims, ...) is declared once, in the op's
own file, as `Kernel`s; `select` only chooses among them, and `why_unavailable` only says whether a
backend is present on this machine for a device (extension built, package installed, interpreter).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _ext
from ._deps import install_hint

BACKENDS = ("reference", "cpu", "cuda", "triton", "xformers")

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("avfast_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A requested backend cannot run this op on these tensors here."""


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


@contextlib.contextmanager
def backend(name: str | None) -> Iterator[None]:
    """Force every avfast op inside the block onto backend `name` (None: back to automatic)."""
    if name is not None:
        _check_name(name, "avfast.backend(name)")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def requested() -> tuple[str | None, str]:
    """The forced backend (or None) and where the request came from."""
    name = _override.get()
    if name is not None:
        return name, "avfast.backend()"
    env = os.environ.get("AVFAST_BACKEND", "").strip()
    if env:
        return _check_name(env, "the AVFAST_BACKEND environment variable"), "AVFAST_BACKEND"
    return None, ""


def triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def why_unavailable(name: str, device: torch.device) -> str | None:
    """None when backend `name` can run on `device` tensors here, else the reason it cannot."""
    if name == "reference":
        return None
    if name == "cpu":
        if device.type != "cpu":
            return f"the cpu backend runs on CPU tensors, got {device.type} tensors"
        return None if _ext.load("cpu") is not None else _ext.missing_message("cpu")
    if name == "cuda":
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors, got {device.type} tensors"
        return None if _ext.load("cuda") is not None else _ext.missing_message("cuda")
    if name == "triton":
        if not triton_importable():
            return f"Triton is not installed ({install_hint(['triton'])})"
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreter()):
            return None
        return (f"Triton runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1, set before "
                f"triton is imported), got {device.type} tensors")
    if name == "xformers":
        if device.type != "cuda":
            return f"the xformers backend runs on CUDA tensors, got {device.type} tensors"
        if importlib.util.find_spec("xformers") is None:
            return f"xformers is not installed ({install_hint(['xformers'])})"
        return None
    raise ValueError(f"unknown backend {name!r}")


@dataclass(frozen=True)
class Kernel:
    """What one backend's kernels for one op support, declared in the op's own file (avfast/ops/*.py):

        KERNELS = {"reference": Kernel(fwd, bwd, FLOATING),
                   "cuda": Kernel(fwd, bwd, GPU_DTYPES, devices=("cuda",), limits={"head_dim": (16, 32, 64, 128)}),
                   ...}

    `dtypes`: the tensor dtypes it takes. `devices`: the device types it is chosen on by default, in the
    order the op lists its kernels (a backend forced with `avfast.backend()` also runs where
    `why_unavailable` allows it, e.g. Triton on CPU under its interpreter). `limits`: other call
    arguments it is compiled for (name -> allowed values; a call outside them falls back, or is refused
    when forced). `preferred_for`: dtypes for which it is chosen ahead of the kernels listed before it
    (attention's Triton kernels for fp16/bf16: tensor cores). Adding a backend to an op is one entry here.
    """
    forward: Callable[..., Any]
    backward: Callable[..., Any] | None
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[str, ...] = ()
    limits: Mapping[str, tuple] = field(default_factory=dict)
    preferred_for: tuple[torch.dtype, ...] = ()

    def violation(self, limits: Mapping[str, Any]) -> str | None:
        """None when the call's `limits` (name -> value) are within this kernel's, else what is not."""
        for key, value in limits.items():
            allowed = self.limits.get(key)
            if allowed is not None and value not in allowed:
                return f"supports {key} in {tuple(allowed)}, got {value}"
        return None


# How `select` reads the pre-Kernel form {backend: dtypes} (one release, with a DeprecationWarning).
_LEGACY_DEVICES = {"cpu": ("cpu",), "cuda": ("cuda",), "triton": ("cuda",)}


def _as_kernels(supports: Mapping[str, Any]) -> Mapping[str, Kernel]:
    if all(isinstance(k, Kernel) for k in supports.values()):
        return supports
    warnings.warn("avfast.backends.select(op, device, dtype, {backend: dtypes}) is deprecated: declare "
                  "{backend: avfast.backends.Kernel(...)} (dtypes, devices, limits) instead", DeprecationWarning,
                  stacklevel=3)
    return {n: k if isinstance(k, Kernel) else Kernel(None, None, tuple(k), _LEGACY_DEVICES.get(n, ()))
            for n, k in supports.items()}


def dtypes_by_backend(kernels: Mapping[str, Kernel]) -> dict[str, tuple[torch.dtype, ...]]:
    """{backend: dtypes} of an op's kernel declarations (what the op's SUPPORTS reads)."""
    return {name: kernel.dtypes for name, kernel in kernels.items()}


def select(op: str, device: torch.device, dtype: torch.dtype, kernels: Mapping[str, Kernel], **limits: Any) -> str:
    """The backend that runs `op` on `device`/`dtype` tensors, from the op's declarations `kernels`.

    Forced (`avfast.backend()`, AVFAST_BACKEND): that backend, or BackendUnavailableError saying why it
    cannot run. Otherwise the first kernel, in the op's order (those `preferred_for` this dtype first),
    that runs on this device type, takes this dtype and these `limits` and is present here; else the
    PyTorch reference. This function only chooses: what each backend supports is the op's declaration,
    whether it is present here is `why_unavailable`.
    """
    kernels = _as_kernels(kernels)
    name, source = requested()
    if name is not None:
        if name not in kernels:
            raise BackendUnavailableError(
                f"{op}: backend {name!r} (forced by {source}) does not implement this op; "
                f"it has {', '.join(kernels)}")
        reason = why_unavailable(name, device)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend {name!r} (forced by {source}) cannot run here: {reason}")
        kernel = kernels[name]
        if dtype not in kernel.dtypes:
            raise BackendUnavailableError(
                f"{op}: backend {name!r} (forced by {source}) does not support {dtype}; "
                f"it supports {', '.join(map(str, kernel.dtypes))}")
        problem = kernel.violation(limits)
        if problem is not None:
            raise BackendUnavailableError(f"{op}: backend {name!r} (forced by {source}) {problem}")
        return name
    candidates = [n for n, k in kernels.items() if device.type in k.devices]
    candidates.sort(key=lambda n: dtype not in kernels[n].preferred_for)  # stable: declaration order otherwise
    for candidate in candidates:
        kernel = kernels[candidate]
        if dtype in kernel.dtypes and kernel.violation(limits) is None and why_unavailable(candidate, device) is None:
            return candidate
    for candidate in candidates:  # say once why the fast path is not taken
        if candidate in ("cpu", "cuda") and _ext.load(candidate) is None:
            _ext.warn_missing_once(candidate)
    return "reference"


_warned_ignored: set[tuple[str, str, str]] = set()


def warn_forced_ignored(where: str) -> None:
    """Warns once per (backend, source, where) that a forced backend is not used `where`: never a
    silent fallback, even where the reference is the only thing that can run."""
    if torch.compiler.is_compiling():  # dynamo cannot trace the ContextVar; eager calls warn
        return
    name, source = requested()
    if name is None or name == "reference" or (name, source, where) in _warned_ignored:
        return
    _warned_ignored.add((name, source, where))
    warnings.warn(f"avfast: backend {name!r} (forced by {source}) is not used {where}: every avfast op runs "
                  f"its PyTorch reference there", stacklevel=4)


def available(device: torch.device | str | None = None) -> list[str]:
    """Backends usable here (for `device`, or for any device when None)."""
    devices = [torch.device(device)] if device is not None else [torch.device("cpu")]
    if device is None and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    out = []
    for name in BACKENDS:
        if any(why_unavailable(name, d) is None for d in devices):
            out.append(name)
    return out


# A plain module global, not a ContextVar: torch.compile reads (and guards on) globals, while it
# cannot trace ContextVar.get. Exports run on one thread, so a process-wide flag is enough.
_decomposing = [False]


@contextlib.contextmanager
def decomposed() -> Iterator[None]:
    """Inside the block, ops run as their PyTorch reference composite instead of the custom op.

    Exporters use it (ONNX has no avfast operators; the composite maps onto standard ones).
    """
    previous = _decomposing[0]
    _decomposing[0] = True
    try:
        yield
    finally:
        _decomposing[0] = previous


def is_decomposing() -> bool:
    if _decomposing[0]:
        return True
    # An ONNX export imports torch.onnx before it runs the model. Asking through `torch.onnx` would
    # import it (~0.3 s, the whole first-call latency of every op), so ask only once it is loaded.
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()
