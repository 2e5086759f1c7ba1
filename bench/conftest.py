"""Benchmark setup shared by every suite: `pytest bench/ --benchmark-only`.

Each benchmark sets `benchmark.group` (one op, pass and shape) and `benchmark.extra_info`:
`impl` (e.g. "fused", "reference", "sdpa") and optionally `bytes` (effective memory traffic).
At the end a table per group prints median time, effective GB/s and the speedup over the
group's "reference" impl — ratios measured in this one run, on this machine. With
AVFAST_BENCH_SUMMARY=<prefix> the table, the rows as JSON and a bar chart are also written to
<prefix>.txt, <prefix>.json and <prefix>.png.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # never benchmarked, but imports must not break


def _keep_large_allocations_on_the_heap() -> bool:
    """glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mmaps, and every
    call then page-faults its whole output in: at batch 8 both the fused op and the reference would
    measure the kernel zeroing pages (~10 ms) rather than themselves, and which one pays depends on
    the allocator's history. Keeping every allocation on the heap (M_MMAP_MAX = 0, no trimming)
    measures the ops. Set AVFAST_BENCH_SYSTEM_MALLOC=1 to benchmark with glibc's defaults."""
    if HAS_CUDA or os.environ.get("AVFAST_BENCH_SYSTEM_MALLOC") == "1" or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


HEAP_ONLY_MALLOC = _keep_large_allocations_on_the_heap()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name() -> str:
    if HAS_CUDA:
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    malloc = ", heap-only malloc" if HEAP_ONLY_MALLOC else ""
    return (f"{_cpu_model()} CPU, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads{malloc})")


def warm_up(fn, calls: int = 5) -> None:
    """Run `fn` a few times before timing: the first calls pay one-off costs (thread pools,
    Triton compiles, and glibc raising its mmap threshold after the first large free, without
    which every large output is a fresh mmap that page-faults on each call)."""
    for _ in range(calls):
        fn()


@pytest.fixture(scope="session", autouse=True)
def _spin_up_cores():
    """Keep every core busy for ~0.5 s before the first benchmark: idle cores clock down, and the
    first case of a run otherwise measured up to 1.5x slower than the same case later on. Also
    starts torch's and avfast's thread pools."""
    import time

    a = torch.randn(256, 256)
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
    yield


@pytest.fixture(autouse=True)
def _fresh_heap():
    """Give every case the same starting heap: with trimming off (above), the free memory a large
    earlier case leaves behind (the attention reference at N = 9216 frees gigabytes) would shape
    where later, small cases land. Warm-up calls then fault in what a case needs."""
    if HEAP_ONLY_MALLOC:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    yield


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


def summary_rows(config) -> list[dict]:
    """One row per benchmark: group, impl, median seconds, GB/s and speedup over the group's reference."""
    rows = []
    for group, benches in _rows(config).items():
        ref = next((b for b in benches if b.extra_info.get("impl") == "reference"), None)
        for b in sorted(benches, key=lambda b: b.stats.median):
            med = b.stats.median
            nbytes = b.extra_info.get("bytes")
            rows.append({"group": group, "impl": b.extra_info.get("impl", b.name), "median_s": med,
                         "gb_per_s": nbytes / med / 1e9 if nbytes else None,
                         "speedup": ref.stats.median / med if ref is not None else None,
                         **{k: v for k, v in b.extra_info.items() if k not in ("impl", "bytes")}})
    return rows


def render_summary(rows: list[dict], device: str) -> str:
    lines = [f"avfast speedups, one run on: {device}", "",
             f"{'group':<62} {'impl':<12} {'median ms':>10} {'GB/s':>8} {'vs reference':>12}"]
    for r in rows:
        gbs = f"{r['gb_per_s']:8.2f}" if r["gb_per_s"] else f"{'':>8}"
        speed = f"{r['speedup']:11.2f}x" if r["speedup"] else f"{'':>12}"
        lines.append(f"{r['group'][:62]:<62} {str(r['impl'])[:12]:<12} {r['median_s'] * 1e3:10.3f} {gbs} {speed}")
    return "\n".join(lines)


def plot_summary(rows: list[dict], device: str, path: Path) -> bool:
    """Bar chart of every non-reference impl's speedup over its reference (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [r for r in rows if r["speedup"] and r["impl"] != "reference"]
    if not shown:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(shown) + 1.5))
    labels = [f"{r['group']}  [{r['impl']}]" for r in shown]
    colors = ["tab:green" if r["speedup"] >= 1 else "tab:red" for r in shown]
    # Bars grow from 1x: right for faster than the reference, left for slower.
    speed = [r["speedup"] for r in shown]
    ax.barh(range(len(shown)), [abs(x - 1.0) for x in speed], left=[min(x, 1.0) for x in speed], color=colors)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup over the PyTorch reference (median, same run)")
    ax.set_title(f"avfast kernels on {device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = summary_rows(config)
    if not rows:
        return
    device = device_name()
    text = render_summary(rows, device)
    terminalreporter.write_sep("=", "avfast benchmark summary")
    terminalreporter.write_line(text)
    prefix = os.environ.get("AVFAST_BENCH_SUMMARY")
    if prefix:  # <prefix>.txt, <prefix>.json and, with matplotlib, <prefix>.png
        Path(prefix + ".txt").write_text(text + "\n")
        Path(prefix + ".json").write_text(json.dumps({"device": device, "rows": rows}, indent=1, default=str))
        if plot_summary(rows, device, Path(prefix + ".png")):
            terminalreporter.write_line(f"plot: {prefix}.png")
