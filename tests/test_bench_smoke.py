"""The benchmark suites still run: `pytest bench -m smoke --benchmark-disable` in a subprocess.

The smoke subset is each suite's first case per backend (bench/conftest.py) plus the cases a suite
marks itself; with --benchmark-disable each runs once, untimed, and the harness prints its summary
table (the timing, FLOP and memory parts are covered by tests/test_bench_harness.py). Time-boxed
by AVFAST_BENCH_SMOKE_TIMEOUT seconds (180: the run takes ~60 s on 2 cores shared with other work).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = float(os.environ.get("AVFAST_BENCH_SMOKE_TIMEOUT", "180"))


@pytest.mark.slow
def test_benchmark_smoke_subset_passes():
    env = {k: v for k, v in os.environ.items() if k != "AVFAST_BENCH_SUMMARY"}  # never overwrite committed results
    cmd = [sys.executable, "-m", "pytest", "bench", "-m", "smoke", "--benchmark-disable", "-q", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd[2:])}` took over {TIMEOUT:.0f} s (AVFAST_BENCH_SMOKE_TIMEOUT); "
                    f"output so far:\n{(exc.stdout or b'')[-3000:]!r}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"smoke benchmarks failed (exit {proc.returncode}):\n{out[-6000:]}"
    assert "avfast benchmark summary" in out and "benchmarks disabled:" in out, out[-3000:]
    summary = out[out.index("avfast benchmark summary"):]
    for suite in ("attention", "easy_fusion", "contrastive_loss", "denoiser fwd tiny", "train step tiny"):
        assert suite in summary, f"no smoke case of {suite!r} in the summary:\n{summary}"
