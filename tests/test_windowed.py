"""Long clips by overlapping windows (avfast.diffusion.windowed): layout bookkeeping, the plain sampler
bit for bit when one window is the clip, every sampler option through the wrapper, an exact denoiser
of a stationary Gaussian process, short clips and bad input.

Stated bound (exact window posteriors of a stationary joint GP, correlation length 0.1 s, windows of
0.6 s overlapping by 0.3 s, 23 frames / 46 columns in 5 windows, DDIM-25 in float64): windowed
sampling ends within 0.12 (max abs; measured 0.060) and 0.03 (RMS; measured 0.015) of the exact
long-clip sampler from the same noise, on data of std ~1; v2a within the same bounds (measured
0.037 / 0.009). Hard cuts (overlap 0) are far worse (measured 0.59 / 0.10), a 1-frame overlap
0.41 / 0.042, a 5-frame one 0.032 / 0.009. For data without temporal correlation it is exact to 1e-9.
"""
from __future__ import annotations

import math

import pytest
import torch

from avfast.diffusion.sampling import sample
from avfast.diffusion.windowed import (HOP_LENGTH, WindowedDenoiser, audio_columns_for_seconds, frames_for_seconds,
                                       mel_rate, sample_windowed, window_layout, windowed)
from test_diffusion_analytic import GaussianDenoiser, one_thread  # noqa: F401

F64 = torch.float64


# ------------------------------------------------------------------ seconds <-> sizes
def test_seconds_helpers_match_the_data_front_end():
    from avfast.data import make_clip
    from avfast.data.mel import HOP_LENGTH as MEL_HOP, MelConfig
    from avfast.models import preset

    assert HOP_LENGTH == MEL_HOP
    cfg = preset("tiny")
    assert mel_rate(cfg) == 62.5
    assert (frames_for_seconds(cfg, 1.8), audio_columns_for_seconds(cfg, 1.8)) == (18, 112) == (cfg.frames,
                                                                                                  cfg.audio_length)
    for seconds in (7.2, 2.35, 10.0):
        clip = make_clip(duration=seconds, size=16, generator=0)
        assert frames_for_seconds(cfg, seconds) == clip.video.shape[1]
        assert audio_columns_for_seconds(cfg, seconds) == MelConfig().num_frames(clip.audio.shape[-1])
    assert (frames_for_seconds(cfg, 30.0), audio_columns_for_seconds(cfg, 30.0)) == (300, 1875)


# ------------------------------------------------------------------ layout bookkeeping
CASES = [(F, A, o) for F, A in ((18, 112), (19, 118), (25, 156), (37, 231), (72, 450), (101, 631), (300, 1875))
         for o in (0, 1, 6, 9, 17)]


@pytest.mark.parametrize("frames,audio,overlap", CASES)
def test_layout_covers_every_frame_and_column(frames, audio, overlap):
    wf, wa, fps, rate = 18, 112, 10.0, 62.5
    L = window_layout(frames, audio, wf, wa, overlap, fps, rate)
    ws = L.windows
    n = len(ws)
    assert ws[0].frame_start == 0 and ws[0].audio_start == 0
    assert ws[-1].frame_stop == frames and ws[-1].audio_stop == audio          # last window aligned to the end
    assert all(w.frame_stop - w.frame_start == wf and w.audio_stop - w.audio_start == wa for w in ws)
    cv, ca = L.coverage()
    assert int(cv.min()) >= 1 and int(ca.min()) >= 1                           # everything covered ...
    assert int(cv.sum()) == n * wf and int(ca.sum()) == n * wa
    # ... the right number of times: each position by exactly the windows whose span holds it
    for counts, spans in ((cv, [(w.frame_start, w.frame_stop) for w in ws]),
                          (ca, [(w.audio_start, w.audio_stop) for w in ws])):
        expected = [sum(s <= i < e for s, e in spans) for i in range(len(counts))]
        assert counts.tolist() == expected
    for a, b in zip(ws, ws[1:]):
        assert b.frame_start > a.frame_start or n == 1
        assert a.frame_stop - b.frame_start >= overlap                          # at least `overlap` frames shared
        assert a.audio_stop >= b.audio_start
    if n > 1:   # the fewest windows: the even spread of n - 1 would break the overlap (or leave an audio gap)
        stride = wf - overlap
        assert n - 1 < 1 + math.ceil((frames - wf) / stride) or overlap == 0
    # a window's audio covers the same seconds as its video, to within half a column (+ the end's rounding)
    for w in ws:
        (v0, _), (a0, _) = L.seconds(w)
        assert abs(v0 - a0) <= 1.0 / rate + 1e-9
    if frames == wf and audio == wa:
        assert L.single
    # fusion weights: exactly 1 where one window covers, complementary (sum 1) where two do, > 0 everywhere
    sv, sa = L.weight_sums()
    for counts, sums in ((cv, sv), (ca, sa)):
        assert bool((sums > 0).all())
        assert bool((sums[counts == 1] == 1).all())
        torch.testing.assert_close(sums[counts == 2], torch.ones_like(sums[counts == 2]), atol=1e-12, rtol=0)


