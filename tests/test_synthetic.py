import pytest
import torch

from avfast.data.synthetic import click_track, make_batch, make_clip


def test_layout_range_and_rates():
    clip = make_clip(duration=1.8, size=64, n_events=2, generator=0)
    assert clip.video.shape == (3, 18, 64, 64) and clip.audio.shape == (28_800,)
    assert clip.video.min() >= -1 and clip.video.max() <= 1 and clip.audio.abs().max() <= 1
    assert clip.fps == 10 and clip.sample_rate == 16_000
    assert all(abs(t * 10 - round(t * 10)) < 1e-9 for t in clip.event_times)  # on the frame grid


def test_deterministic_under_seed_and_generator():
    a, b = make_clip(generator=3), make_clip(generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio) and a.event_times == b.event_times
    c = make_clip(generator=4)
    assert not torch.equal(a.video, c.video)


def test_audio_events_follow_the_offset():
    clip = make_clip(duration=3.0, n_events=3, audio_offset=0.25, generator=1)
    assert clip.audio_event_times == pytest.approx([t + 0.25 for t in clip.event_times])
    for t in clip.audio_event_times:  # a loud sound starts at each audio event, silence just before
        s = int(round(t * 16_000))
        assert clip.audio[s:s + 160].abs().max() > 0.2 > clip.audio[s - 400:s - 80].abs().max()


def test_ball_stops_at_the_hit_frame_and_flash_brightens():
    clip = make_clip(duration=2.0, n_events=1, kinds="hit", noise_level=0.0, generator=2)
    k = round(clip.event_times[0] * 10)
    diffs = (clip.video[:, 1:] - clip.video[:, :-1]).abs().sum(dim=(0, 2, 3))
    assert diffs[k - 1] > 0 and diffs[k:].max() == 0  # moves into frame k, still afterwards
    flash = make_clip(duration=2.0, n_events=1, kinds="flash", noise_level=0.0, generator=2)
    k = round(flash.event_times[0] * 10)
    assert flash.video[:, k].mean() > flash.video[:, k - 1].mean() + 0.3


def test_batch_and_errors():
    video, audio, times = make_batch(2, generator=0, size=32)
    assert video.shape == (2, 3, 18, 32, 32) and audio.shape == (2, 28_800) and len(times) == 2
    with pytest.raises(ValueError, match="n_events"):
        make_clip(duration=1.0, n_events=5)
    with pytest.raises(ValueError, match="kinds"):
        make_clip(kinds="boom")


def test_click_track_times():
    audio, times = click_track(120, 2.0)
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert audio.shape == (32_000,) and audio[8000:8050].abs().max() > 0.3
