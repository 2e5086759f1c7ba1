"""Benchmark harness shared by every suite: `pytest bench/ --benchmark-only`.

Fixture API for a suite (nothing else is needed to appear in the summary, the JSON and the plots):

    def test_x(benchmark, impl):                       # `benchmark`: pytest-benchmark's fixture, wrapped
        benchmark.group = "myop fwd [1,128,18,16,16]"  # the case: its rows are compared with each other
        benchmark.extra_info.update(
            impl=impl,          # backend label ("fused", "reference", "sdpa", "onnxruntime", ...)
            dtype="bf16",       # optional: else the test's `dtype` parameter, else fp32
            bytes=n,            # optional: least memory traffic of one call (memory-bound cases)
            flops=n,            # optional: overrides the FlopCounterMode count of one call
            peak_mb=x,          # optional: overrides the measured peak memory of one call
            baseline=True,      # optional: compare the case's rows with this one (default impl "reference")
            model="paper-128", fe=True, runtime="eager",  # optional: one call = one denoiser evaluation
        )
        warm_up(run)                                   # from conftest import warm_up
        benchmark(run)                                 # or benchmark.pedantic(run, rounds=..., iterations=1)

What the wrapped fixture adds (bench/_fixture.py): the timed function (and a pedantic setup) is
followed by the device's synchronize, so GPU work is inside the timed region and nothing syncs
within it; after timing, one call for the peak memory (bench/_memory.py) and, on a case's first
row, one under FlopCounterMode (FLOPs, shared by the case's rows: bench/_flops.py). Other fixtures: `sync` (the device's synchronize; the wrapper
already calls it), `bench_device` ("cuda" or "cpu"), `limits` (this machine's measured limits,
bench/_limits.py). Marker `smoke`: the quick subset (`pytest bench -m smoke --benchmark-disable`);
a benchmark function with no smoke case of its own gets its first case per `impl` marked. Under
--benchmark-disable every case runs once, untimed, without warm-up, FLOP count or peak memory
(tests/test_bench_harness.py covers those), and the limits are not probed.

At the start a session fixture records the machine's state (load average, a calibration loop;
bench/_noise.py) and warns when it is busy, then probes its limits; the loop also runs around every
case, and a row run while it was slow is marked busy. At the end one summary table
is the last thing printed: pytest-benchmark's own wide tables are hidden (its `quiet` display
flag; `--bench-tables` shows them). With AVFAST_BENCH_SUMMARY=<prefix> the table, the results
JSON and the charts go to <prefix>.txt, <prefix>.json, <prefix>.png and <prefix>-ms-per-fe.png.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` importable however pytest is started

from bench import _fixture, _limits, _memory, _noise, _plots, _summary  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # never benchmarked, but imports must not break
DEVICE = _fixture.CUDA if HAS_CUDA else _fixture.CPU

_LIMITS = pytest.StashKey[_limits.Limits | None]()
_START = pytest.StashKey[_noise.MachineState | None]()
_WARNINGS = pytest.StashKey[list]()


def _keep_large_allocations_on_the_heap() -> bool:
    """glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mmaps, and every
    call then page-faults its whole output in: at batch 8 both the fused op and the reference would
    measure the kernel zeroing pages (~10 ms) rather than themselves, and which one pays depends on
    the allocator's history. avfast.heap keeps every allocation on the heap (what avfast's programs
    do too), so the ops are measured. Set AVFAST_BENCH_SYSTEM_MALLOC=1 (or AVFAST_SYSTEM_MALLOC=1) to
    benchmark with glibc's defaults."""
    if HAS_CUDA or os.environ.get("AVFAST_BENCH_SYSTEM_MALLOC") == "1":
        return False
    from avfast.heap import keep_large_allocations_on_the_heap

    return keep_large_allocations_on_the_heap()


HEAP_ONLY_MALLOC = _keep_large_allocations_on_the_heap()
_TIMED = [True]  # False under --benchmark-disable (set by the session fixture): nothing to warm up for


def warm_up(fn, calls: int = 5) -> None:
    """Run `fn` a few times before timing: the first calls pay one-off costs (thread pools,
    Triton compiles, and glibc raising its mmap threshold after the first large free, without
    which every large output is a fresh mmap that page-faults on each call)."""
    for _ in range(calls if _TIMED[0] else 0):
        fn()


# ------------------------------------------------------------------ options, markers, smoke subset
def pytest_addoption(parser):
    parser.addoption("--bench-tables", action="store_true",
                     help="also print pytest-benchmark's own per-group tables (hidden by default)")


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: quick benchmark subset for CI (run with --benchmark-disable)")
    config.stash[_WARNINGS] = []


def _impl_param(item) -> object:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params.get("impl", params.get("backend"))


