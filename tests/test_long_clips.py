"""Long clips through `avfast.Pipeline` and `python -m avfast.sample --seconds` (issue 24) on a tiny random
model with 0.6-s windows (6 frames, 37 mel columns): every task, a window equal to the clip is the plain
call bit for bit, whole input files, the model-call batch does not grow with the duration, a distilled
student, a latent model, one mp4 with sound from the command line, and one-line refusals."""
from __future__ import annotations

import pytest
import torch

from avfast import models
from avfast.pipeline import Pipeline
from avfast.sample import main
from test_diffusion_analytic import one_thread  # noqa: F401

FRAMES, COLUMNS, MEL, SIZE = 6, 37, 16, 16      # one window: 0.6 s
MICRO = dict(frames=FRAMES, audio_length=COLUMNS, mel_bins=MEL, height=SIZE, width=SIZE, base_channels=16,
             audio_base_channels=16, head_dim=16, norm_groups=8, cmcpe_dim=16, num_classes=3)


def _net(**overrides):
    from avfast.export import randomize_zero_layers_

    torch.manual_seed(0)
    return randomize_zero_layers_(models.create("tiny", **{**MICRO, **overrides}), seed=0).eval()


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(_net(), progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("long_model")
    _net().save_pretrained(d)
    return d


def _sound(seconds: float, freq: float = 330.0) -> torch.Tensor:
    n = round(seconds * 16000)
    return 0.3 * torch.sin(torch.arange(n) / 16000 * 2 * torch.pi * freq) * (torch.arange(n) % 4000 < 800)


def _video(frames: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(3, frames, SIZE, SIZE, generator=g) * 2 - 1) * 0.8


# ------------------------------------------------------------------ every task, long
def test_joint_long_clip(pipe):
    clip = pipe("joint", seconds=2.5, overlap=2, steps=2, seed=4, batch=2)
    assert clip.pixels.shape == (2, 3, 25, SIZE, SIZE) and clip.waveform.shape == (2, 156 * 256)
    assert clip.duration == pytest.approx(2.5) and clip.windows == 6 and clip.calls == 2 and clip.seeds == (4, 5)
    assert bool(torch.isfinite(clip.pixels).all() and torch.isfinite(clip.waveform).all())
    assert float(clip.pixels.abs().max()) <= 1 and float(clip.waveform.abs().max()) <= 1
    again = pipe("joint", seconds=2.5, overlap=2, steps=2, seed=5)           # clip i from seed + i, long too
    torch.testing.assert_close(again.pixels[0], clip.pixels[1], atol=1e-5, rtol=0)


def test_joint_long_clip_in_passes(pipe):
    """refine= on a long clip: every pass is windowed over the whole clip; v2a keeps the joint video."""
    plain = pipe("joint", seconds=2.5, overlap=2, steps=2, seed=4)
    clip = pipe("joint", seconds=2.5, overlap=2, steps=2, seed=4, refine="v2a")
    assert clip.windows == plain.windows == 6 and clip.calls == 2 * plain.calls
    assert torch.equal(clip.pixels, plain.pixels) and clip.waveform.shape == plain.waveform.shape
    assert not torch.allclose(clip.waveform, plain.waveform, atol=1e-3)


def test_v2a_long_video_sets_the_duration(pipe):
    video = _video(23)                                                       # 2.3 s
    clip = pipe("v2a", video=video, seconds="all", steps=2, sampler="ddim", guidance=0.5)
    assert torch.equal(clip.pixels[0], video) and clip.waveform.shape == (1, 143 * 256) and clip.windows == 6
    cut = pipe("v2a", video=video, seconds=1.5, steps=2)                    # the first 1.5 s of it
    assert torch.equal(cut.pixels[0], video[:, :15]) and cut.waveform.shape == (1, 93 * 256)
    plain = pipe("v2a", video=video, steps=2)                               # no seconds: the model's length
    assert plain.pixels.shape[2] == FRAMES and plain.windows == 0


def test_a2v_long_sound_sets_the_duration(pipe):
    sound = _sound(2.0)
    clip = pipe("a2v", audio=sound, seconds="all", steps=2, labels=1, cfg=2.0, gamma=1.5)
    assert clip.pixels.shape == (1, 3, 20, SIZE, SIZE) and torch.equal(clip.waveform[0], sound[:125 * 256])
    assert clip.windows == 5 and clip.peak_batch == 2 * 5                   # CFG doubles the batch


@pytest.mark.parametrize("task", ["joint", "v2a", "a2v"])
def test_one_window_is_the_plain_pipeline_bit_for_bit(pipe, task):
    given = {"joint": {}, "v2a": {"video": _video(FRAMES)}, "a2v": {"audio": _sound(0.6)}}[task]
    kw = dict(steps=3, seed=2, batch=2, **given)
    plain = pipe(task, **kw)
    long = pipe(task, seconds=0.6, **kw)
    assert long.windows == 1 and plain.windows == 0
    assert torch.equal(plain.pixels, long.pixels) and torch.equal(plain.waveform, long.waveform)
    if task != "joint":
        assert torch.equal(pipe(task, seconds="all", **kw).pixels, plain.pixels)


def test_a_clip_shorter_than_a_window(pipe):
    clip = pipe("joint", seconds=0.4, steps=2)
    assert clip.pixels.shape[2] == 4 and clip.waveform.shape == (1, 25 * 256) and clip.windows == 1


# ------------------------------------------------------------------ window=: windows longer than the model's
def _frames_seen(monkeypatch, call):
    """The video frame counts of the denoiser calls `call()` makes (what the runtime is given), and its result."""
    import avfast.pipeline as pipeline_module

    seen, counted = [], pipeline_module._Counted.__call__

    def spy(self, *args, **kwargs):
        seen.append(int(args[0].shape[2]))
        return counted(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pipeline_module._Counted, "__call__", spy)
        result = call()
    return set(seen), result


def test_window_is_the_models_own_by_default_bit_for_bit(pipe):
    kw = dict(seconds=2.0, steps=2, seed=1)
    plain, own = pipe("joint", **kw), pipe("joint", window=FRAMES, **kw)
    assert torch.equal(plain.pixels, own.pixels) and torch.equal(plain.waveform, own.waveform)


@pytest.mark.parametrize("task", ["joint", "a2v", "v2a"])
def test_a_longer_window_runs_the_model_on_its_frames(pipe, task, monkeypatch):
    from avfast.diffusion.windowed import window_layout

    given = {"joint": {}, "v2a": {"video": _video(24)}, "a2v": {"audio": _sound(2.4)}}[task]
    seen, clip = _frames_seen(monkeypatch, lambda: pipe(task, seconds=2.4, window=12, steps=2, **given))
    expected = window_layout(24, 150, 12, 75, None).windows                  # overlap 4: a third of 12
    assert seen == {12} and clip.windows == len(expected) == 3
    assert clip.pixels.shape[2] == 24 and clip.waveform.shape[1] == 150 * 256
    short = pipe(task, seconds=2.4, steps=2, **given)
    assert short.windows == 6 and not torch.equal(short.pixels if task != "v2a" else short.waveform,
                                                  clip.pixels if task != "v2a" else clip.waveform)
    # A window as long as the clip is the model once over the whole clip: the call's frames are the clip's.
    seen, whole = _frames_seen(monkeypatch, lambda: pipe(task, seconds=2.4, window=24, steps=2, **given))
    assert seen == {24} and whole.windows == 1


def test_the_models_long_window_is_the_default_and_a_call_overrides_it(monkeypatch):
    own = Pipeline(_net(long_window=12), progress=False)
    seen, clip = _frames_seen(monkeypatch, lambda: own("joint", seconds=2.4, steps=1))
    assert seen == {12} and clip.windows == 3 and clip.window_frames == 12
    seen, clip = _frames_seen(monkeypatch, lambda: own("joint", seconds=2.4, window=FRAMES, steps=1))
    assert seen == {FRAMES} and clip.windows == 6 and clip.window_frames == FRAMES
    # A clip no longer than the model's own window is still the plain call, bit for bit.
    assert torch.equal(own("joint", seconds=0.6, steps=2).pixels, own("joint", steps=2).pixels)
    assert own("joint", steps=1).window_frames == 0


def test_overlap_is_bounded_by_the_window_not_the_model(pipe):
    clip = pipe("joint", seconds=2.4, window=12, overlap=8, steps=1)          # 8 >= the model's 6 frames
    assert clip.windows == 4
    with pytest.raises(ValueError, match=r"`overlap` must be an int number of video frames in \[0, 11\]"):
        pipe("joint", seconds=2.4, window=12, overlap=12, steps=1)


def test_an_exported_runtime_refuses_another_window():
    pytest.importorskip("onnxruntime", reason="an exported runtime needs the ort extra")
    exported = Pipeline(_net(), runtime="onnxruntime", progress=False)
    with pytest.raises(ValueError, match=r"runtime 'onnxruntime' has a fixed input shape of 6 frames: it runs the "
                                         r"model's own window only, got window=12"):
        exported("joint", seconds=2.4, window=12, steps=1)


# ------------------------------------------------------------------ memory: windows in flight
def test_model_call_batch_does_not_grow_with_duration(pipe):
    peaks, windows = [], []
    for seconds in (1.2, 3.0, 7.2):
        clip = pipe("joint", seconds=seconds, steps=1, window_batch=2, batch=2)
        peaks.append(clip.peak_batch)
        windows.append(clip.windows)
    assert peaks == [2 * 2] * 3                                             # 2 windows x 2 clips, whatever the length
    assert windows[0] < windows[1] < windows[2]
    assert pipe("joint", seconds=7.2, steps=1, window_batch=3).peak_batch == 3


def test_windowed_bookkeeping_counts_windows_in_flight():
    from avfast.diffusion.windowed import windowed

    model = _net()
    seen = []
    for seconds in (1.8, 7.2, 30.0):
        den = windowed(model, seconds=seconds, max_batch=4, callback=lambda e, d, n: seen.append((e, d, n)))
        n = len(den.layout.windows)
        v = torch.zeros(1, *den.video_shape)
        a = torch.zeros(1, *den.audio_shape)
        t = torch.full((1,), 500.0)
        with torch.no_grad():
            den(v, a, t, t)
        assert den.peak_windows == min(4, n) and den.peak_batch == min(4, n) and den.calls == -(-n // 4)
        assert den.evaluations == 1 and seen[-1] == (1, n, n)


# ------------------------------------------------------------------ samplers, students, latents, files
def test_distilled_student_uses_its_own_steps(pipe):
    import dataclasses

    if "distilled_steps" not in {f.name for f in dataclasses.fields(models.ModelConfig)}:
        pytest.skip("this tree's ModelConfig has no distilled_steps")
    student = _net(distilled_steps=2, distilled_sampler="ddim")
    p = Pipeline(student, progress=False)
    clip = p("joint", seconds=1.5)
    assert clip.steps == 2 and clip.calls == 2 and clip.windows > 1 and clip.pixels.shape[2] == 15


def test_latent_model_long_clip():
    from avfast.data.autoencoder import TinyAutoencoder

    net = _net(video_channels=4, height=4, width=4, video_space="latent", patch_size=1)
    ae = TinyAutoencoder(channels=8)
    p = Pipeline(net, autoencoder=ae, progress=False)
    clip = p("joint", seconds=1.4, steps=1)
    assert clip.pixels.shape == (1, 3, 14, 32, 32) and clip.windows > 1
    video = torch.rand(1, 3, 14, 32, 32) * 2 - 1                            # encoded a window at a time
    torch.testing.assert_close(p.encode_video(video), ae.encode(video), atol=1e-5, rtol=1e-5)
    assert torch.equal(p("v2a", video=video, seconds="all", steps=1).pixels, video)


def test_whole_input_files(pipe, tmp_path):
    pytest.importorskip("av", reason="writing mp4 needs PyAV")
    from avfast.data.video import save_audio, write_video

    video, sound = _video(21), _sound(2.1)
    write_video(tmp_path / "long.mp4", video, fps=10, audio=sound, sample_rate=16000)
    save_audio(tmp_path / "long.wav", sound)
    v2a = pipe("v2a", video=tmp_path / "long.mp4", seconds="all", steps=1)
    assert v2a.pixels.shape[2] == 21 and v2a.windows > 1
    assert pipe("v2a", video=tmp_path / "long.mp4", steps=1).pixels.shape[2] == FRAMES   # cut without seconds
    for source in (tmp_path / "long.wav", tmp_path / "long.mp4"):
        a2v = pipe("a2v", audio=source, seconds="all", steps=1)
        assert a2v.pixels.shape[2] == 21 and a2v.waveform.shape[1] == 131 * 256
    with pytest.raises(ValueError, match=r"has 21 frames at 10 fps; seconds=3 needs 30"):
        pipe("v2a", video=tmp_path / "long.mp4", seconds=3, steps=1)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(seconds=0), r"`seconds` must be a finite number of seconds > 0"),
    (dict(seconds=-2.0), r"`seconds` must be a finite number of seconds > 0"),
    (dict(seconds=float("nan")), r"`seconds` must be a finite number of seconds > 0"),
    (dict(seconds=True), r"`seconds` must be a finite number"),
    (dict(seconds="long"), r"`seconds` must be a number of seconds > 0 or 'all'"),
    (dict(seconds="all"), r"task 'joint' has none"),
    (dict(seconds=0.01), r"at least half a video frame"),
    (dict(seconds=2.0, overlap=FRAMES), r"`overlap` must be an int number of video frames in \[0, 5\]"),
    (dict(seconds=2.0, overlap=-1), r"`overlap` must be an int"),
    (dict(seconds=2.0, overlap=1.5), r"`overlap` must be an int"),
    (dict(overlap=2), r"give `seconds=` too"),
    (dict(seconds=2.0, window_batch=0), r"`window_batch` must be an int >= 1"),
    (dict(seconds=2.0, window=0), r"`window` must be an int number of video frames >= 1 \(the model's own is 6\)"),
    (dict(seconds=2.0, window=7.5), r"`window` must be an int number of video frames >= 1"),
    (dict(window=12), r"`overlap`, `window_batch` and `window` shape the windows of a long clip; give `seconds=`"),
])
def test_bad_duration_and_overlap_are_refused_in_one_line(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        pipe("joint", steps=1, **kwargs)
    assert "\n" not in str(e.value)


def test_a_condition_shorter_than_seconds_is_refused(pipe):
    with pytest.raises(ValueError, match=r"the video tensor has 8 frames at 10 fps; seconds=2 needs 20"):
        pipe("v2a", video=_video(8), seconds=2, steps=1)
    with pytest.raises(ValueError, match=r"the audio tensor has 1.00 s of sound; seconds=2 needs"):
        pipe("a2v", audio=_sound(1.0), seconds=2, steps=1)


# ------------------------------------------------------------------ the command line
def test_cli_writes_one_long_mp4_with_sound(folder, tmp_path, capsys):
    pytest.importorskip("av", reason="writing mp4 needs PyAV")
    from avfast.data.video import read_video

    rc = main(["--checkpoint", str(folder), "--seconds", "2.4", "--overlap", "2", "--steps", "2", "--out",
               str(tmp_path), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert [p.name for p in tmp_path.iterdir()] == ["joint_seed0.mp4"]
    assert "2.4 s: 6 overlapping windows of 6 frames per step" in out
    rc = main(["--checkpoint", str(folder), "--seconds", "2.4", "--window", "12", "--steps", "1", "--out",
               str(tmp_path / "w12"), "--no-progress", "--device", "cpu"])
    assert rc == 0 and "2.4 s: 3 overlapping windows of 12 frames per step" in capsys.readouterr().out
    clip = read_video(tmp_path / "joint_seed0.mp4", fps=10, size=None)
    assert clip.video.shape == (3, 24, SIZE, SIZE)
    assert clip.audio is not None and clip.audio.shape[0] > 0.9 * 2.4 * 16000


@pytest.mark.parametrize("argv, message", [
    (["--seconds", "0"], "--seconds must be a finite number of seconds > 0, got '0'"),
    (["--seconds", "-3"], "--seconds must be a finite number of seconds > 0"),
    (["--seconds", "inf"], "--seconds must be a finite number of seconds > 0"),
    (["--seconds", "ten"], "--seconds must be a number of seconds > 0 or 'all', got 'ten'"),
    (["--seconds", "all"], "--seconds all takes the length of --input; --task joint has none"),
    (["--overlap", "2"], "--overlap, --window-batch and --window shape the windows of a long clip; give --seconds"),
    (["--window", "12"], "--overlap, --window-batch and --window shape the windows of a long clip; give --seconds"),
    (["--seconds", "2", "--window", "0"], "--window must be >= 1 video frames, got 0"),
    (["--seconds", "2", "--overlap", "-1"], "--overlap must be >= 0"),
    (["--seconds", "2", "--overlap", str(FRAMES)], "`overlap` must be an int number of video frames in [0, 5]"),
    (["--seconds", "2", "--window-batch", "0"], "--window-batch must be >= 1"),
])
def test_cli_bad_duration_and_overlap_exit_2_with_one_line(argv, message, folder, tmp_path, capsys):
    pytest.importorskip("av", reason="the CLI checks for PyAV first")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(folder), *argv, "--steps", "1", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not any(out.glob("*.mp4")) if out.exists() else True



def test_cli_refuses_a_clip_longer_than_memory_holds_before_sampling(folder, tmp_path, capsys, monkeypatch):
    """--seconds 1e9 was killed by the kernel after minutes; the CLI estimates a long clip's memory (it grows
    with the duration: state, decoded pixels and sound) and refuses in one line, naming the longest that fits."""
    pytest.importorskip("av", reason="the CLI checks for PyAV first")
    import avfast._memory
    from avfast._memory import long_clip_bytes

    cfg = models.create("tiny", **MICRO).config
    per_second = long_clip_bytes(cfg, 1.0, SIZE)
    assert long_clip_bytes(cfg, 100.0, SIZE) == pytest.approx(100 * per_second, rel=1e-6)
    assert long_clip_bytes(cfg, 1.0, 2 * SIZE) > per_second                      # pixels grow with the frame area
    monkeypatch.setattr(avfast._memory, "available_bytes", lambda device: int(200 * per_second))
    out = tmp_path / "out"
    assert main(["--checkpoint", str(folder), "--seconds", "1e9", "--steps", "1", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--seconds 1e+09: a clip that long needs about" in err and "the longest that fits is about 100 s" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["--checkpoint", str(folder), "--seconds", "2", "--steps", "1", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0                         # a clip that fits is made


# ------------------------------------------------------------------ the measurement's helpers
def test_seam_measures_and_independent_ratio():
    import numpy as np

    from avfast.diffusion.windowed import window_layout
    from avfast.experiments.long_clips import frame_change, join_positions, seam_scores
    from avfast.experiments.stats import bootstrap_independent_ratio_ci

    layout = window_layout(72, 450, 18, 112, 6)                  # 7.2 s of the default's windows
    video, audio = join_positions(layout)
    starts = [w.frame_start for w in layout.windows[1:]]
    stops = [w.frame_stop for w in layout.windows[:-1]]
    assert video == sorted({s - 1 for s in starts} | {s - 1 for s in stops}) and len(audio) == len(video)
    series = np.ones((2, 71))
    series[:, video] = 3.0                                       # a step at every join: a seam
    series[:, ::5] += 0.5
    z = seam_scores(series, video, 2)
    assert min(z["z"]) > 3 and z["joins"] == len(video)
    smooth = seam_scores(np.tile(np.sin(np.arange(71.0)), (2, 1)), video, 2)
    assert max(abs(v) for v in smooth["z"]) < 1.5
    pixels = torch.zeros(1, 3, 4, 2, 2)
    pixels[:, :, 2:] = 1.0
    assert frame_change(pixels).tolist() == [[0.0, 1.0, 0.0]]
    ci = bootstrap_independent_ratio_ci([2.0, 2.2, 1.8], [1.0, 1.1, 0.9, 1.0])
    assert ci.mean == pytest.approx(2.0) and ci.low < 2.0 < ci.high
    assert bootstrap_independent_ratio_ci([1.0], [0.0, 0.0]) is None


def test_paired_with_pools_the_same_clips_of_two_runs_and_refuses_other_clips():
    """--paired-with: this run's pooled AV-Align over another run's, clip i of both resampled together; the
    same counts give exactly 1, a run matching half the events scores lower, other clips are refused."""
    import numpy as np

    from avfast.experiments.long_clips import _paired_lines, check_paired, paired_with
    from avfast.metrics.av_align import pooled_av_align

    rng = np.random.default_rng(0)
    onsets = rng.integers(4, 9, size=12)
    peaks = onsets + rng.integers(0, 3, size=12)
    good = np.stack([onsets, onsets, peaks, peaks], axis=1)              # every event matched
    half = np.stack([onsets // 2, onsets, peaks // 2, peaks], axis=1)    # about half of each matched
    settings = {"clips": 12, "seconds": 7.2, "data_seed": 2, "content": "scenes", "seed": 0, "model": "a",
                "window": 36}

    def run(counts, window_counts, tasks=("a2v",), **changes):
        entry = {"long": {"av_align_counts": counts.tolist()}, "window": {"av_align_counts": window_counts.tolist()}}
        return {"settings": {**settings, **changes}, "tasks": {t: entry for t in tasks}}

    same = paired_with(run(good, good), run(good, good, model="b"), "base")
    one = same["tasks"]["a2v"]["long"]
    assert one["mean"] == pytest.approx(1.0) and one["low"] == pytest.approx(1.0) == one["high"]
    lower = paired_with(run(half, good[:5], tasks=("a2v", "joint")), run(good, good, model="b"), "base")
    expected = pooled_av_align(half) / pooled_av_align(good)
    assert lower["tasks"]["a2v"]["long"]["mean"] == pytest.approx(expected) and 0.2 < expected < 0.5
    assert lower["tasks"]["a2v"]["long"]["high"] < 0.6
    assert "window" not in lower["tasks"]["a2v"]                         # 5 window clips against 12: not paired
    assert set(lower["tasks"]) == {"a2v"} and lower["model"] == "b"      # joint: not in the base run
    table = "\n".join(_paired_lines(lower))
    assert f"| a2v | {expected:.2f}" in table and "Against `base` (model b, 36-frame windows)" in table
    with pytest.raises(ValueError, match=r"--paired-with base: its clips are not this run's \(data_seed 3 against "
                                         r"2, seed 1000 against 0\)"):
        paired_with(run(good, good), run(good, good, data_seed=3, seed=1000), "base")
    check_paired(settings, {**settings, "model": "b", "window": 72}, "base")   # other model and window: fine
    with pytest.raises(ValueError, match="no task of this run has event-pooled counts in both runs"):
        paired_with(run(good, good, tasks=("v2a",)), run(good, good), "base")


def test_seam_z_spread_reports_where_most_clips_lie_not_one_static_clip():
    """One near-static clip (tiny sd away from joins) moves the mean z by units; the median and the share
    over 2 do not, and the table shows them next to the mean (and reads results written before them)."""
    from avfast.experiments.long_clips import _z_cell, _z_spread

    z = [-0.4, 0.1, -0.2, 0.3, 0.0, 40.0]                        # five clips without a seam, one static clip
    spread = _z_spread(z)
    assert spread == {"median": pytest.approx(0.05), "over_2": pytest.approx(1 / 6)}
    assert _z_spread([3.0, 2.5, 2.1])["over_2"] == 1.0 and _z_spread([2.0])["over_2"] == 0.0   # strictly over
    ci = {"mean": 6.63, "low": -0.1, "high": 19.9}
    assert _z_cell({"seam_z_video": ci, "seam_z_spread_video": spread}, "video") == \
        "6.63 [-0.10, 19.90]; 0.05, 17% > 2"
    assert _z_cell({"seam_z_video": ci}, "video") == "6.63 [-0.10, 19.90]"      # an older results file


def test_cut_windows_cover_the_clip_once_and_keep_each_window_inside_itself():
    from types import SimpleNamespace

    from avfast.diffusion.windowed import window_layout
    from avfast.experiments.long_clips import CUT_SEED_STRIDE, LongClipSettings, _generate_cut, cut_spans

    for frames, overlap in ((72, 6), (41, 5), (18, 0), (25, 17)):
        layout = window_layout(frames, round(frames * 6.25), 18, 112, overlap)
        spans = cut_spans(layout)
        assert [lo for lo, _ in spans[1:]] == [hi for _, hi in spans[:-1]]
        assert spans[0][0] == 0 and spans[-1][1] == frames
        assert all(w.frame_start <= lo < hi <= w.frame_stop for w, (lo, hi) in zip(layout.windows, spans))

    # A stand-in pipeline whose output says which window made it, and which input it was given.
    hop, fps, sr, size = 256, 10.0, 16_000, 4
    calls = []

    def fake(task, *, seed, batch=None, video=None, audio=None, **kw):
        k = seed // CUT_SEED_STRIDE
        n = video.shape[0] if video is not None else audio.shape[0] if audio is not None else batch
        calls.append((task, k, video, audio))
        frame = (k + 1) / 10 + 1e-3 * torch.arange(18.0).view(1, 1, 18, 1, 1)     # window k, frame f in it
        sample = (k + 1) / 10 + 1e-5 * (torch.arange(112.0 * hop) % 1000)          # window k, sample s in it
        return SimpleNamespace(pixels=frame.expand(n, 3, 18, size, size), waveform=sample.expand(n, -1))

    class FakePipe:
        mel = SimpleNamespace(hop_length=hop)
        config = SimpleNamespace(fps=fps, sample_rate=sr)

        def __call__(self, *args, **kwargs):
            return fake(*args, **kwargs)

    pipe = FakePipe()
    layout = window_layout(72, 450, 18, 112, 6)
    pixels = torch.arange(72.0).view(1, 1, 72, 1, 1).expand(3, 3, 72, size, size).contiguous()
    waves = torch.arange(450.0 * hop).expand(3, -1).contiguous()
    settings = LongClipSettings(clips=3, batch=2, tasks=("v2a",), progress=False)
    for task in ("v2a", "a2v", "joint"):
        calls.clear()
        out_p, out_w, _ = _generate_cut(pipe, task, pixels, waves, settings, layout)
        assert len(calls) == 2 * len(layout.windows)                 # two batches per window
        for (lo, hi), k in zip(cut_spans(layout), range(len(layout.windows))):
            w = layout.windows[k]
            frame = (k + 1) / 10 + 1e-3 * torch.arange(lo - w.frame_start, hi - w.frame_start, dtype=torch.float32)
            assert torch.equal(out_p[:, :, lo:hi], frame.view(1, 1, -1, 1, 1).expand(3, 3, -1, size, size))
            s_lo = 0 if lo == 0 else round(lo / fps * sr)
            s_hi = out_w.shape[1] if hi == 72 else round(hi / fps * sr)
            a0 = w.audio_start * hop
            sample = (k + 1) / 10 + 1e-5 * (torch.arange(s_lo - a0, s_hi - a0, dtype=torch.float32) % 1000)
            assert torch.equal(out_w[:, s_lo:s_hi], sample.expand(3, -1))
        for t, k, video, audio in calls:
            w = layout.windows[k]
            if t == "v2a":
                assert video[0, 0, :, 0, 0].tolist() == list(range(w.frame_start, w.frame_stop))
            if t == "a2v":
                assert audio[0, 0] == w.audio_start * hop and audio.shape[1] == (w.audio_stop - w.audio_start) * hop


def test_cut_joins_mark_the_changes_of_window():
    from avfast.diffusion.windowed import window_layout
    from avfast.experiments.long_clips import cut_join_positions, cut_spans

    layout = window_layout(72, 450, 18, 112, 6)
    video, audio = cut_join_positions(layout, 10.0, 16_000, 256)
    cuts = [lo for lo, _ in cut_spans(layout)[1:]]
    assert video == [c - 1 for c in cuts]
    for c in cuts:                                   # 1.0 s = 62.5 columns: a cut inside column 62 marks 61 and 62
        col, inside = divmod(round(c / 10 * 16_000), 256)
        assert col - 1 in audio and ((col in audio) == bool(inside))
    assert len(audio) <= 2 * len(cuts)


def test_long_clip_doc_tables_are_the_committed_results():
    """docs/long-clips.md's tables are generated (`long_clips --report-only --docs`), never edited by hand."""
    import json
    from pathlib import Path

    from avfast._io import files_with_block
    from avfast.experiments.long_clips import DEFAULT_OUT, DOC_BLOCK, JSON_NAME, TABLE_NAME, doc_block, markdown

    root = Path(__file__).resolve().parents[1]
    results = json.loads((root / DEFAULT_OUT / JSON_NAME).read_text())
    assert (root / DEFAULT_OUT / TABLE_NAME).read_text() == markdown(results), \
        f"{DEFAULT_OUT}/{TABLE_NAME} is stale: run python -m avfast.experiments.long_clips --report-only"
    files = files_with_block(DOC_BLOCK, root)
    assert root / "docs" / "long-clips.md" in files, "docs/long-clips.md lost its <!-- long_clips:begin --> block"
    for path in files:
        assert DOC_BLOCK.search(path.read_text()).group(2) == doc_block(results), (
            f"{path.relative_to(root)}: long-clip tables are stale: run python -m avfast.experiments.long_clips "
            "--report-only --docs")


def test_docs_option_refuses_a_tree_without_the_block_before_any_work(tmp_path, monkeypatch, capsys):
    from avfast.experiments.long_clips import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("no block\n")
    assert main(["--docs", "--out", str(tmp_path / "o"), "--clips", "2"]) == 2
    assert "no <!-- long_clips:begin -->" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_paired_with_refuses_a_missing_or_unpaired_run_before_any_work(tmp_path, capsys):
    import json

    from avfast.experiments.long_clips import JSON_NAME, main

    assert main(["--paired-with", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--clips", "2"]) == 2
    assert f"--paired-with: no results at {tmp_path / 'nothing' / JSON_NAME}" in capsys.readouterr().err
    base = tmp_path / "base"
    base.mkdir()
    (base / JSON_NAME).write_text(json.dumps({"settings": {"clips": 48, "seconds": 7.2, "data_seed": 2,
                                                           "content": "scenes", "seed": 0}}))
    assert main(["--paired-with", str(base), "--out", str(tmp_path / "o"), "--clips", "2"]) == 2
    err = capsys.readouterr().err
    assert "its clips are not this run's (clips 48 against 2)" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()                              # refused before any sampling


def test_cli_summary_of_a_clip_shorter_than_a_window(folder, tmp_path, capsys):
    pytest.importorskip("av", reason="the CLI writes mp4 files")
    assert main(["--checkpoint", str(folder), "--seconds", "0.1", "--steps", "1", "--out", str(tmp_path / "o"),
                 "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "0.1 s: one window of 1 frame\n" in out and "overlapping" not in out
    assert "function evaluations of the whole clip" in out


def test_peak_regions_sorts_peaks_by_overlap_and_by_a_matching_onset():
    from avfast.experiments.long_clips import peak_regions

    layout = {"frames": 30, "windows": [[0, 18, 0, 112], [12, 30, 75, 187]]}   # overlap: frames 12..17
    regions = peak_regions([[0.5, 1.4, 1.7], [2.5]], [[1.42], [2.0]], layout, fps=10.0)
    assert regions["overlap"] == {"matched": 1, "unmatched": 1, "frames_per_clip": 6,
                                  "unmatched_per_second": pytest.approx(1 / 1.2)}
    assert (regions["single"]["matched"], regions["single"]["unmatched"]) == (0, 2)
    assert regions["single"]["unmatched_per_second"] == pytest.approx(2 / 4.8)  # 24 frames x 2 clips


def test_pooled_measures_of_the_report_come_from_the_event_counts():
    from avfast.experiments.long_clips import _pooled_summary

    one = [[1, 2, 1, 1]] * 4          # per clip: 1 of 2 onsets matched, its peak matched: score 0.5
    full = [[2, 2, 2, 2]] * 4         # every event matched: 1.0
    entry = {"long": {"av_align_counts": one}, "window": {"av_align_counts": full},
             "cut": {"av_align_counts": full}}
    out = _pooled_summary(entry, {"long": {"av_align_counts": full}, "window": {"av_align_counts": full}})
    assert out["pooled_long"]["mean"] == pytest.approx(0.5) and out["pooled_window"]["mean"] == 1.0
    assert out["pooled_vs_real_long"]["mean"] == pytest.approx(0.5)
    assert out["pooled_long_over_window"]["mean"] == pytest.approx(0.5)
    assert out["pooled_long_over_cut"]["mean"] == pytest.approx(0.5)


def test_balls_outside_windows_counts_what_a_window_shows_without_its_sound():
    from avfast.diffusion.windowed import window_layout
    from avfast.experiments.long_clips import balls_outside_windows

    layout = window_layout(30, round(30 * 6.25), 18, 112, 6)   # windows [0, 18) and [12, 30)
    spans = [[(0, 29, 5)],      # persistent ball, hit in window 0 only: shown in both -> window 1 lacks it
             [(13, 16, 15)],    # inside the overlap, hit there: both windows hear it
             [(2, 9, 25)]]      # hangs in window 0 only, falls in window 1 (a scene ball of a later hit)
    got = balls_outside_windows(spans, layout)
    assert got == {"pairs": 5, "hit_outside": 2, "share": pytest.approx(0.4)}
    one = window_layout(18, 112, 18, 112, 6)                  # the whole clip in one window
    assert balls_outside_windows(spans[:1], one)["hit_outside"] == 0
    assert balls_outside_windows([], layout)["share"] is None


def test_held_out_scenes_clips_give_each_ball_its_hit_inside_its_span(pipe):
    from avfast.experiments.long_clips import held_out_clips

    *_, kinds, _, spans = held_out_clips(pipe, 2.4, 4, data_seed=2, transient=True)
    assert len(spans) == 4 and any(spans)
    for clip_kinds, clip_spans in zip(kinds, spans):
        assert len(clip_spans) == clip_kinds.count("hit")
        assert all(lo <= hit <= hi for lo, hi, hit in clip_spans), clip_spans


def test_experiment_window_options_and_a_clip_in_one_window(folder, tmp_path):
    """--window samples the long clips with windows of its frames (here the whole clip: no joins, so no seams,
    and no cut row); --window-clips sizes the window rows on their own."""
    from avfast.experiments.long_clips import LongClipSettings, markdown, run

    settings = LongClipSettings(model=str(folder), clips=2, window_clips=3, seconds=1.2, window=12, tasks=("a2v",),
                                progress=False, steps=1, sampler="ddim", gamma=1.0)
    results = run(settings, tmp_path)
    assert results["layout"]["window_frames"] == 12 and len(results["layout"]["windows"]) == 1
    assert len(results["real"]["long"]["av_align"]) == 2 and len(results["real"]["window"]["av_align"]) == 3
    assert len(results["tasks"]["a2v"]["window"]["av_align"]) == 3 and "cut" not in results["tasks"]["a2v"]
    assert "seams" not in results["real"] and "seams_video" not in results["tasks"]["a2v"]["long"]
    table = markdown(results)
    assert "2 held-out clips per row (window rows 3)" in table and "1 window of 12 frames" in table
    assert "| real | — | — | — | — | — | — | " in table and "own 1.2 s" in table


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=0), r"--window must be an integer >= 1"),
    (dict(window=2.5), r"--window must be an integer >= 1"),
    (dict(window_clips=1), r"--window-clips must be an integer >= 2"),
])
def test_experiment_window_options_are_checked(kwargs, match):
    from avfast.experiments.long_clips import LongClipSettings

    with pytest.raises(ValueError, match=match):
        LongClipSettings(**kwargs)
