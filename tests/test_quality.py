"""The quality report (avfast.experiments.quality) and its frame measures (avfast.metrics.frame_quality) on
constructed cases with known answers, and the command end to end on a micro model with 2 held-out clips."""
from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch

from avfast.experiments.stats import bootstrap_ratio_ci, bootstrap_statistic_ci
from avfast.metrics.frame_quality import (FEATURE_DIM, NOISE_RESIDUAL_FACTOR, clip_residual, frame_distance,
                                          frame_features, frame_residuals, median3x3)

ROOT = Path(__file__).resolve().parents[1]


def _real(start: int, stop: int, size: int = 32, frames: int = 18) -> torch.Tensor:
    """Held-out synthetic clips (seed 2) as the report makes them for the tiny default: [B, 3, F, H, W]."""
    from avfast.models import preset
    from avfast.train.data import SyntheticAVDataset

    data = SyntheticAVDataset(preset("tiny"), num_clips=stop, seed=2, cache=False)
    return torch.stack([data.clip(i).video[:, :frames] for i in range(start, stop)])


def _per_frame(fn, video: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    return fn(frames).reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def _blur(frames: torch.Tensor) -> torch.Tensor:
    k = torch.ones(3, 1, 3, 3) / 9
    return torch.nn.functional.conv2d(torch.nn.functional.pad(frames, (1, 1, 1, 1), mode="replicate"), k, groups=3)


# --- the median residual ---------------------------------------------------------------------------

def test_median3x3_is_the_median_with_replicate_padding():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = median3x3(x)
    assert out[0, 0, 1, 1] == 5.0  # interior: median of 0 1 2 4 5 6 8 9 10
    # corner (0, 0) with replicate padding sees 0 0 1 / 0 0 1 / 4 4 5: median 1
    assert out[0, 0, 0, 0] == 1.0
    assert torch.equal(median3x3(torch.full((2, 3, 5, 5), 0.3)), torch.full((2, 3, 5, 5), 0.3))


def _expected_normal_order_statistic(k: int, n: int = 9) -> float:
    x = np.linspace(-9, 9, 200_001)
    pdf = np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi)
    cdf = 0.5 * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))
    density = n * comb(n - 1, k - 1) * cdf ** (k - 1) * (1 - cdf) ** (n - k) * pdf
    return float(np.trapz(x * density, x) if hasattr(np, "trapz") else np.trapezoid(x * density, x))


def test_noise_residual_factor_is_the_order_statistics_expectation():
    # E|Z_0 - median(Z_0..Z_8)|: Z_0 is each order statistic with probability 1/9, the median's mean is 0
    factor = sum(abs(_expected_normal_order_statistic(k)) for k in range(1, 10)) / 9
    assert factor == pytest.approx(NOISE_RESIDUAL_FACTOR, abs=1e-4)


def test_flat_frames_with_gaussian_noise_score_the_expected_residual():
    g = torch.Generator().manual_seed(0)
    sigma = 0.05
    flat = torch.tensor([-0.4, 0.1, 0.3]).view(3, 1, 1, 1).expand(3, 4, 256, 256)
    noisy = flat + sigma * torch.randn(flat.shape, generator=g)
    # replicate padding changes the expectation at the 1.6 % of pixels on the border: within 1 %
    assert float(clip_residual(noisy)) == pytest.approx(NOISE_RESIDUAL_FACTOR * sigma, rel=0.01)
    assert frame_residuals(noisy).shape == (4, 3)
    assert float(clip_residual(flat)) == 0.0


def test_a_real_clip_scores_ratio_one():
    real = clip_residual(_real(0, 6)).numpy()
    ci = bootstrap_ratio_ci(real, real)
    assert (ci.mean, ci.low, ci.high, ci.n) == (1.0, 1.0, 1.0, 6)