def test_hard_cut_adds_a_window_for_the_audio():
    # overlap 0: 18 frames are 112.5 columns but a window has 112, so 4 abutting windows would leave gaps
    L = window_layout(72, 450, 18, 112, 0)
    assert len(L.windows) == 5 and int(L.coverage()[1].min()) == 1


class IndexModel:
    """Records which frames / columns each call sees (their values are their indices)."""

    def __init__(self, vs, as_):
        self.config = type("C", (), {"video_shape": vs, "audio_shape": as_, "fps": 10.0, "sample_rate": 16000})()
        self.seen_v, self.seen_a, self.batches = [], [], []

    def __call__(self, v, a, t_v, t_a, labels=None):
        self.batches.append(v.shape[0])
        self.seen_v += v[:, 0, :, 0, 0].flatten().long().tolist()
        self.seen_a += a[:, 0, :].flatten().long().tolist()
        return torch.ones_like(v) * t_v.view(-1, 1, 1, 1, 1), torch.ones_like(a) * t_a.view(-1, 1, 1)


@pytest.mark.parametrize("max_batch", [None, 1, 3])
def test_the_wrapper_feeds_every_frame_and_column_to_its_windows(max_batch):
    model = IndexModel((1, 18, 2, 2), (3, 112))
    den = windowed(model, frames=77, overlap=5, max_batch=max_batch)    # odd lengths: 77 frames, 481 columns
    L = den.layout
    assert (L.frames, L.audio_length) == (77, 481) and den.config.video_shape == (1, 77, 2, 2)
    B = 2
    v = torch.arange(77.0).view(1, 1, 77, 1, 1).expand(B, 1, 77, 2, 2).contiguous()
    a = torch.arange(481.0).view(1, 1, 481).expand(B, 3, 481).contiguous()
    t = torch.tensor([300.0, 300.0])
    pv, pa = den(v, a, t, t + 1)
    cv, ca = L.coverage()
    assert torch.bincount(torch.tensor(model.seen_v), minlength=77).tolist() == (B * cv).tolist()
    assert torch.bincount(torch.tensor(model.seen_a), minlength=481).tolist() == (B * ca).tolist()
    n, group = len(L.windows), max_batch or len(L.windows)
    assert model.batches == [B * min(group, n - i) for i in range(0, n, group)] and den.calls == len(model.batches)
    # a prediction that is the same in every window comes back unchanged: the fusion is normalised
    torch.testing.assert_close(pv, torch.full_like(pv, 300.0))
    torch.testing.assert_close(pa, torch.full_like(pa, 301.0))


# ------------------------------------------------------------------ the real U-Net through the sampler
def tiny(**kw):
    from avfast import models

    torch.manual_seed(0)
    over = dict(frames=6, audio_length=37, mel_bins=16, height=8, width=8, base_channels=16, audio_base_channels=16,
                head_dim=16, norm_groups=8, cmcpe_dim=16, num_classes=3)
    over.update(kw)
    return models.create("tiny", **over).eval()


