"""Shared starting noise across a long clip's windows (FreeNoise-style rescheduling, issue 24):
`avfast.diffusion.windowed.shared_noise_sources` / `shared_window_noise`, `sample_windowed(window_noise=)`,
`Pipeline(..., window_noise=)` and `python -m avfast.sample --window-noise`."""
from __future__ import annotations

import pytest
import torch

from avfast.diffusion import sample
from avfast.diffusion.windowed import (WINDOW_NOISES, sample_windowed, shared_noise_sources, shared_window_noise,
                                       window_layout, windowed)
from avfast.pipeline import Pipeline
from test_diffusion_analytic import one_thread  # noqa: F401
from test_long_clips import FRAMES, SIZE, _net

# (frames, columns, window frames, window columns, overlap): the default's 7.2 s, odd lengths, no overlap, the
# tiny model's windows, a clip of one window plus a frame
LAYOUTS = [(72, 450, 18, 112, 6), (73, 456, 18, 112, 6), (101, 631, 18, 112, 9), (61, 381, 18, 112, 0),
           (25, 156, 6, 37, 2), (19, 118, 18, 112, 6)]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(_net(), progress=False)


# ------------------------------------------------------------------ the construction
@pytest.mark.parametrize("args", LAYOUTS)
def test_every_window_starts_from_a_permutation_of_the_first_windows_noise(args):
    layout = window_layout(*args)
    src_v, src_a = shared_noise_sources(layout, torch.Generator().manual_seed(3))
    assert src_v.shape == (layout.frames,) and src_a.shape == (layout.audio_length,)
    for w in layout.windows:
        assert sorted(src_v[w.frame_start:w.frame_stop].tolist()) == list(range(layout.window_frames)), w
        assert sorted(src_a[w.audio_start:w.audio_stop].tolist()) == list(range(layout.window_audio)), w
    # ... and on the noise itself: each window's frames / columns are the first window's, reordered
    v, a = shared_window_noise(layout, (3, args[2], 2, 2), (4, args[3]), seeds=[5])
    w0 = layout.windows[0]
    first_v = {tuple(v[0, :, f].flatten().tolist()) for f in range(w0.frame_start, w0.frame_stop)}
    first_a = {tuple(a[0, :, c].tolist()) for c in range(w0.audio_start, w0.audio_stop)}
    for w in layout.windows:
        assert {tuple(v[0, :, f].flatten().tolist()) for f in range(w.frame_start, w.frame_stop)} == first_v
        assert {tuple(a[0, :, c].tolist()) for c in range(w.audio_start, w.audio_stop)} == first_a


@pytest.mark.parametrize("args", LAYOUTS)
def test_video_and_audio_are_rescheduled_at_the_same_seconds(args):
    """A column's noise comes from the first-window seconds its video frame's noise came from (plus its place in
    the frame): within a column for most columns (median <= 1, >= 80 % within 2 at 11 windows, ~95 % typically);
    the columns at the edges of each join can be further off (a column grid that does not divide the frames)."""
    layout = window_layout(*args)
    src_v, src_a = shared_noise_sources(layout, torch.Generator().manual_seed(0))
    fps, rate = layout.fps, layout.mel_rate
    at = (torch.arange(layout.audio_length, dtype=torch.float64) + 0.5) / rate * fps   # frame units
    frame = at.floor().clamp(max=layout.frames - 1)
    wanted = src_v[frame.long()] + (at - frame)
    got = (src_a.double() + 0.5) / rate * fps
    err_columns = (wanted - got).abs() / fps * rate
    assert float(err_columns.median()) <= 1.0 and float(err_columns.mean()) <= 2.0
    assert float((err_columns <= 2.0).double().mean()) >= 0.8        # within 32 ms (two columns)
    # and the first window is untouched: its columns and frames are their own
    w0 = layout.windows[0]
    assert src_v[:w0.frame_stop].tolist() == list(range(w0.frame_stop))
    assert src_a[:w0.audio_stop].tolist() == list(range(w0.audio_stop))


def test_without_shuffle_the_noise_repeats_the_dropped_frames_in_order():
    layout = window_layout(72, 450, 18, 112, 6)
    src_v, _ = shared_noise_sources(layout, shuffle=False)
    for p, w in zip(layout.windows, layout.windows[1:]):
        assert src_v[p.frame_stop:w.frame_stop].tolist() == src_v[p.frame_start:w.frame_start].tolist()


@pytest.mark.parametrize("args", [(73, 456, 18, 112, 6), (25, 156, 6, 37, 2)])
def test_shared_noise_shapes_and_unit_variance_per_element(args):
    layout = window_layout(*args)
    v, a = shared_window_noise(layout, (2, args[2], 3, 3), (5, args[3]), seeds=range(400))
    assert v.shape == (400, 2, args[0], 3, 3) and a.shape == (400, 5, args[1])
    assert v.dtype == a.dtype == torch.float32
    for x in (v, a):
        var = x.var(dim=0)                              # per element, over 400 clips
        assert 0.95 < float(var.mean()) < 1.05 and 0.6 < float(var.min()) and float(var.max()) < 1.5
        assert abs(float(x.mean())) < 0.02
    # clip i from seeds[i]: the same noise drawn alone
    v3, a3 = shared_window_noise(layout, (2, args[2], 3, 3), (5, args[3]), seeds=3)
    assert torch.equal(v3[0], v[3]) and torch.equal(a3[0], a[3])
    assert not torch.equal(v[0], v[1])


