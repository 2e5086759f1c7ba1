"""The benchmark harness (bench/): limits probe, noise, FLOPs, peak memory, device-correct timing,
summary rows, regression comparison and the README tables generated from the committed results."""
from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not an installed package

from pytest_benchmark.fixture import BenchmarkFixture  # noqa: E402
from pytest_benchmark.utils import NameWrapper  # noqa: E402

from bench import _fixture, _flops, _limits, _memory, _noise, _summary, compare, report  # noqa: E402
from avfast.ops import attention as A  # noqa: E402
from _compare import assert_accurate  # noqa: E402


# ------------------------------------------------------------------ limits
def test_limits_probe_measures_this_machine():
    lim = _limits.probe("cpu", scale=0.05)
    assert {"fp32", "bf16"} <= set(lim.matmul_gflops) <= {"fp32", "bf16", "int8"}  # int8: the CPU int8 GEMM probe
    assert all(v > 0 for v in lim.matmul_gflops.values())
    assert set(lim.copy_gbps) == {"cache", "dram"} and all(v > 0 for v in lim.copy_gbps.values())
    assert lim.machine["cores"] >= 1 and lim.machine["threads"] == torch.get_num_threads()
    assert lim.machine["torch"] == torch.__version__ and lim.machine["torch_blas"]
    assert lim.flop_limit("fp16") is None  # not probed on CPU: no fraction rather than a made-up one
    assert lim.flop_limit("fp32") == pytest.approx(lim.matmul_gflops["fp32"] * 1e9)
    assert _limits.Limits.from_json(json.loads(json.dumps(lim.to_json()))) == lim


def test_int8_probe_runs_an_int8_product_on_u8_input_and_computes_it():
    pytest.importorskip("openvino", reason="the int8 GEMM probe is OpenVINO's (the `openvino` extra)")
    n = 64
    matmul = _limits.openvino_int8_matmul(n)
    assert matmul is not None, "OpenVINO did not compile the probe's product as an int8 FullyConnected"
    compiled, x_u8, w_i8, scale = matmul
    assert x_u8.dtype == np.uint8 and w_i8.dtype == np.int8 and x_u8.shape == w_i8.shape == (n, n)
    got = compiled.create_infer_request().infer({0: x_u8})[0]
    want = scale * (x_u8.astype(np.int64) @ w_i8.astype(np.int64).T)  # exact integer product
    assert_accurate(torch.from_numpy(np.asarray(got, np.float32)), torch.from_numpy(want), what="int8 probe product")


def test_bandwidth_limit_takes_the_nearest_probe_size():
    lim = _limits.Limits("cpu", {}, {"fp32": 100.0}, {"cache": 200.0, "dram": 20.0},
                         {"cache": 8 << 20, "dram": 512 << 20})
    assert lim.bandwidth_limit(4 << 20) == ("cache", 200e9)
    assert lim.bandwidth_limit(1 << 30) == ("dram", 20e9)


def test_probe_rejects_unknown_device():
    with pytest.raises(ValueError, match="`device` must be 'cpu' or 'cuda'"):
        _limits.probe("tpu")


# ------------------------------------------------------------------ noise
def test_spread_is_iqr_over_median_and_range_for_few_rounds():
    times = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0]
    q1, _, q3 = (1.0, 2.0, 3.0)
    assert _noise.spread(times) == pytest.approx((q3 - q1) / 2.0)
    assert _noise.spread([1.0, 1.5, 2.0]) == pytest.approx(1.0 / 1.5)  # range / median below 5 rounds
    assert _noise.ratio_spread(0.03, 0.04) == pytest.approx(0.05)
    assert _noise.ratio_spread(0.03, None) is None
    with pytest.raises(ValueError, match="at least one timing"):
        _noise.spread([])


def test_busy_machine_is_reported():
    quiet = _noise.MachineState(load_1min=0.2, cores=2, calibration_ms=1.0, calibration_spread=0.02)
    busy = _noise.MachineState(load_1min=6.0, cores=2, calibration_ms=1.0, calibration_spread=0.5)
    assert quiet.busy_reasons() == []
    reasons = busy.busy_reasons()
    assert any("load average 6.0 on 2 cores" in r for r in reasons) and any("calibration" in r for r in reasons)
    state = _noise.machine_state(calls=5)
    assert state.calibration_ms > 0 and state.cores >= 1


# ------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("shape,mode", [((1, 3 * 64, 3, 4, 4), "spatial"), ((2, 3 * 128, 5, 2, 3), "temporal"),
                                        ((1, 3 * 64, 2, 3, 3), "joint"), ((1, 3 * 64, 7), "temporal")])
