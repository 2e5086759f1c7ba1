"""A wheel install works on its own (issue 21, item 3): build the wheel from this checkout, install it
into a fresh venv, and run the main programs from another directory, so nothing can come from the
source tree (data files, the default model, the default output folders).

The fresh venv borrows this environment's installed packages (torch and the extras) through a path
entry, never its editable avfast: only the wheel's avfast is importable there. The build is
`pip wheel . --no-deps --no-build-isolation` (the test extra brings ninja, so the persistent CMake
tree in build/ is reused; nothing is downloaded and torch is never touched).
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, timeout=600, env=None):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a working directory outside the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    build = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                  "--no-index", "-q", "-w", str(dist)], cwd=ROOT, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("avfast-*.whl")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], cwd=base)
    assert install.returncode == 0, install.stderr[-3000:]
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=base).stdout.strip())
    # torch, numpy and the extras from this environment, after the venv's own site-packages (a plain path
    # entry: the .pth files there, among them the editable avfast's finder, are not processed).
    (site / "zz_borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    work = base / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import avfast, avfast.export.data as d; print(avfast.__file__); "
                  "print(d.PROFILES_FILE.is_file())"], cwd=work)
    assert where.returncode == 0, where.stderr
    location, has_data = where.stdout.split()
    assert Path(location).is_relative_to(site) and has_data == "True", where.stdout
    return python, work, site


def _program(python, work, *args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    r = _run([str(python), "-m", *args], cwd=work, timeout=timeout, env=env)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_wheel_exports_into_the_current_directory(wheel_env):
    python, work, site = wheel_env
    r = _program(python, work, "avfast.export", "--bench-steps", "0", "--no-progress")
    onnx = sorted((work / "export" / "out").glob("*.onnx"))
    assert onnx and onnx[0].with_suffix(".json").is_file(), r.stdout
    assert not list(site.joinpath("avfast").rglob("*.onnx")), "the export wrote into site-packages"
    assert not list((work / "export" / "out").glob(".*.staging")), "a staging folder was left behind"


@pytest.mark.slow
def test_wheel_metrics_sample_and_demo(wheel_env):
    python, work, _ = wheel_env
    rng = np.random.default_rng(0)
    for name in ("gen", "ref"):
        (work / name).mkdir()
        for i in range(4):
            np.save(work / name / f"{i}.npy", rng.standard_normal(8).astype(np.float32))
    _program(python, work, "avfast.metrics", "fd", "gen", "ref", "--json", "fd.json")
    assert (work / "fd.json").is_file()
    _program(python, work, "avfast.sample", "--out", "samples", "--no-progress")
    assert any(p.is_file() and p.stat().st_size for p in (work / "samples").rglob("*"))
    _program(python, work, "avfast.demo", "--out", "demo_out", "--no-progress")
    assert any(p.is_file() and p.stat().st_size for p in (work / "demo_out").rglob("*"))