def test_one_window_gives_the_samplers_own_noise():
    layout = window_layout(18, 112, 18, 112, 6)
    v, a = shared_window_noise(layout, (3, 18, 4, 4), (8, 112), seeds=[7, 8])
    for i, seed in enumerate((7, 8)):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(v[i], torch.randn((1, 3, 18, 4, 4), generator=g)[0])
        assert torch.equal(a[i], torch.randn((1, 8, 112), generator=g)[0])


# ------------------------------------------------------------------ sampling
@torch.no_grad()
def test_sample_windowed_shared_noise_is_the_noise_it_samples_from():
    net = _net()
    kw = dict(seconds=2.5, overlap=2, steps=2, sampler="ddim", seed=4, batch_size=2, progress=False)
    shared = sample_windowed(net, window_noise="shared", **kw)
    den = windowed(net, seconds=2.5, overlap=2)
    noise = shared_window_noise(den.layout, net.config.video_shape, net.config.audio_shape, seeds=[4, 5])
    by_hand = sample(den, steps=2, sampler="ddim", seed=4, noise=noise, progress=False)
    assert torch.equal(shared[0], by_hand[0]) and torch.equal(shared[1], by_hand[1])
    independent = sample_windowed(net, **kw)
    assert torch.equal(independent[0], sample_windowed(net, window_noise="independent", **kw)[0])
    assert not torch.equal(shared[0], independent[0])


def test_pipeline_default_is_todays_independent_noise(pipe):
    clip = pipe("joint", seconds=2.5, overlap=2, steps=2, seed=4, batch=2)
    same = pipe("joint", seconds=2.5, overlap=2, steps=2, seed=4, batch=2, window_noise="independent")
    assert torch.equal(clip.pixels, same.pixels) and torch.equal(clip.waveform, same.waveform)
    den = windowed(pipe.model, seconds=2.5, overlap=2)           # today's path: the sampler's own noise
    v, _ = sample(den, steps=2, seed=4, batch_size=2, progress=False)
    torch.testing.assert_close(clip.pixels, pipe.decode_video(v), atol=0, rtol=0)


@pytest.mark.parametrize("task", ["joint", "a2v", "v2a"])
def test_pipeline_shared_noise_is_deterministic_and_per_clip(pipe, task):
    given = {"joint": {}, "a2v": {"audio": 0.3 * torch.sin(torch.arange(40000) / 16000 * 2000)},
             "v2a": {"video": torch.rand(3, 25, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1}}[task]
    kw = dict(seconds=2.5, overlap=2, steps=2, window_noise="shared", **given)
    clip = pipe(task, seed=4, batch=2, **kw)
    again = pipe(task, seed=4, batch=2, **kw)
    assert torch.equal(clip.pixels, again.pixels) and torch.equal(clip.waveform, again.waveform)
    one = pipe(task, seed=5, **kw)                                # clip i from seed + i
    torch.testing.assert_close(one.pixels[0], clip.pixels[1], atol=1e-5, rtol=0)
    split = pipe(task, seed=4, batch=2, max_batch=1, **kw)        # the same in pieces
    torch.testing.assert_close(split.pixels, clip.pixels, atol=1e-5, rtol=0)
    if task != "v2a":
        independent = pipe(task, seed=4, batch=2, **{**kw, "window_noise": "independent"})
        assert not torch.equal(independent.pixels, clip.pixels)


# ------------------------------------------------------------------ refusals
def test_bad_window_noise_is_refused_in_one_line(pipe):
    for bad in ("freenoise", None, 1, "Shared"):
        with pytest.raises(ValueError, match=r"`window_noise` must be one of 'independent', 'shared'") as e:
            sample_windowed(_net(), seconds=2.0, steps=1, window_noise=bad, progress=False)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"`window_noise` must be one of") as e:
        pipe("joint", seconds=2.0, steps=1, window_noise="freenoise")
    with pytest.raises(ValueError, match=r"`window_noise` is the starting noise of a long clip's windows; give "
                                         r"`seconds=` too") as e:
        pipe("joint", steps=1, window_noise="shared")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"`window_noise`='shared' makes the starting noise; give it or `noise`"):
        sample_windowed(_net(), seconds=2.0, steps=1, window_noise="shared", noise=(torch.zeros(1), torch.zeros(1)))
    layout = window_layout(25, 156, FRAMES, 37, 2)
    with pytest.raises(ValueError, match=r"`video_shape` / `audio_shape` must be one window's"):
        shared_window_noise(layout, (3, 25, SIZE, SIZE), (16, 156))
    with pytest.raises(ValueError, match=r"`seeds` must be an int >= 0"):
        shared_window_noise(layout, (3, FRAMES, SIZE, SIZE), (16, 37), seeds=-1)
    assert WINDOW_NOISES == ("independent", "shared")


def test_cli_window_noise(tmp_path, capsys):
    pytest.importorskip("av", reason="the CLI checks for PyAV first")
    from avfast.sample import main

    folder = tmp_path / "model"
    _net().save_pretrained(folder)
    out = tmp_path / "out"
    base = ["--checkpoint", str(folder), "--steps", "1", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main([*base, "--window-noise", "shared"]) == 2
    err = capsys.readouterr().err
    assert "--window-noise is the starting noise of a long clip's windows; give --seconds too" in err
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as e:                     # argparse's own refusal of a bad choice
        main([*base, "--seconds", "2", "--window-noise", "freenoise"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--window-noise: invalid choice: 'freenoise'" in err
    assert err.count("\n") == 1 and err.startswith("python -m avfast.sample: error:")  # one line, no usage block
    assert main([*base, "--seconds", "2.4", "--overlap", "2", "--window-noise", "shared"]) == 0
    assert [p.name for p in out.iterdir()] == ["joint_seed0.mp4"]