def test_noisy_clips_score_the_ratio_they_should():
    g = torch.Generator().manual_seed(1)
    # flat frames with noise sigma_g against flat frames with noise sigma_r: ratio sigma_g / sigma_r
    flat = torch.zeros(8, 3, 6, 64, 64) + 0.2
    real = clip_residual(flat + 0.01 * torch.randn(flat.shape, generator=g)).numpy()
    noisy = clip_residual(flat + 0.07 * torch.randn(flat.shape, generator=g)).numpy()
    ci = bootstrap_ratio_ci(noisy, real)
    assert ci.mean == pytest.approx(7.0, rel=0.01) and ci.low <= 7.0 <= ci.high
    # real synthetic clips plus noise of sigma 0.1, far above the data's own detail: the noise's c sigma
    clips = _real(0, 6)
    r_real = clip_residual(clips).numpy()
    r_noisy = clip_residual(clips + 0.1 * torch.randn(clips.shape, generator=g)).numpy()
    expected = NOISE_RESIDUAL_FACTOR * 0.1 / r_real.mean()
    assert bootstrap_ratio_ci(r_noisy, r_real).mean == pytest.approx(expected, rel=0.05)
    assert expected > 5


def test_bootstrap_ratio_and_statistic_intervals():
    assert bootstrap_ratio_ci([1.0, 2.0], [0.0, 0.0]) is None
    ci = bootstrap_ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # every clip's ratio is 2: so is every resample's
    assert (ci.mean, ci.low, ci.high) == pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="same clips"):
        bootstrap_ratio_ci([1.0], [1.0, 2.0])
    x = np.arange(10.0)
    med = bootstrap_statistic_ci(lambda idx: float(np.median(x[idx])), 10, resamples=300)
    assert med.mean == 4.5 and med.low < 4.5 < med.high
    # a statistic that every resample with a repeated clip raises (like FD): 0 on the clips themselves
    repeats = lambda idx: float(len(idx) - len(np.unique(idx)))  # noqa: E731
    plain = bootstrap_statistic_ci(repeats, 10, resamples=300)
    assert plain.mean == 0 and plain.low > 0  # the plain interval lies wholly above the estimate
    shifted = bootstrap_statistic_ci(repeats, 10, resamples=300, bias_corrected=True)
    assert shifted.low == 0 <= shifted.mean <= shifted.high < plain.high


# --- the frame feature and FD --------------------------------------------------------------------

def test_frame_features_shape_and_batching():
    clips = _real(0, 3)
    f = frame_features(clips)
    assert f.shape == (3, 17, FEATURE_DIM) and torch.isfinite(f).all()
    assert torch.allclose(frame_features(clips[1]), f[1], atol=1e-6)
    with pytest.raises(ValueError, match="2 frames"):
        frame_features(clips[:, :, :1])


@pytest.fixture(scope="module")
def real_sets():
    """Two disjoint sets of 48 held-out clips: A (the reference) and B (the real-vs-real floor)."""
    a, b = _real(0, 48), _real(48, 96)
    return a, b, frame_features(a).numpy(), frame_features(b).numpy()


def _fd(video, reference_features):
    return frame_distance(frame_features(video).numpy(), reference_features)["fd"]


def test_fd_of_a_set_against_itself_is_zero(real_sets):
    a, _, fa, fb = real_sets
    assert frame_distance(fa, fa)["fd"] == pytest.approx(0.0, abs=1e-6)
    floor = frame_distance(fb, fa)["fd"]
    assert 0 < floor < 2


def test_noise_blur_and_median_raise_fd_above_the_floor(real_sets):
    a, b, fa, _ = real_sets
    g = torch.Generator().manual_seed(0)
    floor = _fd(b, fa)
    noise = _fd((b + 0.02 * torch.randn(b.shape, generator=g)).clamp(-1, 1), fa)
    blur = _fd(_per_frame(_blur, b), fa)
    median = _fd(_per_frame(median3x3, b), fa)
    # A 3x3 median of the data removes only its invisible sensor noise and rounds the balls' corners:
    # nearly nothing one can see, so it sits closest to the floor (1.3x here), well below a blur (7.5x)
    # and sigma-0.02 noise (8.1x).
    assert noise > 5 * floor and blur > 5 * floor and floor < median < blur / 3, (floor, noise, blur, median)
    # the cheat the report must catch: speckled frames cleaned by a median filter have the data's residual
    # (a residual ratio near 1) but not its distribution
    speckled = _per_frame(median3x3, (b + 0.05 * torch.randn(b.shape, generator=g)).clamp(-1, 1))
    ratio = float(clip_residual(speckled).mean() / clip_residual(b).mean())
    assert ratio < 1.5 and _fd(speckled, fa) > 3 * floor  # it fails the FD target (<= 3x the floor)


