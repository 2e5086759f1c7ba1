"""What `avfast.Pipeline` takes as a condition and how `Clip` is written and shown, on a tiny random model:
uint8 / int16 data mapped to [-1, 1] and data on another scale refused, numpy arrays, still images, sound
read from a video's or an m4a's audio track alone, an unavailable device, `Clip.save` paths and suffixes,
and a short `repr(clip)`."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from avfast.pipeline import Clip, Pipeline
from test_diffusion_analytic import one_thread  # noqa: F401
from test_pipeline import FRAMES, N, _net

SIZE = 32   # test_pipeline's model: 4 frames of 32x32, N samples of sound


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(_net(), progress=False)


def _video(frames: int = FRAMES) -> torch.Tensor:
    return torch.rand(3, frames, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8


def _sound(samples: int = N) -> torch.Tensor:
    return 0.3 * torch.sin(torch.arange(samples) / 16000 * 2 * torch.pi * 330)


# ------------------------------------------------------------------ 1. value ranges and dtypes
def test_uint8_video_is_read_as_0_to_255(pipe):
    frames = torch.randint(0, 256, (3, FRAMES, SIZE, SIZE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    frames[0, 0, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)
    clip = pipe("v2a", video=frames, steps=1)
    torch.testing.assert_close(clip.pixels[0], frames.float() / 127.5 - 1)
    assert float(clip.pixels.min()) == -1.0 and float(clip.pixels.max()) == 1.0


def test_video_on_another_scale_is_refused(pipe):
    scaled = (_video() + 1) * 127.5            # 0..255 held in floats
    scaled[0, 0, 0, :2] = torch.tensor([0.0, 255.0])
    with pytest.raises(ValueError, match=re.escape("video: the video tensor holds values in [0, 255]; expected "
                                                   "floats in [-1, 1] (for 0..255 pixels pass x / 127.5 - 1")):
        pipe("v2a", video=scaled, steps=1)
    for dtype in (torch.int64, torch.bool):
        with pytest.raises(TypeError, match=re.escape(f"expected float pixels in [-1, 1] or uint8 pixels in 0..255, "
                                                      f"got {dtype}")):
            pipe("v2a", video=torch.zeros(3, FRAMES, SIZE, SIZE, dtype=dtype), steps=1)


def test_small_overshoot_is_taken_and_clamped(pipe):
    video = _video()
    video[0, 0, 0, 0] = 1.2                    # a codec's overshoot, not another scale
    clip = pipe("v2a", video=video, steps=1)
    assert float(clip.pixels.max()) == 1.0 and torch.equal(clip.pixels[0, :, 1:], video[:, 1:])


def test_int16_audio_is_pcm_and_other_scales_are_refused(pipe):
    pcm = (_sound() * 32767).round().to(torch.int16)
    pcm[:2] = torch.tensor([-9830, 9830])      # 0.3 of full scale
    clip = pipe("a2v", audio=pcm, steps=1)
    torch.testing.assert_close(clip.waveform[0], pcm.float() / 32768)
    with pytest.raises(ValueError, match=re.escape("audio: the audio tensor holds values in [-9830, 9830]; expected "
                                                   "floats in [-1, 1] (for 16-bit PCM values pass x / 32768")):
        pipe("a2v", audio=pcm.float(), steps=1)
    with pytest.raises(TypeError, match=re.escape("audio: expected a float waveform in [-1, 1] or int16 PCM samples, "
                                                  "got torch.int32")):
        pipe("a2v", audio=pcm.to(torch.int32), steps=1)
    with pytest.raises(ValueError, match=re.escape("audio: expected a waveform [N] or [B, N], got [1, 1, 4096]")):
        pipe("a2v", audio=_sound()[None, None], steps=1)


# ------------------------------------------------------------------ 2. numpy arrays
def test_numpy_arrays_are_conditions_like_tensors(pipe):
    video = _video()
    from_numpy = pipe("v2a", video=video.numpy().astype(np.float64), steps=1, seed=3)
    from_tensor = pipe("v2a", video=video, steps=1, seed=3)
    assert torch.equal(from_numpy.pixels, from_tensor.pixels) and torch.equal(from_numpy.waveform, from_tensor.waveform)
    frames = np.random.default_rng(0).integers(0, 256, (3, FRAMES, SIZE, SIZE), dtype=np.uint8)[:, ::-1]
    torch.testing.assert_close(pipe("v2a", video=frames, steps=1).pixels[0],           # negative strides too
                               torch.from_numpy(frames.copy()).float() / 127.5 - 1)
    sound = _sound().numpy()
    assert torch.equal(pipe("a2v", audio=sound, steps=1).waveform[0], torch.from_numpy(sound))
    with pytest.raises(ValueError, match=r"audio: the audio tensor holds values in \[-32768, 32767\]"):
        pipe("a2v", audio=np.concatenate([[-32768.0, 32767.0], sound[2:] * 32767]), steps=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="v2a", video=[[0.0]]), "video: expected a torch.Tensor, a numpy array or a file path, got list"),
    (dict(task="a2v", audio=0.5), "audio: expected a torch.Tensor, a numpy array or a file path, got float"),
    (dict(task="a2v", audio=np.array(["a", "b"])), "audio: expected a numeric numpy array, got dtype <U1"),
])
def test_other_condition_types_are_refused(pipe, kwargs, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        pipe(steps=1, **kwargs)


# ------------------------------------------------------------------ 3. still images and very short videos
def test_a_still_image_or_a_clip_shorter_than_a_frame_is_refused(pipe, tmp_path):
    pytest.importorskip("av", reason="reading video files needs PyAV (pip install \"avfast[media]\")")
    from avfast.data.video import write_video

    write_video(tmp_path / "blink.mp4", _video(1), fps=25)    # one frame of 0.04 s
    still = tmp_path / "still.png"
    pil = pytest.importorskip("PIL.Image", reason="writing a png needs Pillow")
    pil.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(still)
    for path in (tmp_path / "blink.mp4", still):
        with pytest.raises(ValueError, match=re.escape(f"video: {str(path)!r} is 0.04 s long, shorter than one "
                                                       f"frame at 10 fps")):
            pipe("v2a", video=path, steps=1)


# ------------------------------------------------------------------ 4. a2v reads the audio track alone
def _write_m4a(path, sound: torch.Tensor) -> None:
    """An audio-only AAC file (no video track), as phones and music players write them."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(sound.numpy().reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in (*stream.encode(frame), *stream.encode()):
            container.mux(packet)


