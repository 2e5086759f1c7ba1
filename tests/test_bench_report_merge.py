"""bench.report --merge (one suite's rerun folded into the results file) and the per-clip table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402


def _row(nodeid: str, case: str, ms: float, **extra) -> dict:
    return {"case": case, "backend": "pipeline", "dtype": "fp32", "median_ms": ms, "spread": 0.05, "rounds": 3,
            "noisy": False, "busy": False, "baseline": False, "speedup": None, "speedup_spread": None,
            "flops": None, "limit_fraction": None, "limit_kind": None, "peak_mb": None, "nodeid": nodeid, **extra}


def _doc(rows: list[dict], created: str, threads: int = 2) -> dict:
    return {"schema": 1, "created": created, "command": f"pytest ({created})",
            "machine": {"device": "cpu", "cpu": "X", "cores": 2, "threads": threads},
            "limits": {"matmul_gflops": {}, "copy_gbps": {}},
            "state": {"start": {"load_1min": 0.5, "cores": 2, "calibration_ms": 0.2}, "end": None},
            "noise_bound": 0.1, "warnings": [], "rows": rows}


CLIP = dict(model="tiny-latent", task="joint", steps=4, sampler="ddim", evaluations=4, sampling_s=0.1,
            decode_s=0.4, mm_diffusion_s=190.0, mm_diffusion_steps=20)


def test_merge_replaces_the_rows_of_the_rerun_files_only():
    full = _doc([_row("bench/bench_model.py::a", "denoiser fwd x", 10.0),
                 _row("bench/bench_per_clip.py::old", "per clip old", 9e3, **CLIP)], "t0")
    rerun = _doc([_row("bench/bench_per_clip.py::new", "per clip tiny-latent joint 4 steps", 500.0, **CLIP),
                  _row("bench/bench_per_clip.py::v2a", "per clip tiny-latent v2a 4 steps", 250.0,
                       **{**CLIP, "task": "v2a"})], "t1", threads=1)
    merged = report.merge(full, rerun)
    assert [r["nodeid"] for r in merged["rows"]] == ["bench/bench_model.py::a", "bench/bench_per_clip.py::new",
                                                     "bench/bench_per_clip.py::v2a"]
    assert merged["rows"][1]["run"] == "t1" and "run" not in merged["rows"][0]
    assert merged["runs"][0]["files"] == ["bench/bench_per_clip.py"] and full["rows"][1]["case"] == "per clip old"
    machine = report.render_block("machine", merged)
    assert "Rerun t1 of `bench/bench_per_clip.py` (2 rows" in machine and "1 threads" in machine
    assert len(report.merge(merged, rerun)["runs"]) == 1  # merging the same file again replaces the record

    table = report.render_block("per_clip", merged).splitlines()
    assert "× faster than MM-Diffusion (190 s, quoted)" in table[0]
    assert table[2] == "| tiny-latent | joint | fp32 | 4 DDIM | 4 | 0.50 ±5% | 0.10 | 0.40 | — | 380× |"
    assert table[3].endswith("| — |") and "| v2a |" in table[3]
    assert len(report.render_block("per_clip_joint", merged).splitlines()) == 3


def test_merge_refuses_another_machines_run():
    """Rows of another CPU (or GPU) model are not comparable with the file's: merge says where they belong."""
    full = _doc([_row("bench/bench_model.py::a", "denoiser fwd x", 10.0)], "t0")
    other = _doc([_row("bench/bench_per_clip.py::new", "per clip x", 500.0, **CLIP)], "t1")
    other["machine"] = {**other["machine"], "cpu": "Y"}
    with pytest.raises(ValueError, match="run is on cpu 'Y', the results on 'X'.*NAME@STEM"):
        report.merge(full, other)
    other["machine"] = {**other["machine"], "cpu": "X"}
    assert len(report.merge(full, other)["rows"]) == 2


