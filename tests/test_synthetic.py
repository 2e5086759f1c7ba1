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


# --- transient balls: scenes cut by flashes (long clips whose windows look like training clips) -----------

def test_persistent_clips_are_the_clips_made_before_transient_existed():
    # Sums recorded from make_clip as it was before `transient` (HEAD 12dd945): the default path's random
    # draws and pixels must not move, or every model's training data and every held-out set would change.
    # rel 1e-8, not tighter: float32 math kernels round differently by CPU (on an Intel Xeon with AMX the
    # video sum is 3.7e-11 and the audio sum 6.8e-10 off the Zen 4's that recorded them), while a changed draw
    # moves whole pixels and samples by O(1): orders of magnitude more than 1e-8 of these sums.
    clip = make_clip(duration=3.0, n_events=3, kinds="mixed", generator=5, size=32)
    assert float(clip.video.double().sum()) == pytest.approx(-43020.40003929136, rel=1e-8)
    assert float(clip.audio.double().abs().sum()) == pytest.approx(691.7296960218434, rel=1e-8)
    assert clip.ball_frames == [(0, 29)] * clip.event_kinds.count("hit")


def test_transient_with_hits_only_is_one_scene_the_persistent_clip():
    kw = dict(duration=3.0, n_events=3, kinds="hit", generator=7, size=32)
    a, b = make_clip(**kw), make_clip(transient=True, **kw)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio) and a.ball_frames == b.ball_frames


@pytest.mark.parametrize("seed", range(6))
def test_transient_balls_live_between_the_flashes_around_their_hit(seed):
    from avfast.data.synthetic import MAX_SCENE_BALLS

    kw = dict(duration=7.2, n_events=9, transient=True, noise_level=0.0, generator=seed, size=32)
    kinds = make_clip(kinds="mixed", **kw).event_kinds    # mixed, capped at MAX_SCENE_BALLS hits in a row
    clip = make_clip(kinds=kinds, **kw)                   # the same events, no draw for the kinds
    frames = clip.video.shape[1]
    hits = [round(t * 10) for t, k in zip(clip.event_times, clip.event_kinds) if k == "hit"]
    flashes = [round(t * 10) for t, k in zip(clip.event_times, clip.event_kinds) if k == "flash"]
    assert len(clip.ball_frames) == len(hits)
    cuts = [0] + flashes + [frames]
    for impact, (lo, hi) in zip(hits, clip.ball_frames):
        before = max(c for c in cuts[:-1] if c <= impact)
        after = min(c for c in cuts[1:] if c > impact)
        assert (lo, hi) == (before, after - 1)        # from the flash before its hit to the frame before the next
        assert lo == 0 or lo <= impact - 5            # after a flash: in view, hanging, before its fall starts
    in_view = torch.zeros(frames)
    for lo, hi in clip.ball_frames:
        in_view[lo:hi + 1] += 1
    assert in_view.max() <= MAX_SCENE_BALLS
    # Pixels: frames with no ball in view and no flash are the bare background, all alike; a ball's scene
    # differs from it. The flash frame itself already shows the new scene (the swap hides in the flash).
    background = make_clip(kinds=["flash"] * 9, **kw).video[:, 0]  # the same draws up to the balls: its background
    for f in range(frames):
        if f not in flashes:
            assert torch.equal(clip.video[:, f], background) == (in_view[f] == 0), f


def test_transient_balls_add_no_flow_peak_of_their_own():
    # AV-Align counts every optical-flow peak; a ball that appeared or left by itself (a fade, a slide) made
    # peaks with no sound (a 7-frame fade: 0.1-0.2 px/frame, over the 0.1 threshold). In a flash it adds none:
    # every peak of a transient clip is within a frame of an event.
    pytest.importorskip("cv2", reason="optical flow needs opencv-python-headless (the [test] extra)")
    from avfast.metrics.av_align import video_peaks

    peaks_seen = 0
    for seed in range(8):
        clip = make_clip(duration=7.2, n_events=9, kinds="mixed", transient=True, generator=100 + seed, size=32)
        events = [round(t * 10) for t in clip.event_times]
        peaks = [round(t * 10) for t in video_peaks(clip.video, fps=10)]
        assert all(min(abs(p - e) for e in events) <= 1 for p in peaks), (seed, peaks, events)
        peaks_seen += len(peaks)
    assert peaks_seen >= 40   # the hits and most flashes are found (a flash over an empty scene can be missed)