def test_fd_sees_content_where_the_balls_and_colours_are(real_sets):
    _, b, fa, _ = real_sets
    floor = _fd(b, fa)
    assert _fd(b.flip(-2), fa) > 20 * floor                                      # floor at the top
    # a red cast: hues are drawn at random, so +0.2 red stays half inside the data's colours (1.9x measured)
    assert _fd(b + torch.tensor([0.2, 0.0, 0.0]).view(1, 3, 1, 1, 1), fa) > 1.5 * floor
    assert _fd(b[:, :, :1].expand_as(b).contiguous(), fa) > 20 * floor           # nothing moves


def test_swapped_sounds_lower_av_align():
    pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
    from avfast.metrics import av_align
    from avfast.models import preset
    from avfast.train.data import SyntheticAVDataset

    data = SyntheticAVDataset(preset("tiny"), num_clips=40, seed=2, cache=False)
    clips = [c for c in (data.clip(i) for i in range(40)) if "hit" in c.event_kinds][:6]
    own = [av_align(c.video, c.audio, fps=c.fps, sample_rate=c.sample_rate).score for c in clips]
    swapped = [av_align(c.video, clips[(i + 1) % len(clips)].audio, fps=c.fps, sample_rate=c.sample_rate).score
               for i, c in enumerate(clips)]
    assert np.mean(swapped) < np.mean(own) - 0.2, (own, swapped)


# --- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro_model(tmp_path_factory):
    from _train_micro import MICRO
    from avfast.models import create

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("quality") / "micro"
    create("tiny", **{k: tuple(v) if isinstance(v, list) else v for k, v in MICRO.items()}).save_pretrained(folder)
    return folder


def test_cli_on_a_micro_model_writes_json_table_and_figure(micro_model, tmp_path, capsys):
    pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
    pytest.importorskip("librosa", reason="beat tracking needs librosa (pip install \"avfast[media]\")")
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib")
    from avfast.experiments.quality import JSON_NAME, TASKS, main, markdown

    out = tmp_path / "out"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- quality:begin -->\nold\n<!-- quality:end -->\nrest\n")
    assert main(["--model", str(micro_model), "--clips", "2", "--out", str(out), "--steps", "2", "--batch", "1",
                 "--readme", str(readme), "--no-progress"]) == 0
    results = json.loads((out / JSON_NAME).read_text())
    assert list(results["tasks"]) == list(TASKS) and len(results["real"]["residual"]) == 2
    for task, entry in results["tasks"].items():
        c = entry["per_clip"]
        assert len(c["av_align"]) == 2 and entry["seconds_per_clip"] > 0
        assert len(c["av_align_counts"]) == 2 and all(len(row) == 4 for row in c["av_align_counts"])
        assert results["summary"][task]["av_align_pooled"] is not None
        assert (c["residual"] is None) == (task == "v2a") and (c["hit_100ms"] is None) == (task != "v2a")
        assert (entry["distance"] is None) == (task == "v2a")
    assert results["summary"]["a2v"]["residual_ratio"]["mean"] > 3  # an untrained model draws noise
    table = (out / "quality.md").read_text()
    assert table == markdown(results) and "| a2v |" in table and "| joint |" in table
    assert "AV-Align, events pooled" in table and "real clips' |" in table
    # results written before the event counts existed render as before: no pooled columns, no error
    old = json.loads(json.dumps(results))
    for row in (old["real"], *(e["per_clip"] for e in old["tasks"].values())):
        del row["av_align_counts"]
    old_table = markdown(old)
    assert "events pooled" not in old_table and old_table.count("| a2v |") == 1
    assert len(old_table.splitlines()[0].split("|")) == len(table.splitlines()[0].split("|")) - 2
    assert readme.read_text() == f"intro\n<!-- quality:begin -->\n{table}<!-- quality:end -->\nrest\n"
    from PIL import Image

    with Image.open(out / "quality.png") as im:  # 3 rows x 2 clips of 16 px frames shown x8
        assert im.size[1] > 6 * 16 * 8 and im.size[0] > 8 * 16 * 8
    (out / "quality.md").unlink()
    assert main(["--report-only", "--out", str(out)]) == 0  # the table again from the JSON alone
    assert (out / "quality.md").read_text() == table
    capsys.readouterr()