def test_a2v_reads_only_the_audio_track(pipe, tmp_path):
    pytest.importorskip("av", reason="mp4/m4a files need PyAV (pip install \"avfast[media]\")")
    pytest.importorskip("soundfile", reason="wav files need soundfile (pip install \"avfast[media]\")")
    from avfast.data.video import read_audio_stream, save_audio, write_video

    sound = _sound(N + 1600)
    write_video(tmp_path / "slow.mp4", _video(6), fps=5, audio=sound)     # 5 fps: below the model's 10
    _write_m4a(tmp_path / "voice.m4a", sound)
    save_audio(tmp_path / "sound.wav", sound)
    write_video(tmp_path / "silent.mp4", _video(6), fps=10)
    for name in ("slow.mp4", "voice.m4a", "sound.wav"):
        clip = pipe("a2v", audio=tmp_path / name, steps=1)
        assert clip.waveform.shape == (1, N)
        assert float(np.corrcoef(clip.waveform[0].numpy(), sound[:N].numpy())[0, 1]) > 0.9, name   # the file's sound, in sync
    # AAC pads its last frame to 1024 samples; the track's own duration cuts the padding off
    assert read_audio_stream(tmp_path / "voice.m4a").shape == sound.shape
    with pytest.raises(ValueError, match=re.escape(f"audio: {str(tmp_path / 'silent.mp4')!r} has no audio stream")):
        pipe("a2v", audio=tmp_path / "silent.mp4", steps=1)