OPTIONS = {
    "ddim": dict(sampler="ddim"),
    "ddim-eta-gamma": dict(sampler="ddim", eta=0.7, gamma=1.5),
    "dpmpp2m-cfg": dict(sampler="dpmpp2m", labels=torch.tensor([0, 2]), cfg_scale=(2.0, 1.5), gamma=0.8),
    "v2a-guidance": dict(task="v2a", guidance=0.5),
    "a2v-replace": dict(task="a2v"),
    "a2v-clean": dict(task="a2v", condition_mode="clean", sampler="dpmpp2m"),
}


def _condition(task, video_shape, audio_shape, B=2):
    g = torch.Generator().manual_seed(7)
    if task == "v2a":
        return torch.randn(B, *video_shape, generator=g)
    if task == "a2v":
        return torch.randn(B, *audio_shape, generator=g)
    return None


@pytest.mark.parametrize("name", list(OPTIONS))
def test_one_window_is_the_plain_sampler_bit_for_bit(name):
    model = tiny()
    kw = dict(OPTIONS[name])
    cond = _condition(kw.get("task", "joint"), model.config.video_shape, model.config.audio_shape)
    common = dict(steps=3, seed=5, batch_size=2, progress=False, condition=cond, **kw)
    plain = sample(model, **common)
    den = windowed(model, frames=6)
    assert den.layout.single and den.config == model.config
    wrapped = sample(den, **common)
    assert all(torch.equal(x, y) for x, y in zip(plain, wrapped))
    assert den.calls == 3


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_sampler_option_runs_on_a_long_clip(name):
    model = tiny()
    kw = dict(OPTIONS[name])
    task = kw.get("task", "joint")
    frames = 17                                            # 1.7 s: 106 columns, 4 windows of 6 frames
    A = audio_columns_for_seconds(model.config, frames / 10)
    cond = _condition(task, (*model.config.video_shape[:1], frames, *model.config.video_shape[2:]),
                      (model.config.mel_bins, A))
    kw.pop("task", None)
    outs = []
    for max_batch in (None, 1):
        v, a = sample_windowed(model, task=task, condition=cond, frames=None if cond is not None else frames,
                               overlap=2, max_batch=max_batch, steps=2, seed=1, batch_size=2, progress=False, **kw)
        assert v.shape == (2, 3, frames, 8, 8) and a.shape == (2, 16, A)
        assert bool(torch.isfinite(v).all() and torch.isfinite(a).all())
        if task == "v2a":
            assert torch.equal(v, cond)
        if task == "a2v":
            assert torch.equal(a, cond)
        outs.append((v, a))
    # windows one per call or all in one call: the same result (up to the conv's batch-size rounding)
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_half_precision_model():
    model = tiny().to(torch.bfloat16)
    v, a = sample_windowed(model, frames=17, steps=2, progress=False, labels=1, cfg_scale=2.0)
    assert v.dtype == a.dtype == torch.bfloat16 and v.shape[2] == 17 and a.shape[2] == 106
    assert bool(torch.isfinite(v.float()).all() and torch.isfinite(a.float()).all())


def test_the_length_follows_the_condition():
    model = tiny()
    mel = torch.randn(1, 16, 100)                          # 1.6 s of audio -> 16 frames
    v, a = sample_windowed(model, task="a2v", condition=mel, steps=1, progress=False)
    assert v.shape[2] == 16 and torch.equal(a, mel)
    video = torch.randn(3, 13, 8, 8)                       # 1.3 s of video -> 81 columns
    v, a = sample_windowed(model, task="v2a", condition=video, steps=1, progress=False)
    assert a.shape == (1, 16, 81) and torch.equal(v[0], video)


