"""How much memory a request needs, estimated before the work starts, so a size that cannot fit is
refused in one line instead of running for minutes or being OOM-killed.

The estimate (avfast.models.memory.model_peak_bytes) runs the model once on the meta device (no data, no compute: O(1) in the sizes) and
records the peak of the bytes its live tensors hold, forward only (inference, export) or forward and
backward with Adam's state (training). It is a lower bound of the real peak (allocator slack, library
workspaces and the data pipeline come on top), so refusing above it never refuses what would fit.
"""
from __future__ import annotations

import os
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GiB = 1 << 30


class TooLarge(ValueError):
    """The request's estimated memory is more than this machine has available."""


class PeakBytes(TorchDispatchMode):
    """Inside the block, the peak of the bytes live meta tensors hold (`.peak`)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                try:
                    storage = t.untyped_storage()
                except (RuntimeError, NotImplementedError):  # a view or a tensor subclass without
                    continue                                  # storage of its own: nothing new allocated
                n = storage.nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, n)
        return out


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory this process could still get on `device` (None where unknown): MemAvailable (and a cgroup
    limit, where one is set) for the CPU, the free device memory for CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.mem_get_info(device)[0]
        except (RuntimeError, AssertionError):
            return None
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            found.append(int(text))
    if os.environ.get("AVFAST_MEMORY_LIMIT_GIB"):  # tests and cautious users
        found.append(int(float(os.environ["AVFAST_MEMORY_LIMIT_GIB"]) * GiB))
    return min(found) if found else None


def check_fits(what: str, need: int, device: str | torch.device = "cpu") -> None:
    """Raise TooLarge naming `what` and the sizes when `need` bytes exceed what `device` has available."""
    have = available_bytes(device)
    if have is not None and need > have:
        raise TooLarge(f"{what} needs about {need / GiB:.1f} GiB of memory (estimated), more than the "
                       f"{have / GiB:.1f} GiB available on {torch.device(device).type}; ask for fewer frames or a "
                       f"smaller batch")
