"""The trained default model shipped in the package: a distilled student (what the demo uses) and the
teacher it was distilled from, both latent models over the shipped frame codec.

- both load, with the configs their presets and the distillation say;
- the teacher denoises held-out clips far better than untrained weights;
- (slow) the default meets the quality targets of issue 19 on held-out clips, through the same
  measures as `python -m avfast.experiments.quality`: frames as clean as the data's, AV-Align near the
  real clips', a frame distribution near the data's.

Held-out clips are synthetic seed 3 (the models trained on seed 0; the demo's bundled clips are seed
1, the quality report's and claims' evaluation set seed 2)."""
import pytest
import torch

from avfast.demo import DEMO_SOUND
from avfast.diffusion import CosineSchedule, q_sample, x0_from_v
from avfast.models import DEFAULT_DIR, create, default, default_folder, preset
from avfast.train.data import SyntheticAVDataset

HELD_OUT_SEED = 3
N_CLIPS = 8
# Measured when this default shipped (teacher, x0 error on 8 clips at t = 100 / 300 / 600, both
# modalities): see X0_MEASURED; untrained weights are > 3x worse at every t.
X0_ERROR_RATIO = 0.3


@pytest.fixture(scope="module")
def student():
    return default()


@pytest.fixture(scope="module")
def teacher():
    return default("teacher")


def _autoencoder(folder):
    from avfast.data.frame_codec import load_autoencoder

    return load_autoencoder(folder / "autoencoder")


def test_default_and_teacher_ship_with_the_package_and_load(student, teacher):
    for folder in (DEFAULT_DIR, default_folder("teacher")):
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        assert (folder / "autoencoder" / "model.safetensors").is_file()
    base = preset("tiny-latent")
    # both were trained with clean conditions (--clean-prob 0.3) and say so: v2a / a2v pass them clean by default
    assert teacher.config.condition_mode == student.config.condition_mode == "clean"
    assert teacher.config.replace(condition_mode="replace", version=1) == base and not teacher.training
    assert student.config.replace(distilled_steps=0, distilled_sampler="", distilled_gamma=1.0, joint_refine=(),
                                  condition_mode="replace", sampling_gamma=None, long_window=0, version=1) == base
    # distilled at γ = 1; samples at γ = 0.05, chosen on validation clips (data seed 5, docs/sampling.md)
    assert student.config.distilled_gamma == 1.0 and student.config.sampling_gamma == 0.05
    assert student.config.distilled_steps == 4 and student.config.distilled_sampler == "ddim"
    assert student.config.joint_refine == ("v2a",)  # joint: the joint pass, then the sound redrawn for its video
    # long clips in windows of 36 frames, two of its own (held-out long clips, docs/long-clips.md)
    assert student.config.long_window == 36 and teacher.config.long_window == 0
    codec = _autoencoder(DEFAULT_DIR)
    assert codec.downsample * base.height == 32 and codec.latent_channels == base.video_channels
    with pytest.raises(ValueError, match="student, teacher"):
        default("nope")


def test_the_default_samples_at_its_distilled_step_count():
    from avfast.pipeline import Pipeline

    clip = Pipeline.from_pretrained("default", progress=False)("joint", seed=0)
    assert clip.steps == 4 and clip.sampler == "ddim" and clip.calls == 2 * 4  # the joint pass and its v2a pass
    assert clip.pixels.shape == (1, 3, 18, 32, 32) and torch.isfinite(clip.waveform).all()


def test_the_defaults_conditions_go_in_clean_unless_a_call_says_otherwise():
    """The shipped default was trained with clean conditions and measured with them (a2v AV-Align over the
    real clips' 0.90 clean, 0.31 forward-noised: bench/results/quality, docs/sampling.md), so a v2a / a2v
    call without condition_mode passes the condition clean."""
    from avfast.pipeline import Pipeline

    pipe = Pipeline.from_pretrained("default", progress=False)
    sound = pipe.read_audio(DEMO_SOUND)
    own = pipe("a2v", audio=sound, seed=0)
    assert torch.equal(own.pixels, pipe("a2v", audio=sound, seed=0, condition_mode="clean").pixels)
    assert not torch.allclose(own.pixels, pipe("a2v", audio=sound, seed=0, condition_mode="replace").pixels)


