"""Training clips cut from longer clips (`crop_prob`): windows with events up to their edges, as the
windows of a long clip have (docs/long-clips.md)."""
import pytest
import torch

from avfast.models.config import ModelConfig
from avfast.train.config import TrainConfig
from avfast.train.data import CROP_LENGTHS, SyntheticAVDataset

CFG = ModelConfig(frames=18, height=32, width=32, fps=10.0, sample_rate=16000, audio_length=112, video_space="pixels")
N = 48


def test_crop_prob_zero_keeps_the_plain_clips():
    plain, zero = SyntheticAVDataset(CFG, N, seed=3, cache=False), SyntheticAVDataset(CFG, N, 3, False, crop_prob=0.0)
    for i in range(0, N, 7):
        a, b = plain.clip(i), zero.clip(i)
        assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)


def test_crop_prob_sets_the_share_and_leaves_the_other_clips_alone():
    plain = SyntheticAVDataset(CFG, N, seed=3, cache=False)
    half = SyntheticAVDataset(CFG, N, seed=3, cache=False, crop_prob=0.5)
    changed = [i for i in range(N) if not torch.equal(plain.clip(i).video, half.clip(i).video)]
    assert 0.25 * N < len(changed) < 0.75 * N, f"{len(changed)} of {N} clips cut at crop_prob 0.5"


def test_crops_have_the_models_length_and_events_up_to_the_edges():
    data = SyntheticAVDataset(CFG, N, seed=3, cache=False, crop_prob=1.0)
    frames, edge, counts = CFG.frames, 0, []
    for i in range(N):
        clip = data.clip(i)
        assert tuple(clip.video.shape) == (3, frames, 32, 32)
        assert clip.audio.shape == (round(frames / CFG.fps * CFG.sample_rate),)
        f = [round(t * CFG.fps) for t in clip.event_times]
        assert all(abs(t * CFG.fps - k) < 1e-6 for t, k in zip(clip.event_times, f)), clip.event_times
        assert all(0 <= k < frames for k in f) and len(clip.event_kinds) == len(f)
        edge += any(k < 3 or k >= frames - 3 for k in f)
        counts.append(len(f))
    # plain clips never have an event in the first or last 3 frames; cut ones often do
    assert edge >= N // 5, f"only {edge} of {N} cut clips have an event near an edge"
    assert max(counts) > 3 or 0 in counts, "cuts should see more (or fewer) events than a plain clip's 1-3"


