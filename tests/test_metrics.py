import numpy as np
import pytest
import torch

from avfast.data.synthetic import click_track, make_clip
from avfast.metrics import (av_align, av_align_from_events, beat_hit_rate, frechet_distance,
                            frechet_distance_from_stats, get_extractor, hit_rate, kernel_distance,
                            mmd2_unbiased, per_sample_frechet_distance, per_sample_kernel_distance,
                            register_extractor, available_extractors)


# ---- AV-Align ----------------------------------------------------------------------------------

def test_av_align_formula_is_iou_of_precision_and_recall():
    # onsets 0.1 and 0.5 have a peak within 1/fps, 0.9 has not: p = 2/3; both peaks matched: r = 1.
    score, p, r = av_align_from_events([0.1, 0.5, 0.9], [0.12, 0.52], fps=10)
    assert (p, r) == pytest.approx((2 / 3, 1.0))
    assert score == pytest.approx((2 / 3) / (2 / 3 + 1 - 2 / 3))
    # Many onsets around one peak: the official c/(|A|+|V|-c) would be 3/(3+1-3) = 3 > 1; ours is 1.
    assert av_align_from_events([0.49, 0.5, 0.51], [0.5], fps=10)[0] == pytest.approx(1.0)
    assert av_align_from_events([], [0.5], fps=10)[0] == 0.0


def test_pooled_av_align_scores_the_events_of_many_clips_together():
    from avfast.metrics import event_counts, pooled_av_align

    # clip 1: 1 of 2 onsets matched, its 1 peak matched; clip 2: one onset, no peak (scores 0 on its own)
    a = event_counts([0.1, 0.9], [0.12], fps=10)
    b = event_counts([0.5], [], fps=10)
    assert a == (1, 2, 1, 1) and b == (0, 1, 0, 0)
    assert av_align_from_events([0.1, 0.9], [0.12], fps=10)[0] == pytest.approx(0.5)
    # pooled: p = 1/3, r = 1/1 -> 1/3; the mean of per-clip scores would say (0.5 + 0) / 2 = 0.25
    assert pooled_av_align([a, b]) == pytest.approx((1 / 3) / (1 / 3 + 1 - 1 / 3))
    # one clip pooled alone is its own score; a clip cut in two pooled back is the whole clip's score
    assert pooled_av_align([a]) == pytest.approx(0.5)
    onsets, peaks = [0.1, 0.5, 1.1, 1.5, 1.9], [0.1, 0.7, 1.1, 1.9]
    whole = av_align_from_events(onsets, peaks, fps=10)[0]
    halves = [event_counts([t for t in onsets if t < 1], [t for t in peaks if t < 1], fps=10),
              event_counts([t for t in onsets if t >= 1], [t for t in peaks if t >= 1], fps=10)]
    assert pooled_av_align(halves) == pytest.approx(whole) and whole not in (0.0, 1.0)
    assert pooled_av_align([(0, 0, 0, 0)]) == 0.0


def test_two_set_bootstrap_resamples_each_set_on_its_own():
    from avfast.experiments.stats import bootstrap_two_sets_ci

    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0])   # b has no spread: a's alone
    ci = bootstrap_two_sets_ci(lambda i, j: a[i].mean() / b[j].mean(), a.size, b.size, resamples=500)
    assert ci.mean == pytest.approx(1.25) and 0.5 <= ci.low < 1.25 < ci.high <= 2.0
    zero = np.array([0.0, 1.0])   # resamples whose denominator is 0 are left out, not a nan interval
    ci = bootstrap_two_sets_ci(lambda i, j: a[i].mean() / zero[j].mean(), a.size, zero.size, resamples=200)
    assert np.isfinite(ci.low) and np.isfinite(ci.high)


def _mean_av_align(offset, seeds=(0, 1)):
    return np.mean([av_align(c.video, c.audio).score for c in
                    (make_clip(duration=4.0, n_events=4, audio_offset=offset, generator=s) for s in seeds)])


def test_av_align_is_high_when_synced_and_falls_with_offset():
    pytest.importorskip("cv2", reason="opencv (avfast[media]) computes the optical flow")
    synced = _mean_av_align(0.0)
    assert synced >= 0.9
    assert _mean_av_align(0.05) >= 0.9  # within one 100 ms video frame still counts as a match
    assert _mean_av_align(0.2) < 0.3 and _mean_av_align(0.4) < 0.3


def test_av_align_peaks_sit_on_impact_frames():
    pytest.importorskip("cv2", reason="opencv (avfast[media]) computes the optical flow")
    clip = make_clip(duration=4.0, n_events=4, generator=5)
    result = av_align(clip.video, clip.audio)
    assert result.video_peaks == pytest.approx(clip.event_times)
    assert result.audio_onsets == pytest.approx(clip.audio_event_times, abs=0.02)


