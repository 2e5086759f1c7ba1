"""ms per function evaluation (one denoiser call) and the name of the machine it was measured on."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        name += f"; GPU {torch.cuda.get_device_name(0)}"
    return name


def ms_per_fe(denoiser, inputs, calls: int = 10, warmup: int = 2) -> float:
    """Median wall time of `calls` denoiser calls on `inputs` after `warmup` untimed ones, in ms
    (CUDA work is synchronised before each clock read)."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    cuda = any(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            denoiser(*inputs)
        times = []
        for _ in range(calls):
            sync()
            start = time.perf_counter()
            denoiser(*inputs)
            sync()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
