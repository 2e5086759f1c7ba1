"""The op framework: backend choice, missing extensions, `python -m avfast.info`, the build switches."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import avfast
from avfast import _ext
from avfast.backends import BackendUnavailableError, Kernel, select
from avfast.ops import easy_fusion, easy_fusion_reference

ROOT = Path(__file__).resolve().parents[1]
ALL = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# An op's declarations (what each backend supports); the dispatcher only chooses among them.
SUPPORTS = {"reference": Kernel(None, None, ALL), "cpu": Kernel(None, None, ALL, devices=("cpu",)),
            "cuda": Kernel(None, None, ALL, devices=("cuda",)), "triton": Kernel(None, None, ALL[:3], devices=("cuda",))}
LEGACY = {"reference": ALL, "cpu": ALL, "cuda": ALL, "triton": ALL[:3]}  # the {backend: dtypes} form


def test_legacy_dtype_table_still_selects_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="Kernel"):
        assert select("op", torch.device("cpu"), torch.float32, LEGACY) == "cpu"
    with avfast.backend("triton"), pytest.warns(DeprecationWarning), pytest.raises(BackendUnavailableError):
        select("op", torch.device("cpu"), torch.float64, LEGACY)


def test_limits_and_preference_come_from_the_declarations(monkeypatch):
    from avfast import backends

    monkeypatch.setattr(backends, "why_unavailable", lambda name, device: None)
    kernels = {"reference": Kernel(None, None, ALL),
               "cuda": Kernel(None, None, ALL, devices=("cpu",), limits={"head_dim": (64,)}),
               "triton": Kernel(None, None, ALL[:3], devices=("cpu",), limits={"head_dim": (32, 64)},
                                preferred_for=(torch.float16,))}
    cpu = torch.device("cpu")
    assert select("op", cpu, torch.float32, kernels, head_dim=64) == "cuda"
    assert select("op", cpu, torch.float16, kernels, head_dim=64) == "triton"
    assert select("op", cpu, torch.float32, kernels, head_dim=32) == "triton"
    assert select("op", cpu, torch.float64, kernels, head_dim=32) == "reference"
    with avfast.backend("cuda"), pytest.raises(BackendUnavailableError, match=r"supports head_dim in \(64,\), got 32"):
        select("op", cpu, torch.float32, kernels, head_dim=32)


def test_default_backend_on_cpu_is_the_cpu_kernel():
    assert select("op", torch.device("cpu"), torch.float32, SUPPORTS) == "cpu"


def test_forced_backend_wins_and_nests():
    with avfast.backend("reference"):
        assert select("op", torch.device("cpu"), torch.float32, SUPPORTS) == "reference"
        with avfast.backend(None):
            assert select("op", torch.device("cpu"), torch.float32, SUPPORTS) == "cpu"
    assert select("op", torch.device("cpu"), torch.float32, SUPPORTS) == "cpu"


def test_env_variable_forces_backend(monkeypatch):
    monkeypatch.setenv("AVFAST_BACKEND", "reference")
    assert select("op", torch.device("cpu"), torch.float32, SUPPORTS) == "reference"
    monkeypatch.setenv("AVFAST_BACKEND", "bogus")
    with pytest.raises(ValueError, match=r"AVFAST_BACKEND environment variable must be one of .*got 'bogus'"):
        select("op", torch.device("cpu"), torch.float32, SUPPORTS)


def test_unknown_backend_name_is_rejected():
    with pytest.raises(ValueError, match=r"must be one of reference, cpu, cuda, triton, xformers; got 'gpu'"):
        with avfast.backend("gpu"):
            pass


def test_forcing_an_unusable_backend_is_an_error_not_a_fallback():
    v, a = torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 5)
    with avfast.backend("cuda"), pytest.raises(BackendUnavailableError, match=r"'cuda'.*runs on CUDA tensors, got cpu"):
        easy_fusion(v, a)
    with avfast.backend("xformers"), pytest.raises(BackendUnavailableError, match=r"does not implement this op"):
        easy_fusion(v, a)


def test_forced_backend_without_the_dtype_is_an_error():
    with avfast.backend("triton"), pytest.raises(BackendUnavailableError):
        select("op", torch.device("cpu"), torch.float64, SUPPORTS)


@pytest.fixture
def cpu_extension_missing(monkeypatch):
    monkeypatch.setitem(_ext._cache, "cpu", None)
    monkeypatch.setitem(_ext._errors, "cpu", "ImportError: simulated for the test")
    monkeypatch.setattr(_ext, "_warned", set())


def test_missing_extension_falls_back_to_reference_and_warns_once(cpu_extension_missing):
    v, a = torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 5)
    with pytest.warns(UserWarning, match=r"avfast\._C_cpu.*simulated.*pip install -e \..*reference"):
        out = easy_fusion(v, a)
    ref = easy_fusion_reference(v, a)
    torch.testing.assert_close(out[0], ref[0])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        easy_fusion(v, a)


def test_missing_extension_forced_is_an_error(cpu_extension_missing):
    v, a = torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 5)
    with avfast.backend("cpu"), pytest.raises(BackendUnavailableError, match=r"_C_cpu.*pip install -e \."):
        easy_fusion(v, a)


def test_import_without_any_extension_works():
    code = ("import sys; sys.modules['avfast._C_cpu'] = None; sys.modules['avfast._C_cuda'] = None\n"
            "import warnings, torch, avfast\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    out = avfast.ops.easy_fusion(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 1, 3))\n"
            "print(out[0].shape, len(w), str(w[0].message))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "torch.Size([1, 2, 2, 2, 2]) 1" in proc.stdout and "_C_cpu" in proc.stdout


def test_info_json_reports_extensions_and_backends():
    proc = subprocess.run([sys.executable, "-m", "avfast.info", "--json"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["version"] == avfast.__version__
    assert set(info["extensions"]) == {"cpu", "cuda"}
    assert info["extensions"]["cpu"] is True, info.get("extension_errors")
    assert info["cuda_kernels_compiled"] == info["extensions"]["cuda"]
    if os.environ.get("AVFAST_CUDA") == "1":  # CI: .ci/run requires the CUDA build
        assert info["cuda_kernels_compiled"], "AVFAST_CUDA=1, so the build must have compiled the CUDA kernels"
    if shutil.which("nvcc") and os.environ.get("AVFAST_CUDA", "auto") != "0":
        assert info["cuda_kernels_compiled"], "nvcc is here, so the build must have compiled the CUDA kernels"
    assert "reference" in info["backends"] and "cpu" in info["backends"]
    # runtime requirements only, each installed; pybind11 is build-only and must not show as missing
    assert "torch" in info["dependencies"] and "pybind11" not in info["dependencies"]
    assert all(info["dependencies"].values()), info["dependencies"]
    assert set(info["optional"]) >= {"onnxruntime", "onnxruntime-gpu", "tensorrt", "xformers"}


def test_info_text_mentions_each_part():
    proc = subprocess.run([sys.executable, "-m", "avfast.info"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("extensions:", "backends usable here:", "tensorrt", "onnxruntime-gpu"):
        assert word in proc.stdout


def _cmake_configure(tmp_path, *args, path=None):
    import pybind11

    env = dict(os.environ)
    env.pop("CUDACXX", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / "b"), f"-DPython_EXECUTABLE={sys.executable}",
                           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_build_requiring_cuda_without_nvcc_fails_clearly(tmp_path):
    proc = _cmake_configure(tmp_path, "-DAVFAST_CUDA=1", path="/usr/bin:/bin")
    if proc.returncode == 0:
        pytest.skip("an nvcc is visible even with PATH=/usr/bin:/bin, so the no-nvcc case cannot be staged here")
    assert "AVFAST_CUDA=1 but no CUDA compiler (nvcc) was found" in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_build_rejects_bad_cuda_switch(tmp_path):
    proc = _cmake_configure(tmp_path, "-DAVFAST_CUDA=maybe")
    assert proc.returncode != 0
    assert "AVFAST_CUDA must be auto, 0 or 1, got 'maybe'" in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_build_without_cuda_removes_a_stale_cuda_module(tmp_path):
    """An editable install rebuilt with AVFAST_CUDA=0 must not keep loading an older _C_cuda."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "_C_cuda.cpython-311-x86_64-linux-gnu.so"
    stale.write_bytes(b"old")
    (out / "_C_cpu.keep").write_bytes(b"")
    proc = _cmake_configure(tmp_path, "-DAVFAST_CUDA=0", f"-DAVFAST_OUTPUT_DIR={out}")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert (out / "_C_cpu.keep").exists()
    assert "removed the CUDA module of an earlier build" in proc.stdout


def test_first_op_call_does_not_import_torch_onnx():
    """Asking whether an ONNX export is running used to import torch.onnx (~0.3 s: the whole first-call
    latency of every op); an export imports it itself, so the ops must not."""
    code = ("import sys, torch\nfrom avfast.ops import easy_fusion, temporal_spatial_attention\n"
            "easy_fusion(torch.randn(1, 2, 3, 2, 2), torch.randn(1, 2, 5))\n"
            "temporal_spatial_attention(torch.randn(1, 3 * 64, 4, 2, 2), 'spatial')\n"
            "print('torch.onnx' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