def test_attention_flops_match_the_reference_count(shape, mode):
    """The formula for the opaque custom op equals FlopCounterMode's count of the reference's matmuls,
    forward and forward+backward, and the analytic 4 N^2 d per problem."""
    x = torch.randn(shape)
    problems, N = _flops._attention_problems(x, mode, 64)
    with torch.no_grad():
        fused = _flops.count_flops(lambda: A.temporal_spatial_attention(x, mode))
        ref = _flops.count_flops(lambda: A.attention_reference(x, mode))
    assert fused == ref == 4 * problems * N * N * 64 > 0
    xg = x.clone().requires_grad_()
    fused_fb = _flops.count_flops(lambda: A.temporal_spatial_attention(xg, mode).sum().backward())
    ref_fb = _flops.count_flops(lambda: A.attention_reference(xg, mode).sum().backward())
    assert fused_fb == ref_fb == 3 * fused


# ------------------------------------------------------------------ peak memory
@pytest.mark.skipif(_memory.why_unavailable("cpu") is not None, reason=f"CPU peak memory: {_memory.why_unavailable('cpu')}")
def test_peak_memory_sees_what_a_call_touches():
    def allocate_64mb():
        t = torch.ones(16 << 20)  # 64 MiB written, then freed
        return float(t[-1])

    def nothing():
        return None

    allocate_64mb()  # warm-up, as the harness does
    peak = _memory.peak_extra_bytes(allocate_64mb, "cpu") / 2**20
    assert 60 <= peak <= 80, peak
    assert _memory.peak_extra_bytes(nothing, "cpu") / 2**20 < 8


# ------------------------------------------------------------------ device-correct timing
class FakeDevice:
    """A device whose work runs only when the host synchronises: a launch returns at once, and
    `synchronize` takes as long as the work queued since the last one."""

    def __init__(self):
        self.pending = 0.0
        self.log: list[str] = []

    def launch(self, seconds: float) -> None:
        self.pending += seconds
        self.log.append("launch")

    def synchronize(self) -> None:
        time.sleep(self.pending)
        self.pending = 0.0
        self.log.append("sync")


NODE = types.SimpleNamespace(name="test_fake[fused]", nodeid="bench/x.py::test_fake[fused]", originalname="test_fake",
                             callspec=types.SimpleNamespace(id="fused", params={"impl": "fused"}))


def _pytest_benchmark_fixture() -> BenchmarkFixture:
    """pytest-benchmark's own fixture with its real timing loop, outside a pytest session."""
    quiet = types.SimpleNamespace(debug=lambda *a, **k: None, info=lambda *a, **k: None)
    return BenchmarkFixture(NODE, disable_gc=False, timer=NameWrapper(time.perf_counter), min_rounds=3,
                            min_time=5e-6, max_time=0.05, precision=None, confidence=None, warmup=False,
                            warmup_iterations=0, calibration_precision=10, add_stats=lambda stats: None,
                            logger=quiet, warner=lambda *a: None, disabled=False, cprofile=False,
                            cprofile_loops=None, cprofile_dump=None)


def _adopted(dev: FakeDevice) -> _fixture.Benchmark:
    device = _fixture.Device("fake", dev.synchronize)
    return _fixture.Benchmark.adopt(_pytest_benchmark_fixture(), device, types.SimpleNamespace(node=NODE),
                                    measure=False)


def test_timing_includes_device_work_launched_in_the_timed_region():
    kernel = 0.03
    dev = FakeDevice()
    bench = _adopted(dev)
    bench.pedantic(lambda: dev.launch(kernel), rounds=3)
    assert min(bench.stats.stats.data) >= kernel
    # Without the harness the same fake kernel "takes" no time: the check above can fail.
    plain = _pytest_benchmark_fixture()
    plain.pedantic(lambda: dev.launch(kernel), rounds=3)
    dev.synchronize()
    assert max(plain.stats.stats.data) < kernel


def test_setup_work_is_finished_before_the_timed_region():
    dev = FakeDevice()
    bench = _adopted(dev)
    bench.pedantic(lambda: dev.launch(0.01), setup=lambda: dev.launch(0.2), rounds=2)
    assert all(0.01 <= t < 0.2 for t in bench.stats.stats.data)
    # One sync after each setup and each timed call: none inside the timed function.
    assert dev.log[:4] == ["launch", "sync", "launch", "sync"]