# ------------------------------------------------------------------ 5. the device
def test_a_device_this_torch_lacks_is_named(monkeypatch, tmp_path):
    _net().save_pretrained(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)      # a CPU-only torch, wherever this runs
    with pytest.raises(ValueError, match=re.escape("`device` cuda: torch sees no CUDA device here")) as e:
        Pipeline.from_pretrained(tmp_path, device="cuda")
    assert str(e.value).endswith("use device='cpu'") and "--device" not in str(e.value)   # Python, not the CLI
    with pytest.raises(ValueError, match=re.escape("`device`: 'gpu' is not a device name; use cpu or cuda")):
        Pipeline.from_pretrained(tmp_path, device="gpu")
    assert Pipeline.from_pretrained(tmp_path, device="cpu", progress=False).device == torch.device("cpu")


def test_channels_last_stereo_is_named_not_read_as_many_short_clips(pipe):
    stereo = _sound()[:, None].repeat(1, 2)                 # [N, 2], as soundfile reads a stereo file
    with pytest.raises(ValueError, match=re.escape(f"expected a mono waveform [N] or clips [B, N], got "
                                                   f"[{N}, 2]: samples x channels")):
        pipe("a2v", audio=stereo, steps=1)
    assert pipe("a2v", audio=stereo.mean(-1), steps=1).pixels.shape[0] == 1     # the advice works


def test_bad_values_are_one_error_before_any_distilled_warning(tmp_path):
    import warnings

    _net(distilled_steps=2, distilled_sampler="ddim").save_pretrained(tmp_path)
    student = Pipeline.from_pretrained(tmp_path, progress=False)
    for kwargs, message in [({"gamma": 0}, "`gamma`"), ({"sampler": "foo"}, "`sampler` must be one of"),
                            ({"spacing": "foo"}, "`spacing` must be one of")]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # a warning first would raise here instead
            with pytest.raises(ValueError, match=re.escape(message)):
                student("joint", **kwargs)


