"""Benchmark setup shared by every suite: `pytest bench/ --benchmark-only`.

Each benchmark sets `benchmark.group` (one op, pass and shape) and `benchmark.extra_info`:
`impl` (e.g. "fused", "reference", "sdpa") and optionally `bytes` (effective memory traffic).
At the end a table per group prints median time, effective GB/s and the speedup over the
group's "reference" impl — ratios measured in this one run, on this machine.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # never benchmarked, but imports must not break


def device_name() -> str:
    if HAS_CUDA:
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def warm_up(fn, calls: int = 5) -> None:
    """Run `fn` a few times before timing: the first calls pay one-off costs (thread pools,
    Triton compiles, and glibc raising its mmap threshold after the first large free, without
    which every large output is a fresh mmap that page-faults on each call)."""
    for _ in range(calls):
        fn()


@pytest.fixture
def sync():
    """Call after the measured work so that asynchronous GPU work is included in the time."""
    return torch.cuda.synchronize if HAS_CUDA else (lambda: None)


def _rows(config):
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return {}
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        if not bench.stats or not getattr(bench.stats, "rounds", 0):
            continue
        groups.setdefault(bench.group or bench.name, []).append(bench)
    return groups


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    groups = _rows(config)
    if not groups:
        return
    lines = [f"avfast speedups, one run on: {device_name()}", "",
             f"{'group':<62} {'impl':<12} {'median ms':>10} {'GB/s':>8} {'vs reference':>12}"]
    for group, benches in groups.items():
        ref = next((b for b in benches if b.extra_info.get("impl") == "reference"), None)
        for b in sorted(benches, key=lambda b: b.stats.median):
            med = b.stats.median
            nbytes = b.extra_info.get("bytes")
            gbs = f"{nbytes / med / 1e9:8.2f}" if nbytes else f"{'':>8}"
            speed = f"{ref.stats.median / med:11.2f}x" if ref is not None else f"{'':>12}"
            lines.append(f"{group[:62]:<62} {b.extra_info.get('impl', b.name)[:12]:<12} {med * 1e3:10.3f} {gbs} {speed}")
    text = "\n".join(lines)
    terminalreporter.write_sep("=", "avfast benchmark summary")
    terminalreporter.write_line(text)
    out = os.environ.get("AVFAST_BENCH_SUMMARY")
    if out:
        Path(out).write_text(text + "\n")
