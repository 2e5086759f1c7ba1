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


# A long clip's memory beyond the model's: the full-length sampler state, the decoded pixels and sound and
# Griffin-Lim's spectrograms grow with its duration (the windows in flight do not). Measured on the shipped
# default (32x32 frames, 10 fps, Griffin-Lim): peak RSS 0.61 GB at 50 s, 1.05 GB at 200 s, 3.3 GB at 1000 s,
# about 2.9 MB per second of clip; the sound's share does not depend on the frame size, the pixels' does.
LONG_CLIP_AUDIO_BYTES_PER_SECOND = 2_500_000
LONG_CLIP_PIXEL_COPIES = 4   # float32 pixels of the whole clip held at once (decoded, clamped, encoded, spare)


def long_clip_bytes(config, seconds: float, frame_size: int) -> int:
    """Estimated memory one clip of `seconds` needs beyond the model (see LONG_CLIP_AUDIO_BYTES_PER_SECOND)."""
    pixels = LONG_CLIP_PIXEL_COPIES * 4 * 3 * float(config.fps) * frame_size * frame_size
    return int(seconds * (LONG_CLIP_AUDIO_BYTES_PER_SECOND + pixels))


def _gib(n: float) -> str:
    gib = n / GiB
    return f"{gib:.1f}" if gib < 1e6 else f"{gib:.2g}"


def long_clips_that_fit(config, seconds: float, device: str | torch.device, frame_size: int,
                        name: str = "`seconds`", clips: int = 1, model_bytes: int = 0) -> int | None:
    """Refuses (TooLarge, one line naming `name`) a duration whose `clips` clips cannot fit in this machine's
    memory (half the available memory is the budget, as for batches); returns the most such clips that fit
    at once (None: nothing known about this device's memory). `model_bytes`: the model's peak on the windows
    in flight (avfast.models.memory.windows_peak_bytes), which grows with the window and window_batch, not
    with the duration."""
    have = available_bytes(device)
    if have is None:
        return None
    one, per_second = long_clip_bytes(config, seconds, frame_size), long_clip_bytes(config, 1.0, frame_size)
    budget = have // 2 - model_bytes
    if one * clips > budget:
        many = "a clip that long needs" if clips == 1 else f"{clips} clips that long need"
        windows = f" and {_gib(model_bytes)} GiB for the windows in flight" if model_bytes else ""
        raise TooLarge(f"{name} {seconds:g}: {many} about {_gib(one * clips + model_bytes)} GiB of memory (estimated, "
                       f"{per_second / 1e6:.1f} MB per second of clip{windows}), more than half of the {_gib(have)} "
                       f"GiB available; the longest that fits is about {max(0, int(budget / max(per_second * clips, 1)))} s"
                       + ("" if clips == 1 else " (or make fewer clips per call)")
                       + ("; shorter windows or fewer windows per call need less" if model_bytes else ""))
    return max(1, int(budget // max(one, 1)))