def test_a_clip_shorter_than_a_window_is_one_window_at_its_length():
    model = tiny()
    den = windowed(model, frames=4)                        # 0.4 s: 4 frames, 25 columns < 6 / 37
    assert den.layout.short and den.layout.single and den.config.video_shape == (3, 4, 8, 8)
    out = sample(den, steps=2, seed=3, progress=False)
    plain = sample(model, steps=2, seed=3, progress=False, video_shape=(3, 4, 8, 8), audio_shape=(16, 25))
    assert out[0].shape == (1, 3, 4, 8, 8) and out[1].shape == (1, 16, 25)
    assert all(torch.equal(x, y) for x, y in zip(out, plain))
    L = window_layout(1, 6, 18, 112)                       # one frame
    assert L.single and L.coverage()[0].tolist() == [1]


# ------------------------------------------------------------------ exact denoiser, stationary data
FPS, RATE = 10.0, 20.0           # 2 audio columns per frame (a small clock for small covariances)


def stationary_gp(frames: int, columns: int, length: float, rho: float = 0.8) -> GaussianDenoiser:
    """A joint stationary Gaussian process in seconds: video frame i at (i + ½)/FPS, column j at (j + ½)/RATE,
    cov = s_m s_m' B[m, m'] exp(-Δt² / 2ℓ²) + 0.05 δ (coregionalised: PSD), constant means."""
    t = torch.cat([(torch.arange(frames, dtype=F64) + 0.5) / FPS, (torch.arange(columns, dtype=F64) + 0.5) / RATE])
    m = torch.cat([torch.zeros(frames, dtype=torch.long), torch.ones(columns, dtype=torch.long)])
    scale = torch.tensor([1.0, 0.7], dtype=F64)[m]
    coreg = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=F64)[m][:, m]
    if length > 0:
        kern = torch.exp(-(t[:, None] - t[None, :]) ** 2 / (2 * length ** 2))
    else:
        kern = (t[:, None] == t[None, :]).to(F64) * (m[:, None] == m[None, :])
    cov = scale[:, None] * scale[None, :] * coreg * kern + 0.05 * torch.eye(len(t), dtype=F64)
    mean = torch.tensor([0.3, -0.2], dtype=F64)[m]
    return GaussianDenoiser((1, frames, 1, 1), (1, columns), mean, cov=cov)


def _long_vs_windowed(length: float, overlap: int, frames: int = 23, steps: int = 25, task: str = "joint"):
    wf, wa = 6, 12
    window = stationary_gp(wf, wa, length)
    exact = stationary_gp(frames, 2 * frames, length)
    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(3, 1, frames, 1, 1, generator=g, dtype=F64), torch.randn(3, 1, 2 * frames, generator=g,
                                                                                    dtype=F64))
    kw = dict(steps=steps, noise=noise, progress=False, dtype=F64, sampler="ddim")
    cond = None
    if task == "v2a":
        cond = exact.split(exact.draw(3, g))[0]
        kw.update(task="v2a", condition=cond, guidance=0.0)
    ref = sample(exact, video_shape=exact.video_shape, audio_shape=exact.audio_shape, **kw)
    den = windowed(window, frames=frames, audio_length=2 * frames, overlap=overlap, fps=FPS, mel_rate=RATE,
                   video_shape=window.video_shape, audio_shape=window.audio_shape)
    assert len(den.layout.windows) > 2
    out = sample(den, **kw)
    diff = torch.cat([(x - y).flatten() for x, y in zip(out, ref)])
    return float(diff.abs().max()), float(diff.square().mean().sqrt())


def test_memoryless_data_is_exact():
    # no correlation across time: each window's posterior of a position is the long clip's
    worst, rms = _long_vs_windowed(length=0.0, overlap=3)
    assert worst < 1e-9