def test_tasks_subset_and_gamma_are_run_and_recorded(micro_model, tmp_path, capsys):
    pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib")
    from avfast.experiments.quality import JSON_NAME, generate, held_out, main

    out = tmp_path / "out"
    assert main(["--model", str(micro_model), "--clips", "2", "--out", str(out), "--steps", "2", "--batch", "2",
                 "--tasks", "joint", "--gamma", "2", "--no-progress"]) == 0
    results = json.loads((out / JSON_NAME).read_text())
    assert list(results["tasks"]) == ["joint"] and results["settings"]["gamma"] == 2.0
    table = (out / "quality.md").read_text()
    assert "| joint |" in table and "| a2v |" not in table and "γ = 2" in table
    capsys.readouterr()
    clips = held_out(micro_model, 0, 2, data_seed=2)  # γ reaches the sampler: joint clips change with it
    plain = generate(micro_model, "joint", clips, steps=2, sampler="ddim", seed=0)
    adjusted = generate(micro_model, "joint", clips, steps=2, sampler="ddim", seed=0, gamma=2.0)
    assert not torch.equal(plain[0], adjusted[0])


def test_generate_is_one_deterministic_step_per_task(micro_model):
    from avfast.experiments.quality import generate, held_out

    clips = held_out(micro_model, 0, 2, data_seed=2)
    for task in ("v2a", "a2v", "joint"):
        pixels, waves = generate(micro_model, task, clips, steps=2, sampler="dpmpp2m", seed=5)
        again = generate(micro_model, task, clips, steps=2, sampler="dpmpp2m", seed=5)
        assert pixels.shape == clips.pixels.shape and waves.shape == clips.waves.shape
        assert torch.equal(pixels, again[0]) and torch.equal(waves, again[1])  # Griffin-Lim seeded too
        assert torch.equal(pixels, clips.pixels) == (task == "v2a")
        assert torch.equal(waves, clips.waves) == (task == "a2v")
    with pytest.raises(ValueError, match="task must be one of"):
        generate(micro_model, "t2v", clips, steps=2, sampler="dpmpp2m", seed=0)


