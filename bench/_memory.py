"""Peak memory of one call, above what the process held before it.

GPU: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory
allocated before the call (tensors of torch's caching allocator; cuBLAS/cuDNN workspaces they
allocate through it are included).

CPU: torch keeps no allocator statistics on CPU, and the profiler's memory events see only tensors
allocated by torch (not the scratch a C++ kernel takes from malloc, nor oneDNN/MKL buffers), so
the measure is the process's resident set: Linux lets a process reset its own high-water mark
(`echo 5 > /proc/self/clear_refs` sets VmHWM to the current VmRSS). Before the call the heap is
trimmed (`malloc_trim(0)` returns free heap pages to the kernel, so memory the call reuses from
earlier cases shows up again as new resident pages); the result is VmHWM after the call minus VmRSS
before it. It counts everything the call touched for the first time: outputs, temporaries,
kernel scratch, library buffers; not the inputs (already resident). Page granularity (4 KiB; 2 MiB
with transparent huge pages). The caller warms the function up first, so one-off costs (code
pages, thread stacks, caches that persist across calls) are not counted.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Callable
from pathlib import Path

import torch

CPU_METHOD = "resident-set high-water (VmHWM) over one call, after malloc_trim"
CUDA_METHOD = "torch.cuda.max_memory_allocated over one call"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") else None


_LIBC = _libc()


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), flags=re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} line")
    return int(match.group(1))


def why_unavailable(device: str) -> str | None:
    """None when peak memory can be measured on `device` here, else why not."""
    if device == "cuda":
        return None
    if not (_STATUS.exists() and _CLEAR_REFS.exists()):
        return "needs Linux /proc/self/status and /proc/self/clear_refs"
    try:
        _CLEAR_REFS.write_text("5")
    except OSError as exc:
        return f"cannot reset the resident-set high-water mark ({exc})"
    return None


def method(device: str) -> str:
    return CUDA_METHOD if device == "cuda" else CPU_METHOD


def peak_extra_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak memory of one `fn()` above what was held before it (see the module docstring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base)
    reason = why_unavailable(device)
    if reason is not None:
        raise RuntimeError(f"peak_extra_bytes: CPU peak memory {reason}")
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    _CLEAR_REFS.write_text("5")
    base = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - base) * 1024