def pytest_collection_modifyitems(config, items):
    """Benchmarks with no smoke case of their own: their first case per impl joins the smoke subset
    (tests that do not use the `benchmark` fixture are checks, not benchmarks, and stay out)."""
    explicit = {(item.path, item.originalname) for item in items if item.get_closest_marker("smoke")}
    seen = set()
    for item in items:
        if "benchmark" not in getattr(item, "fixturenames", ()):
            continue
        func = (item.path, item.originalname)
        key = (func, _impl_param(item))
        if func not in explicit and key not in seen:
            seen.add(key)
            item.add_marker(pytest.mark.smoke)


def _benchmarks_timed(config) -> bool:
    session = getattr(config, "_benchmarksession", None)
    return session is not None and not session.disabled and not session.skip


def _say(config, text: str) -> None:
    """Print now, during a fixture's setup (where pytest captures the output of everything else)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(text, yellow=True)


# ------------------------------------------------------------------ session: machine state, limits, heap
@pytest.fixture(scope="session", autouse=True)
def _machine(request):
    """Before the first case: the machine's state (warns when busy), its limits, and the cores kept
    busy for ~0.5 s (idle cores clock down: the first case of a run otherwise measured up to 1.5x
    slower than the same case later on)."""
    config = request.config
    config.stash[_START] = config.stash[_LIMITS] = None
    _TIMED[0] = _benchmarks_timed(config)
    if not _TIMED[0]:
        yield
        return
    start = config.stash[_START] = _noise.machine_state()
    for reason in start.busy_reasons():
        msg = f"the machine is busy ({reason}): timings will be noisy, compare ratios within this run only"
        config.stash[_WARNINGS].append(msg)
        _say(config, f"WARNING: {msg}")
    t0 = time.perf_counter()
    config.stash[_LIMITS] = _limits.probe(DEVICE.name)
    _say(config, f"{_summary.describe_limits(config.stash[_LIMITS].to_json())} (probed in {time.perf_counter() - t0:.1f} s)")
    a = torch.randn(256, 256)
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
    yield


@pytest.fixture
def limits(request) -> _limits.Limits | None:
    """This machine's measured limits (None when benchmarks are disabled)."""
    return request.config.stash[_LIMITS]


@pytest.fixture(autouse=True)
def _fresh_case():
    """Give every case the same starting heap: with trimming off (above), the free memory a large
    earlier case leaves behind (the attention reference at N = 9216 frees gigabytes) would shape
    where later, small cases land. Warm-up calls then fault in what a case needs. Then 0.1 s of
    parallel work: on a loaded machine the scheduler may have parked torch's threads on one core,
    where every parallel region waits a time slice for its second thread (bench/_limits.py)."""
    if HEAP_ONLY_MALLOC:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if _TIMED[0]:
        _limits.prime_threads()
    yield


@pytest.fixture
def bench_device() -> str:
    return DEVICE.name


@pytest.fixture
def sync():
    """The device's synchronize (the `benchmark` fixture already calls it after the timed function)."""
    return DEVICE.synchronize


@pytest.fixture
def benchmark(benchmark, request):
    """pytest-benchmark's fixture with device sync, FLOPs and peak memory (bench/_fixture.py)."""
    adopted = _fixture.Benchmark.adopt(benchmark, DEVICE, request, measure=_TIMED[0])
    before = _noise.case_calibration_ms() if _TIMED[0] else None
    yield adopted
    if adopted._mode:  # the test ran a benchmark (not skipped before it)
        if before is not None:  # the machine's state around the case (bench/_noise.py)
            adopted.extra_info["calibration_ms"] = [before, _noise.case_calibration_ms()]
        _fixture.RECORDS.append(adopted.record())


# ------------------------------------------------------------------ the summary, last
# tryfirst makes this wrapper the outermost one: its second half runs after pytest's own short test
# summary (skip reasons, failures), so the table is the last thing before the final result line.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is not None and not config.getoption("bench_tables"):
        session.quiet = True  # pytest-benchmark's display() prints nothing when quiet (regressions still raise)
    result = yield
    if _fixture.RECORDS:
        _report(terminalreporter, config)
    return result


def _report(terminalreporter, config) -> None:
    limits, start = config.stash[_LIMITS], config.stash[_START]
    end = _noise.machine_state() if start is not None else None
    warnings = list(config.stash[_WARNINGS])
    if start is not None and abs(_noise.drift(start, end)) > _noise.NOISE_BOUND:
        warnings.append(f"the calibration loop moved {_noise.drift(start, end):+.0%} between the start and the "
                        "end of the run: the machine's state changed; ratios of cases far apart are uncertain")
    rows = _summary.build_rows(_fixture.RECORDS, limits, [s.calibration_ms for s in (start, end) if s])
    results = _summary.results_document(rows, limits, start, end, _memory.method(DEVICE.name), warnings)
    text = _summary.render_summary(results)
    prefix = os.environ.get("AVFAST_BENCH_SUMMARY")
    if prefix:
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        Path(prefix + ".txt").write_text(text + "\n")
        Path(prefix + ".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        written = [prefix + ".txt", prefix + ".json", *_plots.write_plots(results, prefix)]
        text += "\nwritten: " + ", ".join(written)
    terminalreporter.write_sep("=", "avfast benchmark summary")
    terminalreporter.write_line(text)