def test_a_crops_sound_follows_its_events():
    """Each audio event of a cut clip is an onset of its waveform (the cut keeps sound and picture together)."""
    data = SyntheticAVDataset(CFG, N, seed=5, cache=False, crop_prob=1.0)
    hop = 160  # 10 ms
    checked = 0
    for i in range(N):
        clip = data.clip(i)
        energy = clip.audio[: clip.audio.shape[0] // hop * hop].reshape(-1, hop).square().mean(1)
        quiet = energy.median()
        for t in clip.audio_event_times:
            k = int(t * CFG.sample_rate) // hop
            if k + 2 < energy.shape[0]:
                assert energy[k:k + 2].max() > 20 * quiet + 1e-6, f"clip {i}: no onset at {t:.2f} s"
                checked += 1
    assert checked >= N, f"only {checked} events checked"


def test_crops_are_deterministic_by_index():
    a = SyntheticAVDataset(CFG, N, seed=4, cache=False, crop_prob=1.0)
    b = SyntheticAVDataset(CFG, N, seed=4, cache=False, crop_prob=1.0)
    assert torch.equal(a.clip(11).video, b.clip(11).video) and torch.equal(a.clip(11).audio, b.clip(11).audio)
    assert CROP_LENGTHS >= 2


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_crop_prob_is_named(bad, tmp_path):
    with pytest.raises(ValueError, match="crop_prob"):
        SyntheticAVDataset(CFG, 4, crop_prob=bad)
    with pytest.raises(ValueError, match="crop_prob"):
        TrainConfig(out=str(tmp_path), crop_prob=bad)


def test_distillation_passes_crop_prob_to_the_loops_data(tmp_path):
    from avfast.distill.config import DistillConfig
    from avfast.distill.run import train_config
    from avfast.train.loop import make_dataset

    dcfg = DistillConfig(out=str(tmp_path), teacher=str(tmp_path), steps=4, start_steps=16, crop_prob=0.25)
    cfg = train_config(dcfg, autoencoder="")
    assert cfg.crop_prob == 0.25
    assert make_dataset(cfg, CFG).crop_prob == 0.25
    with pytest.raises(ValueError, match="crop_prob"):
        DistillConfig(out=str(tmp_path), teacher=str(tmp_path), crop_prob=-1.0)


def test_persistent_crops_are_the_crops_of_before():
    default = SyntheticAVDataset(CFG, N, seed=3, cache=False, crop_prob=1.0)
    named = SyntheticAVDataset(CFG, N, seed=3, cache=False, crop_prob=1.0, crop_content="persistent")
    for i in range(0, N, 5):
        assert torch.equal(default.clip(i).video, named.clip(i).video)
        assert torch.equal(default.clip(i).audio, named.clip(i).audio)


def test_scenes_crops_show_balls_of_hits_outside_the_window():
    """Cut from a scenes clip (a ball only between the flashes around its hit), a window can show a ball that
    falls after it, or none for a hit before it; cut from a persistent clip, every ball of a hit in the window
    is in view from the window's first frame."""
    frames, ahead, late_start = CFG.frames, 0, 0
    scenes = SyntheticAVDataset(CFG, N, seed=3, cache=False, crop_prob=1.0, crop_content="scenes")
    persistent = SyntheticAVDataset(CFG, N, seed=3, cache=False, crop_prob=1.0)
    for i in range(N):
        clip = scenes.clip(i)
        hits = [round(t * CFG.fps) for t, k in zip(clip.event_times, clip.event_kinds) if k == "hit"]
        assert all(0 <= lo <= hi < frames for lo, hi in clip.ball_frames), clip.ball_frames
        # balls in view that fall after the window: more balls than hits still to come in it
        ahead += sum(1 for lo, hi in clip.ball_frames if hi == frames - 1) > sum(1 for h in hits if h < frames)
        late_start += any(lo > 0 for lo, _ in clip.ball_frames)
        assert all(lo == 0 for lo, _ in persistent.clip(i).ball_frames)
    assert ahead >= N // 10, f"only {ahead} of {N} scenes crops show a ball whose hit comes after the window"
    assert late_start >= N // 5, f"only {late_start} of {N} scenes crops have a ball appear inside the window"


def test_bad_crop_content_is_named(tmp_path):
    from avfast.distill.config import DistillConfig

    with pytest.raises(ValueError, match="crop_content.*scenes.*'cut'"):
        SyntheticAVDataset(CFG, 4, crop_prob=0.5, crop_content="cut")
    with pytest.raises(ValueError, match="crop_content"):
        TrainConfig(out=str(tmp_path), crop_content="cut")
    with pytest.raises(ValueError, match="crop_content"):
        DistillConfig(out=str(tmp_path), teacher=str(tmp_path), crop_content="cut")


def test_training_and_distillation_pass_crop_content_to_the_data(tmp_path):
    from avfast.distill.config import DistillConfig
    from avfast.distill.run import train_config
    from avfast.train.loop import make_dataset

    assert make_dataset(TrainConfig(out=str(tmp_path), crop_content="scenes"), CFG).crop_content == "scenes"
    dcfg = DistillConfig(out=str(tmp_path), teacher=str(tmp_path), steps=4, start_steps=16, crop_content="scenes")
    assert make_dataset(train_config(dcfg, autoencoder=""), CFG).crop_content == "scenes"