def test_merge_refuses_another_cpu_generation_under_the_same_name():
    """"AMD EPYC" names Zen 4 and Zen 5 alike: where both sides recorded family and model, they must agree; a
    results file from before they were recorded is matched by name alone."""
    full = _doc([_row("bench/bench_model.py::a", "denoiser fwd x", 10.0)], "t0")
    other = _doc([_row("bench/bench_per_clip.py::new", "per clip x", 500.0, **CLIP)], "t1")
    other["machine"] = {**other["machine"], "cpu_id": "family 25 model 17"}
    assert len(report.merge(full, other)["rows"]) == 2  # the file does not say: allowed
    full["machine"] = {**full["machine"], "cpu_id": "family 26 model 2"}
    with pytest.raises(ValueError, match="cpu_id 'family 25 model 17', the results on 'family 26 model 2'"):
        report.merge(full, other)
    full["machine"]["cpu_id"] = "family 25 model 17"
    assert len(report.merge(full, other)["rows"]) == 2


def test_merge_through_main_writes_the_results(tmp_path, monkeypatch):
    results, run = tmp_path / "cpu.json", tmp_path / "run.json"
    results.write_text(json.dumps(_doc([_row("bench/bench_model.py::a", "denoiser fwd x", 10.0)], "t0")))
    run.write_text(json.dumps(_doc([_row("bench/bench_per_clip.py::new", "per clip tiny-latent joint 4 steps",
                                         500.0, **CLIP)], "t1")))
    (tmp_path / "README.md").write_text("<!-- bench:begin per_clip_joint -->\n<!-- bench:end -->\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.main(["--results", str(results), "--merge", str(run), "--docs", str(tmp_path / "README.md")]) == 0
    assert len(json.loads(results.read_text())["rows"]) == 2
    assert "| tiny-latent | joint |" in (tmp_path / "README.md").read_text()


def test_per_clip_speed_up_over_the_teacher_is_the_same_runs_ratio():
    teacher = {**CLIP, "model": "tiny-latent teacher", "steps": 25, "sampler": "dpmpp2m", "evaluations": 25}
    run = _doc([_row("bench/bench_per_clip.py::t", "per clip tiny-latent teacher joint 25 steps", 2600.0, **teacher),
                _row("bench/bench_per_clip.py::s", "per clip tiny-latent joint 4 steps", 500.0, **CLIP),
                _row("bench/bench_per_clip.py::v", "per clip tiny-latent v2a 4 steps", 250.0,
                     **{**CLIP, "task": "v2a"})], "t1")
    table = report.render_block("per_clip", run).splitlines()
    assert "× faster than the teacher (25 steps, same run)" in table[0]
    assert table[2].startswith("| tiny-latent teacher | joint |") and "| — |" in table[2]
    assert table[3].startswith("| tiny-latent | joint |") and "| 5.2× |" in table[3]  # 2600 / 500
    assert table[4].startswith("| tiny-latent | v2a |") and "| — | — |" in table[4]  # no v2a teacher row


def test_a_joint_clip_in_passes_is_compared_with_the_teachers_joint_clip():
    teacher = {**CLIP, "model": "tiny-latent teacher", "steps": 25, "sampler": "dpmpp2m", "evaluations": 25}
    run = _doc([_row("bench/bench_per_clip.py::t", "per clip tiny-latent teacher joint 25 steps", 2600.0, **teacher),
                _row("bench/bench_per_clip.py::p", "per clip tiny-latent joint+v2a 4 steps", 1000.0,
                     **{**CLIP, "task": "joint+v2a", "evaluations": 8})], "t1")
    table = report.render_block("per_clip_joint", run).splitlines()
    assert table[3].startswith("| tiny-latent | joint+v2a | fp32 | 4 DDIM | 8 |")
    assert "| 2.6× | 190× |" in table[3]  # 2600 / 1000 against the teacher's joint clip; 190 s / 1 s