def test_an_autoencoder_folder_of_neither_kind_is_named_before_any_loader(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")          # half of a diffusers folder
    with pytest.raises(ValueError, match=re.escape("is neither avfast's frame codec (config.json + model.safetensors) "
                                                   "nor a Stable Diffusion VAE")) as e:
        Pipeline(_net(), autoencoder=tmp_path / "vae", progress=False)
    assert "it holds config.json" in str(e.value)
    with pytest.raises(FileNotFoundError, match="is not there; expected the autoencoder's folder"):
        Pipeline(_net(), autoencoder=tmp_path / "nowhere", progress=False)


def test_eta_without_a_sampler_samples_with_ddim(pipe):
    clip = pipe("joint", steps=2, eta=0.5)          # the default dpmpp2m takes no eta: ddim, not an error
    assert clip.sampler == "ddim"
    assert pipe("joint", steps=2).sampler == "dpmpp2m"


def test_fp16_on_the_cpu_warns_that_it_is_slow():
    with pytest.warns(UserWarning, match="no fast fp16 kernels"):
        Pipeline(_net(), precision="fp16", progress=False)


def test_a_long_clip_that_cannot_fit_is_refused_before_any_work(pipe, monkeypatch):
    import avfast._memory
    from avfast._memory import TooLarge, long_clip_bytes
    from avfast.models.memory import windows_peak_bytes

    per_second = long_clip_bytes(pipe.config, 1.0, SIZE)
    # The model's share: 8 windows in flight (the default window_batch) of the model's own shape.
    windows = windows_peak_bytes(pipe.config, pipe.config.frames, pipe.config.audio_length, 8)
    assert 0 < windows < 50 * per_second
    monkeypatch.setattr(avfast._memory, "available_bytes", lambda device: int(200 * per_second))
    monkeypatch.setattr(Pipeline, "denoiser", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(TooLarge, match=re.escape("`seconds` 1e+09: a clip that long needs about")) as e:
        pipe("joint", seconds=1e9)
    assert f"the longest that fits is about {int((100 * per_second - windows) / per_second)} s" in str(e.value)
    assert "GiB for the windows in flight" in str(e.value)
    with pytest.raises(TooLarge, match=re.escape("`seconds` 60: 2 clips that long need about")):
        pipe("joint", seconds=60, batch=2)              # 120 s of clips against 100 s of budget
    with pytest.raises(TooLarge, match=r"needs about \d\.\de\+\d+ GiB") as e:
        pipe("joint", seconds=1e300)                    # a short figure, not 300 digits
    assert len(str(e.value)) < 400


def test_a_long_clip_counts_the_windows_in_flight(pipe, monkeypatch):
    """A long clip's model memory grows with the window and the windows per call (window_batch), not with the
    duration: the same clip that fits one window at a time is refused, before any work, at eight."""
    import avfast._memory
    from avfast._memory import TooLarge, long_clip_bytes
    from avfast.models.memory import windows_peak_bytes

    cfg = pipe.config
    own, eight = (windows_peak_bytes(cfg, cfg.frames, cfg.audio_length, n) for n in (1, 8))
    assert eight > 1.5 * own                                            # the weights are most of one window's
    assert windows_peak_bytes(cfg, 4 * cfg.frames, 4 * cfg.audio_length, 1) > 1.3 * own   # a longer window
    from avfast.models.memory import model_peak_bytes                   # the cached estimate is the estimate
    assert eight == model_peak_bytes(cfg.replace(), 8) and own == model_peak_bytes(cfg, 1)
    seconds = 10 * cfg.frames / cfg.fps                                 # ten of the model's windows long
    half = long_clip_bytes(cfg, seconds, SIZE) + (own + eight) // 2     # the clip and one window, not eight
    monkeypatch.setattr(avfast._memory, "available_bytes", lambda device: int(2 * half))

    class Started(Exception):
        pass

    def denoiser(*args, **kwargs):
        raise Started
    monkeypatch.setattr(Pipeline, "denoiser", denoiser)
    with pytest.raises(TooLarge, match=r"GiB for the windows in flight\).*shorter windows or fewer windows per "
                                       r"call need less"):
        pipe("joint", seconds=seconds, window_batch=8)
    with pytest.raises(Started):                                        # past the check: sampling starts
        pipe("joint", seconds=seconds, window_batch=1)


# ------------------------------------------------------------------ 6. Clip.save
def _clip() -> Clip:
    return Clip(_video()[None], _sound()[None], 10.0, 16000)


def test_save_makes_missing_folders(tmp_path):
    pytest.importorskip("av", reason="writing mp4 needs PyAV (pip install \"avfast[media]\")")
    from avfast.data import read_video

    path = _clip().save(tmp_path / "new" / "deeper" / "clip.mp4")
    assert path == tmp_path / "new" / "deeper" / "clip.mp4"
    assert read_video(path, fps=10, size=None).video.shape == (3, FRAMES, SIZE, SIZE)
    assert [p.name for p in path.parent.iterdir()] == ["clip.mp4"]     # no temporary file left


def test_save_wav_writes_the_sound_alone(tmp_path):
    pytest.importorskip("soundfile", reason="writing wav needs soundfile (pip install \"avfast[media]\")")
    from avfast.data import load_audio

    clip = _clip()
    path = clip.save(tmp_path / "out" / "sound.wav")
    torch.testing.assert_close(load_audio(path), clip.waveform[0], atol=1 / 32768, rtol=0)   # 16-bit PCM
    assert [p.name for p in path.parent.iterdir()] == ["sound.wav"]


@pytest.mark.parametrize("name", ["clip.avi", "clip", "clip.mp3"])
def test_save_refuses_other_suffixes(tmp_path, name):
    with pytest.raises(ValueError, match=re.escape(f"Clip.save: {str(tmp_path / name)!r} must end in .mp4 (the "
                                                   f"video with its sound) or .wav (the sound alone)")):
        _clip().save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 7. repr
def test_repr_is_short_and_names_the_clip(pipe):
    clip = pipe("joint", steps=1, batch=2, seed=4)
    text = repr(clip)
    assert text.startswith("Clip(task='joint', pixels [2, 3, 4, 32, 32] float32, waveform [2, 4096] float32, "
                           "0.40 s at 10 fps and 16000 Hz, seeds=(4, 5), sampler='dpmpp2m', steps=1, gamma=1, calls=1")
    assert "tensor(" not in text and "\n" not in text and len(text) < 400
