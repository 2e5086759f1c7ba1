"""The `benchmark` fixture every suite gets: pytest-benchmark's, made device-correct and measured.

`Benchmark` is pytest-benchmark's fixture (`group`, `extra_info`, `pedantic`, ... work as documented
there) with these additions:

- Device-correct timing: the timed function is followed by the device's synchronize, and a
  pedantic `setup` too, so a round's time runs from an idle device to the completion of the
  work it launched; nothing synchronises inside the timed region. Warm-up is the suite's job
  (`warm_up` in conftest) or pytest-benchmark's `warmup_rounds`.
- After timing (so the timings are not disturbed): one call under FlopCounterMode for the FLOPs
  and one call for the peak memory (bench/_flops.py, bench/_memory.py), unless the suite set
  `extra_info["flops"]` / `extra_info["peak_mb"]` itself.
- A `CaseRecord` in `RECORDS` once the test ends, which the summary, JSON and plots are made of.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench import _flops, _memory
from bench._limits import dtype_name


@dataclasses.dataclass(frozen=True)
class Device:
    """What timing needs from a device: its name and a way to wait for the work it was given."""
    name: str
    synchronize: Callable[[], None]


CPU = Device("cpu", lambda: None)
CUDA = Device("cuda", torch.cuda.synchronize)


def synchronized(fn: Callable[..., Any], device: Device) -> Callable[..., Any]:
    """`fn` followed by the device's synchronize: timing it includes the device work it launched."""
    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        device.synchronize()
        return out
    run.__name__ = getattr(fn, "__name__", "run")
    return run


@dataclasses.dataclass
class CaseRecord:
    """One benchmark case as the summary sees it."""
    nodeid: str
    case: str                       # benchmark.group: op, pass, shape (rows of one case are compared)
    backend: str                    # extra_info["impl"] (or "backend")
    dtype: str                      # fp32, bf16, ...
    times: list[float] | None       # seconds per round (None: benchmarks disabled)
    flops: int | None
    bytes: int | None
    peak_bytes: int | None
    baseline: bool                  # the row the case's other rows are compared with
    extra: dict                     # the rest of extra_info (model, runtime, ...)


RECORDS: list[CaseRecord] = []
# FLOPs per case: the problem's work, the same for every backend and precision of a case (bench/_flops.py),
# counted on the first row that FlopCounterMode can see into (an exported runtime counts 0) and shared.
_FLOPS: dict[str, int] = {}


def _param(request, *names: str):
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    for name in names:
        if name in params:
            return params[name]
    return None


def _as_dtype_name(value) -> str:
    return dtype_name(value) if isinstance(value, torch.dtype) else str(value)


class Benchmark(BenchmarkFixture):
    """pytest-benchmark's fixture plus device sync, FLOPs and peak memory (see the module docstring).

    pytest-benchmark insists that the `benchmark` funcarg is its own class, so the fixture it made
    is adopted (its class switched to this subclass) rather than wrapped."""

    _avf_device: Device
    _avf_request: object
    _avf_measure: bool

    @classmethod
    def adopt(cls, fixture: BenchmarkFixture, device: Device, request, measure: bool = True) -> "Benchmark":
        fixture.__class__ = cls
        fixture._avf_device, fixture._avf_request, fixture._avf_measure = device, request, measure
        return fixture

    def __call__(self, fn: Callable[..., Any], *args, **kwargs):
        result = super().__call__(synchronized(fn, self._avf_device), *args, **kwargs)
        self._measure_once(lambda: fn(*args, **kwargs))
        return result

    def pedantic(self, target: Callable[..., Any], args=(), kwargs=None, setup=None, teardown=None,
                 rounds: int = 1, warmup_rounds: int = 0, iterations: int = 1):
        device = self._avf_device
        result = super().pedantic(synchronized(target, device), args=args, kwargs=kwargs,
                                  setup=None if setup is None else synchronized(setup, device),
                                  teardown=teardown, rounds=rounds, warmup_rounds=warmup_rounds,
                                  iterations=iterations)

        def once():
            call_args, call_kwargs = args, kwargs or {}
            if setup is not None:
                made = setup()
                if made:
                    call_args, call_kwargs = made
            device.synchronize()
            out = target(*call_args, **call_kwargs)
            if teardown is not None:
                teardown(*call_args, **call_kwargs)
            return out

        self._measure_once(once)
        return result

    def _measure_once(self, call: Callable[[], object]) -> None:
        if not self._avf_measure:
            return
        info = self.extra_info
        if "flops" not in info:
            info["flops"] = self._case_flops(call)
        if "peak_mb" not in info and _memory.why_unavailable(self._avf_device.name) is None:
            info["peak_mb"] = _memory.peak_extra_bytes(call, self._avf_device.name) / 2**20

    def _case_flops(self, call: Callable[[], object]) -> int:
        case = self.group or self._avf_request.node.originalname
        if case in _FLOPS:
            return _FLOPS[case]
        counted = _flops.count_flops(call)
        if counted:
            _FLOPS[case] = counted
        return counted

    def _dtype(self) -> str:
        dtype = self.extra_info.get("dtype") or _param(self._avf_request, "dtype") or torch.get_default_dtype()
        return _as_dtype_name(dtype)

    def record(self) -> CaseRecord:
        """The finished case (call after the test body)."""
        node = self._avf_request.node
        info = dict(self.extra_info)
        backend = info.pop("impl", None) or info.pop("backend", None) or _param(self._avf_request, "impl", "backend")
        info.pop("dtype", None)
        stats = getattr(self.stats, "stats", None)  # None when benchmarks are disabled
        flops, nbytes, peak_mb = info.pop("flops", None), info.pop("bytes", None), info.pop("peak_mb", None)
        return CaseRecord(
            nodeid=node.nodeid, case=self.group or node.originalname, backend=str(backend or node.name),
            dtype=self._dtype(), times=list(stats.data) if stats else None,
            flops=None if flops is None else int(flops), bytes=int(nbytes) if nbytes else None,
            peak_bytes=None if peak_mb is None else int(peak_mb * 2**20),
            baseline=bool(info.pop("baseline", False)), extra=info)