@pytest.mark.parametrize("args, message", [
    (["--clips", "1"], "--clips must be >= 2"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--data-seed", "0"], "held-out seed"),
    (["--model", "/nonexistent/model"], "not a model folder"),
    (["--sampler", "euler"], "invalid choice"),
    (["--clips", "many"], "invalid int value"),
    (["--report-only", "--out", "/nonexistent/out"], "no results at"),
    (["--gamma", "0"], "--gamma must be a finite number > 0"),
    (["--gamma", "inf"], "--gamma must be a finite number > 0"),
    (["--tasks", "t2v"], "--tasks must name one or more of v2a, a2v, joint"),
    (["--tasks", "joint", "joint"], "--tasks must name one or more"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    from avfast.experiments.quality import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m avfast.experiments.quality: error: ") and message in err
    assert err.count("\n") == 1, err


def test_readme_without_markers_fails_before_the_run(micro_model, tmp_path, capsys):
    from avfast.experiments.quality import main

    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["--model", str(micro_model), "--clips", "2", "--out", str(tmp_path / "o"),
                 "--readme", str(readme)]) == 2
    assert "no <!-- quality:begin -->" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_update_readme_replaces_only_the_block():
    from avfast.experiments.quality import update_readme

    text = "a\n<!-- quality:begin -->\nold\n<!-- quality:end -->\nb\n"
    assert update_readme(text, "new\n") == "a\n<!-- quality:begin -->\nnew\n<!-- quality:end -->\nb\n"
    with pytest.raises(ValueError, match="no <!-- quality:begin -->"):
        update_readme("no block", "new\n")


def test_readme_keeps_the_quality_block():
    from avfast.experiments.quality import readme_table

    assert readme_table((ROOT / "README.md").read_text()) is not None, "README.md lost its <!-- quality:begin --> block"


def test_quality_docs_targets_every_file_with_the_block(tmp_path):
    from avfast.experiments.quality import doc_targets

    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- quality:begin -->\nx\n<!-- quality:end -->\n")
    (tmp_path / "docs" / "a.md").write_text("none\n")
    (tmp_path / "docs" / "b.md").write_text("<!-- quality:begin -->\n<!-- quality:end -->\n")
    assert doc_targets(None, True, tmp_path) == [tmp_path / "README.md", tmp_path / "docs" / "b.md"]
    assert doc_targets(None, False, tmp_path) == []
    with pytest.raises(ValueError, match="--docs: no <!-- quality:begin -->"):
        doc_targets(None, True, tmp_path / "docs")


def test_readme_quality_table_is_the_committed_results():
    """The quality table (README.md, and any doc file with the markers) is generated
    (`quality --report-only --docs`), never edited by hand."""
    from avfast.experiments.quality import DEFAULT_OUT, JSON_NAME, TABLE_NAME, markdown, readme_table

    results_file = ROOT / DEFAULT_OUT / JSON_NAME
    if not results_file.is_file():
        pytest.skip(f"no committed quality results yet ({DEFAULT_OUT}/{JSON_NAME}): the README table is generated "
                    f"from them once `python -m avfast.experiments.quality --clips 100 --docs` has run")
    table = markdown(json.loads(results_file.read_text()))
    assert (ROOT / DEFAULT_OUT / TABLE_NAME).read_text() == table, \
        f"{DEFAULT_OUT}/{TABLE_NAME} is stale: run python -m avfast.experiments.quality --report-only"
    from avfast._io import files_with_block
    from avfast.experiments.quality import README_BLOCK

    files = files_with_block(README_BLOCK, ROOT)
    assert ROOT / "README.md" in files, "README.md has no <!-- quality:begin --> block for the committed quality results"
    for path in files:
        assert readme_table(path.read_text()) == table, (
            f"{path.relative_to(ROOT)}: quality table is stale: run python -m avfast.experiments.quality "
            "--report-only --docs")


def test_compare_rows_of_the_same_clips(micro_model, tmp_path, capsys):
    pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
    pytest.importorskip("librosa", reason="beat tracking needs librosa (pip install \"avfast[media]\")")
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib")
    from avfast.experiments import compare
    from avfast.experiments.quality import main

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    base = ["--model", str(micro_model), "--steps", "1", "--batch", "2", "--no-progress"]
    assert main(base + ["--clips", "2", "--out", str(a)]) == 0
    assert main(base + ["--clips", "2", "--out", str(b), "--steps", "2"]) == 0
    assert main(base + ["--clips", "3", "--out", str(c)]) == 0
    text = compare.table([("one", compare.load(a)), ("two", compare.load(b))])
    lines = [line for line in text.splitlines() if line.startswith("| one") or line.startswith("| two")]
    assert len(lines) == 2 and "| dpmpp2m 1 |" in lines[0] and "| dpmpp2m 2 |" in lines[1], lines
    assert lines[0].endswith("| 1.0x |")
    with pytest.raises(ValueError, match="different held-out clips"):
        compare.table([("one", compare.load(a)), ("three", compare.load(c))])
    doc = tmp_path / "doc.md"
    doc.write_text("x\n<!-- compare:distill:begin -->\nold\n<!-- compare:distill:end -->\n")
    assert compare.main([f"one={a}", f"two={b}", "--readme", str(doc)]) == 0
    assert compare.block_text(doc, "distill") == text
    assert compare.main(["nolabel"]) == 2 and "LABEL=FOLDER" in capsys.readouterr().err


def test_docs_distillation_table_is_the_committed_results():
    from pathlib import Path

    from avfast.experiments import compare

    root = Path(__file__).resolve().parents[1]
    rows_file = root / "bench" / "results" / "distill" / "compare.json"
    if not rows_file.is_file():
        pytest.skip(f"no committed distillation comparison ({rows_file})")
    rows = json.loads(rows_file.read_text())["rows"]
    text = compare.table([(label, compare.load(root / folder)) for label, folder in rows])
    assert compare.block_text(root / "docs" / "training.md", "distill") == text
    assert (root / "bench" / "results" / "distill" / "compare.md").read_text() == text