def test_plain_call_is_synchronised_too():
    dev = FakeDevice()
    bench = _adopted(dev)
    bench(lambda: dev.launch(0.01))
    assert min(bench.stats.stats.data) >= 0.01
    record = bench.record()
    assert (record.backend, record.dtype, record.case, record.flops) == ("fused", "fp32", "test_fake", None)


# ------------------------------------------------------------------ rows, summary, JSON
def _record(case, backend, times, **kw) -> _fixture.CaseRecord:
    fields = dict(nodeid=f"x::{case}[{backend}]", case=case, backend=backend, dtype="fp32", times=times,
                  flops=None, bytes=None, peak_bytes=None, baseline=False, extra={})
    return _fixture.CaseRecord(**{**fields, **kw})


LIMITS = _limits.Limits("cpu", {"cpu": "Test CPU", "cores": 2, "threads": 2, "torch": "x", "torch_blas": "mkl"},
                        {"fp32": 100.0, "bf16": 400.0}, {"cache": 100.0, "dram": 10.0},
                        {"cache": 8 << 20, "dram": 512 << 20})


def test_rows_carry_speedup_spread_limit_and_memory():
    steady = [0.010] * 6
    rows = _summary.build_rows([
        _record("op fwd", "fused", [0.002, 0.002, 0.0021, 0.0019, 0.002, 0.002], flops=10**8, peak_bytes=2**20),
        _record("op fwd", "reference", steady, flops=10**8, peak_bytes=10 * 2**20),
        _record("copy", "fused", [0.001, 0.003, 0.001, 0.002, 0.001], bytes=10**9 // 100),
    ], LIMITS)
    fused, ref, copy = rows
    assert (fused["backend"], ref["backend"]) == ("fused", "reference") and ref["baseline"]
    assert fused["speedup"] == pytest.approx(5.0) and fused["speedup_spread"] is not None
    assert fused["limit_fraction"] == pytest.approx(1e8 / 100e9 / 0.002) and fused["limit_kind"] == "fp32 mm"
    assert fused["peak_mb"] == pytest.approx(1.0) and ref["peak_mb"] == pytest.approx(10.0)
    assert copy["speedup"] is None and copy["noisy"] and copy["limit_kind"] == "cache bw"
    doc = _summary.results_document(rows, LIMITS, None, None, _memory.CPU_METHOD, ["a warning"])
    text = _summary.render_summary(json.loads(json.dumps(doc)))
    assert "Test CPU" in text and "5.00× ±" in text and "baseline" in text and "WARNING: a warning" in text
    assert "1 of 3 timed cases have a spread above" in text


def test_explicit_baseline_and_untimed_rows():
    rows = _summary.build_rows([_record("step", "batched", [0.5] * 5),
                                _record("step", "separate", [1.0] * 5, baseline=True),
                                _record("smoke", "fused", None)], None)
    assert rows[0]["speedup"] == pytest.approx(2.0) and rows[0]["baseline_backend"] == "separate"
    assert rows[2]["median_ms"] is None and rows[2]["limit_fraction"] is None


def test_rows_run_while_the_machine_was_busy_are_marked():
    """A stalled case can be steady (small spread): the calibration loop around it is what tells."""
    rows = _summary.build_rows([_record("op", "fused", [0.024] * 5, extra={"calibration_ms": [0.23, 9.0]}),
                                _record("op", "reference", [0.0004] * 5, extra={"calibration_ms": [0.22, 0.24]})],
                               None, calibrations_ms=[0.23, 0.25])
    assert [r["busy"] for r in rows] == [False, True] and not any(r["noisy"] for r in rows)
    doc = _summary.results_document(rows, None, None, None, "m", [])
    assert "1 of 2 timed rows ran while the machine was busy (marked *)" in _summary.render_summary(doc)
    assert report._ms_cell(rows[1]) == "24.0 ±0% *" and report._ms_cell(rows[0]) == "0.400 ±0%"
    assert "1 run while the machine was busy" in report.render_block("machine", doc)


# ------------------------------------------------------------------ compare
def _doc(rows):
    return {"machine": {"cpu": "Test CPU"}, "rows": [
        {"case": c, "backend": "fused", "dtype": "fp32", "median_ms": ms, "spread": s} for c, ms, s in rows]}


def test_compare_flags_regressions_beyond_noise(tmp_path, capsys):
    old = _doc([("a", 1.0, 0.02), ("b", 1.0, 0.02), ("c", 1.0, 0.25), ("d", 1.0, 0.02)])
    new = _doc([("a", 1.3, 0.02), ("b", 1.03, 0.02), ("c", 1.2, 0.25), ("e", 1.0, 0.02)])
    changes, gone, added = compare.compare(old, new)
    verdict = {c.case: c.verdict for c in changes}
    assert verdict == {"a": "REGRESSION", "b": "within noise", "c": "within noise"}
    assert gone == [("d", "fused", "fp32")] and added == [("e", "fused", "fp32")]
    paths = []
    for name, doc in (("old", old), ("new", new)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(doc))
    assert compare.main([str(p) for p in paths]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert compare.main([str(paths[0]), str(paths[0])]) == 0


# ------------------------------------------------------------------ README and docs/ tables
def test_readme_performance_tables_match_the_committed_results():
    """Every bench block of README.md and docs/*.md (wherever a table lives now) equals its regeneration."""
    results = json.loads((ROOT / "bench" / "results" / "cpu.json").read_text())
    files = report.files_with_blocks()
    names = {name for path in files for name in report.block_names(path.read_text())}
    assert {"machine", "easy_fusion", "attention", "contrastive_loss", "denoiser", "train_step", "runtimes",
            "denoiser_targets", "gpu"} <= names
    assert ROOT / "README.md" in files, "README.md lost its performance table"
    for path in files:
        text = path.read_text()
        assert report.update_readme(text, results) == text, \
            f"{path.relative_to(ROOT)}: tables are stale: run python -m bench.report"
    assert report.main(["--check"]) == 0


def test_report_writes_every_doc_file_with_blocks(tmp_path, monkeypatch, capsys):
    results = _summary.results_document(_summary.build_rows([_record("attention fwd x", "fused", [0.001] * 5),
                                                             _record("attention fwd x", "reference", [0.004] * 5)],
                                                            LIMITS), LIMITS, None, None, "m", [])
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "docs").mkdir()
    block = "<!-- bench:begin attention -->\nold\n<!-- bench:end -->\n"
    for name in ("README.md", "docs/benchmarks.md"):
        (tmp_path / name).write_text(f"{name}\n{block}")
    (tmp_path / "docs" / "other.md").write_text("no blocks\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    results_arg = ["--results", str(tmp_path / "results.json")]
    assert report.main([*results_arg, "--check"]) == 1
    assert "README.md" in capsys.readouterr().err
    assert report.main(results_arg) == 0
    for name in ("README.md", "docs/benchmarks.md"):
        text = (tmp_path / name).read_text()
        assert text.startswith(f"{name}\n<!-- bench:begin attention -->\n| case |") and "old" not in text
    assert (tmp_path / "docs" / "other.md").read_text() == "no blocks\n"
    assert report.main([*results_arg, "--check"]) == 0
    assert report.main([*results_arg, "--docs", str(tmp_path / "docs" / "other.md")]) == 1  # named, no blocks


def test_report_rewrites_blocks_and_rejects_unknown_names():
    results = _summary.results_document(_summary.build_rows([_record("attention fwd x", "fused", [0.001] * 5),
                                                             _record("attention fwd x", "reference", [0.004] * 5)],
                                                            LIMITS), LIMITS, None, None, "m", [])
    text = "intro\n<!-- bench:begin attention -->\nold table\n<!-- bench:end -->\noutro\n"
    new = report.update_readme(text, json.loads(json.dumps(results)))
    assert "old table" not in new and "| attention fwd x | fp32 | 1.000 ±0% | 4.000 ±0% | 4.00 ±0% |" in new
    assert new.startswith("intro\n") and new.endswith("<!-- bench:end -->\noutro\n")
    with pytest.raises(ValueError, match="unknown README block 'nope'"):
        report.update_readme("<!-- bench:begin nope -->\n<!-- bench:end -->", results)


def test_the_machine_line_names_the_cpus_matrix_instructions():
    """A CPU run records which of AVX-512 / VNNI / BF16 / AMX its CPU has (a model name like "Intel(R) Xeon(R)
    Processor" does not say), and the machine line shows them; a results file from before says what it said."""
    flags = _limits.cpu_matrix_flags()
    assert set(flags) <= set(_limits.MATRIX_FLAGS) and _limits.machine_description("cpu")["cpu_flags"] == flags
    machine = {"cpu": "Xeon", "cores": 2, "threads": 2, "torch": "t", "torch_blas": "mkl"}
    assert _summary.describe_machine(machine) == "Xeon, 2 cores, 2 threads, torch t (mkl)"
    line = _summary.describe_machine({**machine, "cpu_flags": ["avx512_bf16", "amx_int8"]})
    assert line == "Xeon (avx512_bf16 amx_int8), 2 cores, 2 threads, torch t (mkl)"
    line = _summary.describe_machine({**machine, "cpu_flags": ["avx512_bf16"], "cpu_id": "family 6 model 207"})
    assert line == "Xeon (family 6 model 207; avx512_bf16), 2 cores, 2 threads, torch t (mkl)"


def test_cpu_id_reads_family_and_model_not_the_model_name(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "model name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n")
    real = Path

    def fake_path(p, *rest):
        return cpuinfo if str(p) == "/proc/cpuinfo" else real(p, *rest)

    monkeypatch.setattr(_limits, "Path", fake_path)
    assert _limits.cpu_id() == "family 25 model 17" and _limits.cpu_model() == "AMD EPYC"
    assert _limits.cpu_matrix_flags() == ["avx512f", "avx512_bf16"]
    cpuinfo.write_text("model name\t: Some CPU\n")
    assert _limits.cpu_id() is None


def test_a_block_at_a_stem_renders_from_that_results_file(tmp_path, monkeypatch):
    """`NAME@STEM` (another machine's run) renders from bench/results/STEM.json, the rest from the main file."""
    def doc(fused_s):
        return _summary.results_document(_summary.build_rows([_record("attention fwd x", "fused", [fused_s] * 5),
                                                              _record("attention fwd x", "reference", [0.004] * 5)],
                                                             LIMITS), LIMITS, None, None, "m", [])
    (tmp_path / "other-cpu.json").write_text(json.dumps(doc(0.002)))
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    text = ("<!-- bench:begin attention -->\n<!-- bench:end -->\n"
            "<!-- bench:begin attention@other-cpu -->\n<!-- bench:end -->\n")
    new = report.update_readme(text, json.loads(json.dumps(doc(0.001))))
    main, other = new.split("<!-- bench:begin attention@other-cpu -->")
    assert "| 1.000 ±0% | 4.000 ±0% | 4.00 ±0% |" in main and "2.000" not in main
    assert "| 2.000 ±0% | 4.000 ±0% | 2.00 ±0% |" in other and "1.000 ±0%" not in other
    assert report.block_names(new) == ["attention", "attention@other-cpu"]
    with pytest.raises(ValueError, match="@missing: no results file .*missing.json"):
        report.update_readme("<!-- bench:begin attention@missing -->\n<!-- bench:end -->", doc(0.001))
    with pytest.raises(ValueError, match="expected NAME@<results file stem>"):
        report.update_readme("<!-- bench:begin attention@../cpu -->\n<!-- bench:end -->", doc(0.001))


def test_denoiser_targets_divide_across_dtype_cases():
    recs = [_record("denoiser fwd m 18f B1 fp32", "fused", [0.2] * 5),
            _record("denoiser fwd m 18f B1 fp32", "reference", [0.3] * 5),
            _record("denoiser fwd m 18f B1 bf16", "fused", [0.1] * 5, dtype="bf16"),
            _record("denoiser fwd m 18f B1 bf16", "reference", [0.12] * 5, dtype="bf16")]
    doc = json.loads(json.dumps(_summary.results_document(_summary.build_rows(recs, LIMITS), LIMITS, None, None,
                                                           "m", [])))
    assert report.render_block("denoiser_targets", doc).splitlines()[2] == "| m 18f B1 | 1.50× ±0% | 1.20× ±0% | 3.00× ±0% |"
    doc["rows"] = [r for r in doc["rows"] if not (r["backend"] == "fused" and r["dtype"] == "bf16")]
    assert report.render_block("denoiser_targets", doc).splitlines()[2] == "| m 18f B1 | 1.50× ±0% | — | — |"


def test_profile_denoiser_groups_ops_and_accounts_for_the_whole_call():
    from bench import profile_denoiser as P

    assert [P.group_of(n) for n in ("aten::mkldnn_convolution", "avfast::easy_fusion", "aten::silu", "aten::add")] \
        == ["convolution", "avfast ops (dispatched)", "normalisation and activations", "other"]
    times = P.profile("tiny", "fp32", None)
    events = [*P.GROUPS, "other"]
    assert times["convolution"] > 0 and times[P.UNATTRIBUTED] >= 0
    # self times do not overlap: together they fit in the profiled call (double counting would not)
    assert sum(times[g] for g in events) <= 1.05 * times["profiled"]


def test_run_record_says_when_how_and_where():
    import datetime

    rec = _limits.run_record("bench.profile_int8", ["--preset", "tiny", "--calls", "2"])
    assert rec["command"] == "python -m bench.profile_int8 --preset tiny --calls 2"
    created = datetime.datetime.fromisoformat(rec["created"])
    assert created.tzinfo is not None and abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 60
    assert rec["machine"] == _limits.machine_description("cpu")