def x0_error(model, codec, t: int) -> float:
    """Mean squared error of the model's x0 estimate (both modalities, model space) on held-out clips at t."""
    data = SyntheticAVDataset(model.config, N_CLIPS, seed=HELD_OUT_SEED, autoencoder=codec)
    v0, a0 = data.batch(torch.arange(N_CLIPS))
    s = CosineSchedule(model.config.num_train_steps)
    g = torch.Generator().manual_seed(0)
    tt = torch.full((N_CLIPS,), float(t))
    v_t = q_sample(v0, tt, torch.randn(v0.shape, generator=g), s)
    a_t = q_sample(a0, tt, torch.randn(a0.shape, generator=g), s)
    with torch.no_grad():
        pv, pa = model(v_t, a_t, tt, tt)
    return float(((x0_from_v(v_t, pv, tt, s) - v0).square().mean() + (x0_from_v(a_t, pa, tt, s) - a0).square().mean()) / 2)


@pytest.mark.parametrize("t", [100, 300, 600])
def test_teacher_denoises_held_out_clips_far_better_than_untrained_weights(teacher, t):
    codec = _autoencoder(default_folder("teacher"))
    torch.manual_seed(0)
    fresh = create("tiny-latent").eval()
    ours, untrained = x0_error(teacher, codec, t), x0_error(fresh, codec, t)
    assert ours < X0_ERROR_RATIO * untrained, (t, ours, untrained)


# Issue 19's targets, checked on 16 held-out clips (seed 3) through the quality report's own measures, as the
# default samples (4 steps at its sampling γ = 0.05; joint in two passes, joint then v2a: config joint_refine).
# Measured on these clips (mean [95 % CI]): residual ratio a2v 0.94 [0.76, 1.15], joint 1.10 [0.78, 1.47];
# AV-Align over the real clips' a2v 1.25 [0.93, 1.94], joint 1.30 [0.86, 2.34]; FD a2v 0.26, joint 0.58 with the
# real-vs-real floor 2.17 (16 clips make a noisy floor). At γ = 1, when this default first shipped: residual
# 0.86 / 1.02, AV-Align a2v 1.11 [0.84, 1.58], joint 1.19 [0.77, 2.09] (0.89 in one pass), FD 0.32 / 0.63. The
# AV-Align thresholds sit just below the CIs' lower ends (room for another CPU's rounding); the pixel-space
# default before the latent one scored residual ratio ~25, AV-Align ratios ~0.5 and FD ~400x the floor, and
# fails them.
TARGETS = {"residual_ratio": 1.5, "a2v_av_align_ratio": 0.75, "joint_av_align_ratio": 0.75, "fd_over_floor": 3.0}


@pytest.mark.slow
def test_the_default_meets_the_quality_targets_on_held_out_clips(tmp_path):
    pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
    pytest.importorskip("librosa", reason="beat tracking needs librosa (pip install \"avfast[media]\")")
    pytest.importorskip("matplotlib", reason="the report's figure needs matplotlib")
    from avfast.experiments.quality import QualitySettings, run_quality

    results = run_quality(QualitySettings(model="default", clips=16, data_seed=HELD_OUT_SEED, progress=False),
                          tmp_path)
    s = results["summary"]
    floor = s["real"]["fd"]["mean"]
    got = {"residual_ratio": max(s[t]["residual_ratio"]["mean"] for t in ("a2v", "joint")),
           "a2v_av_align_ratio": s["a2v"]["av_align_ratio"]["mean"],
           "joint_av_align_ratio": s["joint"]["av_align_ratio"]["mean"],
           "fd_over_floor": max(s[t]["fd"]["mean"] for t in ("a2v", "joint")) / floor}
    assert results["settings"]["steps"] == 4  # the distilled count, not 25
    assert results["settings"]["refine"] == ("v2a",)  # the default's joint passes, recorded as resolved
    assert results["settings"]["gamma"] == 0.05        # and its sampling γ (config sampling_gamma)
    assert got["residual_ratio"] <= TARGETS["residual_ratio"], got
    assert got["a2v_av_align_ratio"] >= TARGETS["a2v_av_align_ratio"], got
    assert got["joint_av_align_ratio"] >= TARGETS["joint_av_align_ratio"], got
    assert got["fd_over_floor"] <= TARGETS["fd_over_floor"], got
