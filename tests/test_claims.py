"""avfast.experiments: the statistics helpers on inputs with known answers, and the claims driver
(fine-tune, evaluate, report) end to end on a micro model with 2 held-out clips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avfast.experiments import stats
from avfast.experiments.stats import bootstrap_ci, paired_test, sign_flip_p_value


def test_bootstrap_ci_of_a_constant_is_the_constant():
    ci = bootstrap_ci([0.25] * 7)
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.25, 0.25, 0.25, 7)


def test_bootstrap_ci_matches_the_normal_interval_on_a_large_sample():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    ci = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)  # 0.19: the interval theory gives for this sample
    assert ci.mean == pytest.approx(x.mean(), abs=1e-12)
    assert ci.low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_sign_flip_p_value_exact_on_known_inputs():
    # d = (1, 2, 3): the 8 sign patterns give |sum| in {6, 4, 2, 0, 0, 2, 4, 6}; only 2 reach 6.
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == 0.25
    assert sign_flip_p_value([0.0, 1.0, 2.0, 3.0]) == 0.25  # a zero difference has no sign to flip
    assert sign_flip_p_value([1.0, -1.0]) == 1.0
    assert sign_flip_p_value([0.0, 0.0]) == 1.0
    assert sign_flip_p_value([1.0] * 10) == pytest.approx(2 / 2 ** 10)


def test_sign_flip_monte_carlo_agrees_with_the_exact_count(monkeypatch):
    d = np.random.default_rng(3).normal(0.4, 1.0, size=12)
    exact = sign_flip_p_value(d)
    monkeypatch.setattr(stats, "EXACT_SIGN_FLIP_MAX_N", 0)
    sampled = sign_flip_p_value(d, resamples=20_000)
    assert 0.01 < exact < 0.9 and sampled == pytest.approx(exact, abs=0.015)


def test_paired_test_on_known_differences():
    a, b = [0.5, 0.7, 0.9, 1.1, 1.3], [0.4, 0.5, 0.6, 0.7, 0.8]  # d = 0.1 .. 0.5, every clip better
    r = paired_test(a, b)
    assert r.mean_difference == pytest.approx(0.3) and (r.wins, r.losses, r.n) == (5, 0, 5)
    assert 0.1 <= r.low <= r.mean_difference <= r.high <= 0.5
    assert r.p_sign_flip == pytest.approx(2 / 32)
    if r.p_wilcoxon is not None:  # scipy installed: the exact signed-rank test, all 5 ranks positive
        assert r.p_wilcoxon == pytest.approx(2 / 32)
    same = paired_test(b, b)
    assert same.mean_difference == 0 and same.p_sign_flip == 1.0 and same.p_wilcoxon is None


@pytest.mark.parametrize("call, message", [
    (lambda: paired_test([1.0, 2.0], [1.0]), "same clips"),
    (lambda: bootstrap_ci([]), "non-empty"),
    (lambda: bootstrap_ci([1.0, float("nan")]), "finite"),
    (lambda: bootstrap_ci([1.0], confidence=95), "confidence"),
])
def test_bad_input_is_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.slow
def test_driver_end_to_end_on_a_micro_model(tmp_path, capsys):
    pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
    pytest.importorskip("librosa", reason="AV-Align and beat tracking need librosa (pip install \"avfast[media]\")")
    pytest.importorskip("matplotlib", reason="the claims plot needs matplotlib")
    import torch

    from _train_micro import MICRO
    from avfast.experiments.claims import main
    from avfast.models import create

    torch.manual_seed(0)
    base = tmp_path / "base"
    create("tiny", **{k: tuple(v) if isinstance(v, list) else v for k, v in MICRO.items()}).save_pretrained(base)
    runs = tmp_path / "runs"
    assert main(["train", "--base", str(base), "--out", str(runs), "--runs", "ncmmd", "cmmd-1e-3", "ncmmd-indep",
                 "--steps", "2", "--batch-size", "2", "--warmup", "0", "--num-clips", "4", "--save-every", "2",
                 "--no-progress"]) == 0
    provenance = json.loads((runs / "cmmd-1e-3" / "finetune.json").read_text())
    assert provenance["overrides"] == {"eta": 1e-3} and provenance["base_weights"] == "model.safetensors"

    curves_json, curves_plot = tmp_path / "finetune.json", tmp_path / "finetune.png"
    assert main(["curves", "--runs", str(runs), "--json", str(curves_json), "--plot", str(curves_plot)]) == 0
    curves = json.loads(curves_json.read_text())
    assert list(curves) == ["ncmmd", "cmmd-1e-3", "ncmmd-indep"] and curves_plot.stat().st_size > 10_000
    assert [r["step"] for r in curves["cmmd-1e-3"]] == sorted({r["step"] for r in curves["cmmd-1e-3"]})
    assert "negative_video" in curves["cmmd-1e-3"][-1] and "negative_video" not in curves["ncmmd"][-1]
    assert main(["curves", "--runs", str(tmp_path / "none")]) == 2

    out, plot = tmp_path / "claims.json", tmp_path / "claims.png"
    args = ["evaluate", "--base", str(base), "--runs", str(runs), "--clips", "2", "--steps", "2", "--batch", "2",
            "--gammas", "1", "1.5", "--json", str(out), "--plot", str(plot), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "not evaluated" in printed and "cmmd-5e-5" in printed  # the run we did not train is named, not hidden
    results = json.loads(out.read_text())
    expected = {"ceiling", "vocoder", "floor", "v2a/clean/base", "v2a/clean/ncmmd", "v2a/clean/cmmd-1e-3",
                "v2a/clean/ncmmd-indep", "v2a/replace/ncmmd", "v2a/replace/cmmd-1e-3",
                "joint/gamma=1/ncmmd-indep", "joint/gamma=1.5/ncmmd-indep"}
    assert set(results["rows"]) == expected
    for key, row in results["rows"].items():
        for metric, scores in row["scores"].items():
            assert len(scores) == 2
            has_reference = row["kind"] in ("vocoder", "floor", "v2a") or metric == "av_align"
            assert all((s is not None and 0.0 <= s <= 1.0) if has_reference else s is None for s in scores), key
    compared = {(t["comparison"], t["metric"]) for t in results["paired"]}
    assert ("v2a clean: cmmd-1e-3 - ncmmd", "hit_100ms") in compared
    assert ("joint: gamma 1.5 - gamma 1", "av_align") in compared
    for metric in ("hit_100ms", "av_align_moving"):  # joint rows have no reference sound and no held-out clip
        assert ("joint: gamma 1.5 - gamma 1", metric) not in compared
    moving = [i for i, k in enumerate(results["event_kinds"]) if "hit" in k.split("+")]
    summary = results["summary"]["v2a/clean/ncmmd"]["av_align_moving"]
    if moving:  # AV-Align over the clips with a hit, the ones optical flow can see
        scored = [results["rows"]["v2a/clean/ncmmd"]["scores"]["av_align"][i] for i in moving]
        assert summary["n"] == len(moving) and summary["mean"] == pytest.approx(np.mean(scored))
    else:
        assert summary is None
    assert plot.stat().st_size > 10_000 and "| v2a clean, cmmd-1e-3 |" in out.with_suffix(".md").read_text()

    before = {k: r["seconds"] for k, r in results["rows"].items()}
    assert main(args) == 0  # same settings and weights: finished rows are kept, not recomputed
    assert {k: r["seconds"] for k, r in json.loads(out.read_text())["rows"].items()} == before
    assert main(["evaluate", "--base", str(base), "--data-seed", "0", "--json", str(out)]) == 2
    assert "held-out" in capsys.readouterr().err


def test_readme_claims_tables_are_the_committed_results():
    """The claims tables (docs/claims.md, and any other doc file with the markers) are generated
    (`claims report --docs`), never edited by hand."""
    from avfast._io import files_with_block
    from avfast.experiments.claims import README_BLOCK, readme_tables

    root = Path(__file__).resolve().parents[1]
    files = files_with_block(README_BLOCK, root)
    assert root / "docs" / "claims.md" in files, "docs/claims.md lost its <!-- claims:begin --> block"
    committed = (root / "bench" / "results" / "claims" / "claims.md").read_text()
    for path in files:
        assert readme_tables(path.read_text()) == committed, \
            f"{path.relative_to(root)}: claims tables are stale: run python -m avfast.experiments.claims report --docs"


def test_report_docs_writes_every_file_with_the_block(tmp_path, monkeypatch):
    from avfast.experiments.claims import doc_targets

    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("no block\n")
    (tmp_path / "docs" / "claims.md").write_text("a\n<!-- claims:begin -->\nold\n<!-- claims:end -->\n")
    assert doc_targets(None, True, tmp_path) == [tmp_path / "docs" / "claims.md"]
    assert doc_targets(str(tmp_path / "docs" / "claims.md"), True, tmp_path) == [tmp_path / "docs" / "claims.md"]
    with pytest.raises(ValueError, match="--readme: the file has no <!-- claims:begin -->"):
        doc_targets(str(tmp_path / "README.md"), False, tmp_path)
    (tmp_path / "docs" / "claims.md").write_text("moved away\n")
    with pytest.raises(ValueError, match="--docs: no <!-- claims:begin -->"):
        doc_targets(None, True, tmp_path)


def test_update_readme_replaces_only_the_block():
    from avfast.experiments.claims import update_readme

    text = "a\n<!-- claims:begin -->\nold\n<!-- claims:end -->\nb\n"
    assert update_readme(text, "new\n") == "a\n<!-- claims:begin -->\nnew\n<!-- claims:end -->\nb\n"
    with pytest.raises(ValueError, match="no <!-- claims:begin -->"):
        update_readme("no block", "new\n")
