"""bench/gpu_check.py (`make gpu-check`) on a machine without a CUDA GPU: one line, exit 77, nothing written;
and its results document renders as docs/benchmarks.md's GPU block (bench.report.render_gpu)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_check  # noqa: E402  (light: no torch at import)


def _no_gpu_env() -> dict:
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so the exit path runs on a GPU machine too.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def test_without_a_gpu_it_exits_at_once_with_one_line_and_writes_nothing(tmp_path):
    results = sorted((ROOT / "bench" / "results").glob("gpu-*"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path / "out")], cwd=ROOT,
                          env=_no_gpu_env(), capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - t0
    lines = proc.stdout.splitlines()
    assert proc.returncode == gpu_check.NO_GPU_EXIT == 77, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and proc.stderr == "", (proc.stdout, proc.stderr)
    assert not (tmp_path / "out").exists()
    assert sorted((ROOT / "bench" / "results").glob("gpu-*")) == results
    assert seconds < 10  # < 2 s on an idle machine: it decides before importing torch


def test_the_no_gpu_decision_does_not_import_torch():
    code = ("import sys, os; os.environ['CUDA_VISIBLE_DEVICES'] = ''; from bench import gpu_check; "
            "assert gpu_check.main(['--out', '/nonexistent/x']) == 77; assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_no_gpu_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_stages_cover_the_issue_and_slug():
    names = [name for name, _, _ in gpu_check.stages()]
    assert names[:3] == ["info", "tests-cuda", "tests-triton"]
    assert {"export-trt", "bench-ops", "bench-runtimes-tiny", "bench-runtimes-paper-128",
            "sample:torch", "sample:tensorrt", "sample:onnxruntime-cuda"} <= set(names)
    assert gpu_check.slug("NVIDIA H200") == "nvidia-h200"
    assert gpu_check.slug("NVIDIA A100-SXM4-80GB") == "nvidia-a100-sxm4-80gb"
    assert gpu_check._pytest_counts("...\n3 passed, 2 skipped, 1 deselected in 4.2s\n") == \
        {"passed": 3, "skipped": 2, "deselected": 1}


def test_a_results_document_renders_as_markdown():
    pytest.importorskip("torch")
    from bench import report

    doc = {"schema": gpu_check.SCHEMA, "created": "2026-01-01T00:00:00+00:00", "command": "python -m bench.gpu_check",
           "commit": "abc", "gpu": {"name": "NVIDIA H200", "capability": "9.0", "count": 1, "torch": "2.11.0",
                                    "cuda": "13.0"},
           "budget_s": 540, "wall_s": 12.0, "finished": True, "failed": ["tests-cuda"],
           "build": {"cuda_kernels_compiled": True, "cuda_archs": "90", "triton_version": "3.6.0"},
           "stages": [{"name": "info", "status": "passed", "reason": "ok | fine", "seconds": 2.0, "tail": ""},
                      {"name": "tests-cuda", "status": "failed", "reason": "1 failed", "seconds": 9.0,
                       "tail": "E assert 1 == 2\n1 failed"}],
           "bench": None}
    text = report.render_gpu(doc)
    assert text.startswith("### NVIDIA H200 (compute capability 9.0)")
    assert "| info | passed | 2 | ok \\| fine |" in text and "built for sm_90" in text
    assert "<details><summary>tests-cuda: output tail</summary>" in text and "E assert 1 == 2" in text
