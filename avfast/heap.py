"""Keep large CPU allocations on the heap: the page-fault tax of big tensors on Linux.

glibc serves every allocation above its mmap threshold (which grows to at most 32 MiB) with a fresh
mmap and unmaps it on free. Each denoiser call then page-faults its large activations in again, and
the kernel zeroes every page first: at `paper-512` (activations of 40-150 MB) that is a third of a CPU
function evaluation (bf16 FE 1.88 s with glibc's defaults, 1.30 s on the heap, measured on this
project's 2-core EPYC). Keeping every allocation on the heap (M_MMAP_MAX = 0) and never trimming it
(M_TRIM_THRESHOLD = 1 GiB) lets freed blocks be reused instead. The price: memory freed during the run
is kept by the process for reuse rather than returned to the system.

avfast's programs (`python -m avfast.sample`, `.demo`, `.train`, `.export`, `.experiments.claims`)
call `keep_large_allocations_on_the_heap()` when they run as programs; the library never changes the
allocator of a process it is imported into (call it yourself in your own script). The benchmarks
(bench/conftest.py) do the same. Set AVFAST_SYSTEM_MALLOC=1 to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # <malloc.h>
_applied: list[bool] = []


def keep_large_allocations_on_the_heap() -> bool:
    """Applies the setting once per process; True when it is in effect (glibc on Linux, not opted out)."""
    if _applied:
        return _applied[0]
    ok = False
    if os.environ.get("AVFAST_SYSTEM_MALLOC") != "1" and platform.system() == "Linux":
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
        except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
            ok = False
    _applied.append(ok)
    return ok