# ---- beats ---------------------------------------------------------------------------------------

def test_hit_rate_counts_reference_beats_within_tolerance():
    assert hit_rate([0.0, 0.55, 1.3], [0.0, 0.5, 1.0, 1.5], 0.1) == pytest.approx(2 / 4)
    assert hit_rate([0.0, 0.55, 1.3], [0.0, 0.5, 1.0, 1.5], 0.5) == pytest.approx(1.0)
    assert hit_rate([], [0.5], 0.1) == 0.0


def test_beat_hit_rate_on_click_tracks():
    pytest.importorskip("librosa", reason="librosa (avfast[media]) provides the beat tracker")
    ref, _ = click_track(120, 8.0, generator=0)
    same, _ = click_track(120, 8.0, generator=1)
    shifted, _ = click_track(120, 8.0, phase=0.25, generator=1)  # exactly between the beats
    r = beat_hit_rate(same, ref)
    assert r.hit_rates[0.1] >= 0.9 and r.hit_rates[0.5] >= 0.9
    assert np.median(np.diff(r.reference_beats)) == pytest.approx(0.5, abs=0.03)  # 120 bpm found
    s = beat_hit_rate(shifted, ref)
    assert s.hit_rates[0.1] <= 0.1 and s.hit_rates[0.5] >= 0.9


# ---- Fréchet distance and KID ---------------------------------------------------------------------

def test_frechet_distance_is_zero_for_identical_sets():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.from_numpy(x), x + 1.0) == pytest.approx(16.0, rel=1e-6)  # mean shift only


def test_frechet_distance_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(1)
    d = 4
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.5 * np.eye(d), b @ b.T + 0.5 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Closed form via an independent route: eigenvalues of S1 S2 are real and >= 0.
    closed = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-9)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.02)
    # Diagonal case: |mu1-mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2.
    v1, v2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    assert frechet_distance_from_stats([0, 0], np.diag(v1), [1, 1], np.diag(v2)) == pytest.approx(2 + 4 + 1)


def test_unbiased_kid_is_zero_on_average_for_one_distribution():
    rng = np.random.default_rng(2)
    values = [mmd2_unbiased(rng.normal(size=(50, 8)), rng.normal(size=(50, 8))) for _ in range(200)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
    # The biased (V-statistic) estimator would be clearly positive here; ours is not:
    far = kernel_distance(rng.normal(size=(400, 8)), rng.normal(1.0, 1.0, size=(400, 8)), n_subsets=10)
    near = kernel_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), n_subsets=10)
    assert abs(near.mean) < 0.02 < far.mean


def test_per_sample_scores_rank_the_outlier_last():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(2000, 4))
    samples = [rng.normal(size=(64, 4)), rng.normal(size=(64, 4)), rng.normal(2.0, 1.0, size=(64, 4))]
    fd = per_sample_frechet_distance(samples, ref)
    kid = per_sample_kernel_distance(samples, ref)
    assert len(fd) == 3 and np.argmax(fd) == 2 and np.argmax(kid) == 2


def test_distance_inputs_are_validated():
    with pytest.raises(ValueError, match="embedding sizes differ"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        kernel_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


# ---- extractors -----------------------------------------------------------------------------------

def test_extractor_registry():
    assert {"logmel", "thumbnails", "onnx"} <= set(available_extractors())
    assert get_extractor("logmel")(torch.randn(28_800)).shape == (112, 80)
    assert get_extractor("thumbnails")(torch.zeros(3, 5, 64, 64)).shape == (5, 192)
    with pytest.raises(KeyError, match="available: .*logmel"):
        get_extractor("clap")
    with pytest.raises(FileNotFoundError, match="local .onnx"):
        get_extractor("onnx", path="https://example.com/model.onnx")

    class Energy:
        name, modality = "energy", "audio"

        def __init__(self, path=None):
            pass

        def __call__(self, clip):
            return clip.reshape(-1, 100).pow(2).mean(dim=1, keepdim=True)

    register_extractor("energy", Energy)
    assert get_extractor("energy")(torch.ones(1000)).shape == (10, 1)


def test_onnx_extractor_runs_a_local_model(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx builds the test model")
    pytest.importorskip("onnxruntime", reason="onnxruntime runs ONNX extractors")
    from onnx import TensorProto, helper
    # y = reshape(x, [-1, 4]) @ W : a linear frame embedding of a waveform.
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["frames"]), helper.make_node("MatMul", ["frames", "w"], ["y"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 4]),
         helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w.flatten().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "lin.onnx"))
    ext = get_extractor("onnx", path=str(tmp_path / "lin.onnx"), modality="audio")
    x = torch.randn(16)
    torch.testing.assert_close(ext(x), x.reshape(-1, 4) @ torch.from_numpy(w))