def test_stationary_process_matches_the_unwindowed_sampler():
    worst, rms = _long_vs_windowed(length=0.1, overlap=3)
    assert worst < 0.12 and rms < 0.03
    cut_worst, cut_rms = _long_vs_windowed(length=0.1, overlap=0)
    assert 3 * rms < cut_rms and worst < cut_worst         # the cross-fade beats hard cuts
    v_worst, v_rms = _long_vs_windowed(length=0.1, overlap=3, task="v2a")
    assert v_worst < 0.12 and v_rms < 0.03


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(seconds=0.0), r"`seconds` must be a finite number of seconds > 0.*got 0\.0"),
    (dict(seconds=-2.0), r"`seconds` must be .*> 0.*got -2\.0"),
    (dict(seconds=float("nan")), r"`seconds`.*got nan"),
    (dict(frames=0), r"`frames` must be the clip's video frames, an int >= 1, got 0"),
    (dict(frames=-5), r"`frames`.*got -5"),
    (dict(frames=40, overlap=18), r"`overlap` must be an int number of video frames in \[0, 17\].*got 18"),
    (dict(frames=40, overlap=30), r"`overlap`.*got 30"),
    (dict(frames=40, overlap=-1), r"`overlap`.*got -1"),
    (dict(frames=40, overlap=2.5), r"`overlap`.*got 2\.5"),
    (dict(frames=40, max_batch=0), r"`max_batch` must be an int >= 1.*got 0"),
    (dict(frames=40, audio_length=100), r"`audio_length` must span the clip's 40 frames.*about 250.*got 100"),
    (dict(), r"exactly one of `frames`.*or `seconds`"),
    (dict(frames=40, seconds=4.0), r"exactly one of `frames`"),
])
def test_bad_input_names_the_argument(kwargs, match):
    model = IndexModel((1, 18, 2, 2), (3, 112))
    with pytest.raises(ValueError, match=match):
        windowed(model, **kwargs)


def test_bad_seconds_in_the_helpers():
    from avfast.models import preset

    with pytest.raises(ValueError, match=r"`seconds` must be .*> 0.*got -1"):
        frames_for_seconds(preset("tiny"), -1)
    with pytest.raises(ValueError, match=r"`seconds` must be at least half a video frame.*got 0\.01"):
        frames_for_seconds(preset("tiny"), 0.01)
    with pytest.raises(ValueError, match=r"`seconds`.*got 0"):
        audio_columns_for_seconds(preset("tiny"), 0)


def test_wrong_input_length_is_refused():
    model = IndexModel((1, 18, 2, 2), (3, 112))
    den = windowed(model, frames=40)
    assert isinstance(den, WindowedDenoiser)
    with pytest.raises(ValueError, match=r"laid out for 40 frames and 250 mel columns"):
        den(torch.zeros(1, 1, 30, 2, 2), torch.zeros(1, 3, 250), torch.zeros(1), torch.zeros(1))


def test_window_shapes_give_the_model_its_own_or_a_longer_windows_seconds():
    from types import SimpleNamespace

    from avfast.diffusion.windowed import window_shapes

    cfg = SimpleNamespace(video_shape=(4, 18, 8, 8), audio_shape=(80, 112), fps=10.0, sample_rate=16_000)
    assert window_shapes(cfg) == ((4, 18, 8, 8), (80, 112))
    assert window_shapes(cfg, 18) == ((4, 18, 8, 8), (80, 112))
    assert window_shapes(cfg, 72) == ((4, 72, 8, 8), (80, 450))      # 7.2 s: the mel columns of those seconds
    assert window_shapes(cfg, 7) == ((4, 7, 8, 8), (80, 43))         # 0.7 s = 11200 samples -> 43 columns
    assert window_shapes(SimpleNamespace(config=cfg), 36)[1] == (80, 225)   # a model with .config
    # A longer window's audio spans its frames, as window_layout demands (it refuses more than a frame off).
    for frames in (5, 18, 36, 72, 101):
        v, a = window_shapes(cfg, frames)
        assert abs(a[1] / (16_000 / HOP_LENGTH) - v[1] / 10.0) < 0.1
    for bad in (0, -3, 1.5, 18.0, True):   # 18.0 is the model's own length, but not an int
        with pytest.raises(ValueError, match=r"`window` must be an int number of video frames >= 1 "
                                             r"\(the model's own is 18\)"):
            window_shapes(cfg, bad)
