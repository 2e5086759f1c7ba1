"""avfast.heap: large CPU allocations stay on the heap in avfast's programs (and only there)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# In a fresh interpreter: allocate and free a 64 MiB buffer, then count the page faults of a second one.
# On the heap the freed block is reused, pages already mapped: no faults. (glibc's default path depends
# on its dynamic mmap threshold and the kernel's huge pages, so only the opt-out flag is checked there.)
_PROBE = r"""
import resource, numpy as np
from avfast.heap import keep_large_allocations_on_the_heap
applied = keep_large_allocations_on_the_heap()
x = np.ones(16 << 20, dtype=np.float32); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = np.ones(16 << 20, dtype=np.float32)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.system() != "Linux", reason="the setting is glibc's (Linux)")
def test_large_allocations_reuse_the_heap_instead_of_faulting_pages_in():
    applied, faults = _probe()
    assert applied and not _probe(AVFAST_SYSTEM_MALLOC="1")[0]
    pages = (64 << 20) // os.sysconf("SC_PAGESIZE")
    assert faults < pages // 100, f"{faults} page faults re-allocating a freed 64 MiB block on the heap"


def test_importing_avfast_leaves_the_allocator_alone():
    out = subprocess.run([sys.executable, "-c", "import avfast, avfast.sample, avfast.heap as h; print(h._applied)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
