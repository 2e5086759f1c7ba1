"""How far the numbers can be trusted: spread per case, busy-machine checks, ratio spreads.

Spread of a case: IQR / median of its rounds (range / median below MIN_ROUNDS_FOR_IQR rounds, where
quartiles of 3-4 samples mean little). A case whose spread exceeds NOISE_BOUND is flagged. A ratio
of two medians carries the spreads of both: its relative spread is taken as the two relative
spreads added in quadrature, and it is never printed without it.

Busy machine: at the start the 1-minute load average (other processes: the benchmarks have not
started yet) and a calibration loop (a fixed matmul + tanh, timed CALIBRATION_CALLS times) are
recorded. The machine is called busy when the load exceeds half the cores or the loop's own
spread exceeds NOISE_BOUND; at the end the loop runs again, and a median that moved by more than
NOISE_BOUND means the machine's state changed during the run. The loop also runs briefly before
and after every case: a case whose loop took BUSY_FACTOR times the run's best is marked busy.
On a shared machine a case can be stalled through all its rounds (torch's threads parked on a core
another process holds): its spread is then small and only this check tells.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time

import torch

NOISE_BOUND = float(os.environ.get("AVFAST_BENCH_NOISE_BOUND", "0.10"))
MIN_ROUNDS_FOR_IQR = 5
CALIBRATION_CALLS = 30
CASE_CALIBRATION_CALLS = 10
# A case is marked busy when the calibration loop, run just before or just after it, took this many
# times its best median of the run. Stalls are not subtle: a thread parked behind another process
# costs whole scheduler ticks (4 ms) per parallel region, 20-100x the loop's 0.2 ms.
BUSY_FACTOR = 2.0


def spread(times: list[float]) -> float:
    """Relative spread of repeated timings: IQR / median (range / median for fewer than 5)."""
    if not times:
        raise ValueError("spread: `times` must hold at least one timing, got none")
    med = statistics.median(times)
    if med <= 0:
        return 0.0
    if len(times) < MIN_ROUNDS_FOR_IQR:
        return (max(times) - min(times)) / med
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / med


def ratio_spread(*spreads: float | None) -> float | None:
    """Relative spread of a ratio (or product) of medians with these relative spreads."""
    if any(s is None for s in spreads):
        return None
    return math.sqrt(sum(s * s for s in spreads))


@dataclasses.dataclass
class MachineState:
    load_1min: float | None
    cores: int
    calibration_ms: float
    calibration_spread: float

    def busy_reasons(self) -> list[str]:
        reasons = []
        if self.load_1min is not None and self.load_1min > 0.5 * self.cores:
            reasons.append(f"load average {self.load_1min:.1f} on {self.cores} cores")
        if self.calibration_spread > NOISE_BOUND:
            reasons.append(f"calibration loop spread {self.calibration_spread:.0%} > {NOISE_BOUND:.0%}")
        return reasons


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None


def calibration_times(calls: int = CALIBRATION_CALLS) -> list[float]:
    """A fixed CPU workload (256x256 matmul + tanh, ~1 ms on one core), timed `calls` times."""
    a = torch.full((256, 256), 0.01)
    times = []
    for _ in range(calls + 2):
        t0 = time.perf_counter()
        torch.tanh(a @ a)
        times.append(time.perf_counter() - t0)
    return times[2:]  # the first calls start the thread pool


def machine_state(calls: int = CALIBRATION_CALLS) -> MachineState:
    times = calibration_times(calls)
    return MachineState(_load(), os.cpu_count() or 1, statistics.median(times) * 1e3, spread(times))


def case_calibration_ms() -> float:
    """Median of a short calibration loop, run around each case."""
    return statistics.median(calibration_times(CASE_CALIBRATION_CALLS)) * 1e3


def drift(start: MachineState, end: MachineState) -> float:
    """Relative change of the calibration loop's median from the start to the end of the run."""
    return end.calibration_ms / start.calibration_ms - 1.0
