"""`avfast.Pipeline` on tiny random models: shapes, batching and seeds, conditions as tensors and files,
latent models through a frame autoencoder, the codecs on their own, and every refusal in one line."""
from __future__ import annotations

import re

import pytest
import torch

import avfast
from avfast import models
from avfast.data.autoencoder import TinyAutoencoder
from avfast.pipeline import Clip, Pipeline
from test_diffusion_analytic import one_thread  # noqa: F401

FRAMES, AUDIO_LENGTH, N = 4, 16, 16 * 256
MICRO = dict(frames=FRAMES, audio_length=AUDIO_LENGTH, base_channels=16, audio_base_channels=0, channel_mult=(1, 2),
             attention_levels=(1,), head_dim=16, norm_groups=8)


def _net(**overrides):
    from avfast.export import randomize_zero_layers_

    torch.manual_seed(0)
    return randomize_zero_layers_(models.create("tiny", **{**MICRO, **overrides}), seed=0).eval()  # non-zero outputs


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(_net(), progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixel_model")
    _net().save_pretrained(d)
    return d


def test_joint_clip_shapes_seeds_and_calls(pipe):
    clip = pipe("joint", steps=3, batch=2, seed=5)
    assert isinstance(clip, Clip) and len(clip) == 2 and clip.task == "joint" and clip.seeds == (5, 6)
    assert clip.pixels.shape == (2, 3, FRAMES, 32, 32) and clip.waveform.shape == (2, N)
    assert clip.pixels.dtype == clip.waveform.dtype == torch.float32
    assert float(clip.pixels.abs().max()) <= 1 and float(clip.waveform.abs().max()) <= 1
    assert (clip.fps, clip.sample_rate) == (10.0, 16000) and clip.duration == pytest.approx(0.4)
    assert clip.calls == 3 and clip.seconds > 0 and clip.audio_source == "griffin-lim"
    one = clip[1]
    assert len(one) == 1 and one.seeds == (6,) and torch.equal(one.pixels[0], clip.pixels[1])
    assert [c.seeds for c in clip] == [(5,), (6,)]


def test_same_seed_same_clip_whatever_the_batching(pipe):
    whole = pipe("joint", steps=2, batch=3, seed=1)
    again = pipe("joint", steps=2, batch=3, seed=1)
    assert torch.equal(whole.pixels, again.pixels) and torch.equal(whole.waveform, again.waveform)
    chunked = pipe("joint", steps=2, batch=3, seed=1, max_batch=2)
    assert chunked.calls == 4  # two sampler calls of 2 steps
    alone = pipe("joint", steps=2, seed=2)  # clip 1 of the batch is seed 1 + 1
    for other in (chunked, alone):
        i = 1 if other is chunked else 0
        torch.testing.assert_close(other.pixels[i], whole.pixels[1], atol=1e-5, rtol=0)
        # Griffin-Lim's phase comes from the clip's own seed, so the sound follows the clip, not the batch
        # (up to a few samples: its phase iteration magnifies the 1e-6 a batch size changes in the mel)
        close = (other.waveform[i] - whole.waveform[1]).abs() < 1e-3
        assert float(close.float().mean()) > 0.99
    other_seed = pipe("joint", steps=2, seed=9)
    assert not torch.equal(other_seed.pixels[0], alone.pixels[0])


def test_vocoder_phase_is_seeded(pipe):
    mel = pipe.encode_audio(0.3 * torch.sin(torch.arange(N) / 16000 * 2 * torch.pi * 330)[None])
    assert mel.shape == (1, 80, AUDIO_LENGTH)
    a, b, c = pipe.decode_audio(mel, seed=3), pipe.decode_audio(mel, seed=3), pipe.decode_audio(mel, seed=4)
    assert a.shape == (1, N) and torch.equal(a, b) and not torch.equal(a, c)
    both = pipe.decode_audio(torch.cat([mel, mel]), seed=3)  # clip i from seed + i
    assert torch.equal(both[0], a[0]) and torch.equal(both[1], c[0])


def test_conditions_as_tensors_batched_or_repeated(pipe):
    video = torch.rand(2, 3, FRAMES + 2, 32, 32) * 2 - 1  # longer than the model's clip: cut to FRAMES
    clip = pipe("v2a", video=video, steps=2, condition_mode="clean")
    assert len(clip) == 2 and torch.equal(clip.pixels, video[:, :, :FRAMES])  # the given video, returned
    wave = 0.2 * torch.randn(N + 100)
    clip = pipe("a2v", audio=wave, batch=3, steps=2, guidance=0.1)
    assert len(clip) == 3 and clip.audio_source == "input"
    assert all(torch.equal(w, wave[:N].clamp(-1, 1)) for w in clip.waveform)
    assert clip.pixels.shape == (3, 3, FRAMES, 32, 32)


def test_save_writes_an_mp4_with_sound_and_av_align_scores_it(pipe, tmp_path):
    pytest.importorskip("av", reason="writing mp4 needs PyAV (pip install \"avfast[media]\")")
    from avfast.data import read_video

    clip = pipe("joint", steps=2, batch=2)
    with pytest.raises(ValueError, match=re.escape("this holds 2 clips; call it on one (clip[i]")):
        clip.save(tmp_path / "both.mp4")
    path = clip[0].save(tmp_path / "one.mp4")
    back = read_video(path, fps=10, size=None)
    assert back.video.shape == (3, FRAMES, 32, 32) and back.audio is not None and back.audio.shape[0] > 0.8 * N
    assert [p.name for p in tmp_path.iterdir()] == ["one.mp4"]  # no temporary file left
    pytest.importorskip("cv2", reason="AV-Align's optical flow needs OpenCV (pip install \"avfast[media]\")")
    assert 0.0 <= clip[0].av_align().score <= 1.0


def test_from_a_folder_and_files_as_conditions(folder, tmp_path):
    pytest.importorskip("av", reason="reading mp4 needs PyAV (pip install \"avfast[media]\")")
    pytest.importorskip("soundfile", reason="reading wav needs soundfile (pip install \"avfast[media]\")")
    from avfast.data import save_audio

    p = Pipeline.from_pretrained(folder, progress=False)
    assert p.frame_size == 32 and p.num_samples == N and "vocoder griffin-lim" in repr(p)
    c, f, y, x = torch.meshgrid(torch.arange(3.0), torch.arange(FRAMES + 2.0), torch.arange(32.0), torch.arange(32.0),
                                indexing="ij")
    smooth = 0.6 * torch.sin(x / 5 + y / 7 + f + 2 * c)  # H.264 keeps it nearly intact
    wave = 0.3 * torch.sin(torch.arange(N + 2 * 1600) / 16000 * 2 * torch.pi * 440)
    Clip(smooth[None], wave[None], 10.0, 16000).save(tmp_path / "joint.mp4")
    v2a = p("v2a", video=tmp_path / "joint.mp4", steps=2)
    assert v2a.pixels.shape == (1, 3, FRAMES, 32, 32)
    assert float((v2a.pixels[0] - smooth[:, :FRAMES]).abs().mean()) < 0.06  # the file's frames, H.264 apart
    save_audio(tmp_path / "sound.wav", 0.2 * torch.sin(torch.arange(N) / 16000 * 2 * torch.pi * 220))
    for source in (tmp_path / "sound.wav", tmp_path / "joint.mp4"):  # a sound file, or a video's soundtrack
        assert p("a2v", audio=source, steps=2).waveform.shape == (1, N)


def test_latent_model_through_a_frame_autoencoder(tmp_path):
    net = _net(video_channels=4, height=4, width=4, video_space="latent", patch_size=1)
    with pytest.raises(ValueError, match="works on autoencoder latents"):
        Pipeline(net)
    ae = TinyAutoencoder(channels=8)
    p = Pipeline(net, autoencoder=ae, progress=False)
    assert p.frame_size == 32  # 4x4 latents, /8 autoencoder
    clip = p("joint", steps=2, batch=2)
    assert clip.pixels.shape == (2, 3, FRAMES, 32, 32)
    video = torch.rand(1, 3, FRAMES, 32, 32) * 2 - 1
    torch.testing.assert_close(p.encode_video(video), ae.encode(video))
    assert p.decode_video(p.encode_video(video)).shape == video.shape
    assert torch.equal(p("v2a", video=video, steps=2).pixels, video)


def test_latent_folder_loads_its_autoencoder_subfolder(tmp_path):
    frame_codec = pytest.importorskip("avfast.data.frame_codec", reason="avfast's frame codec is not in this tree")
    FrameCodec = frame_codec.FrameCodec

    net = _net(video_channels=4, height=8, width=8, video_space="latent", patch_size=1)
    net.save_pretrained(tmp_path)
    FrameCodec().save_pretrained(tmp_path / "autoencoder")
    p = Pipeline.from_pretrained(tmp_path, progress=False)
    assert isinstance(p.autoencoder, FrameCodec) and p.frame_size == 32
    assert p("joint", steps=1).pixels.shape == (1, 3, FRAMES, 32, 32)


def test_precision_and_runtime(folder):
    bf16 = Pipeline.from_pretrained(folder, precision="bf16", progress=False)
    fp32 = Pipeline.from_pretrained(folder, runtime="eager-reference", progress=False)
    a, b = bf16("joint", steps=2), fp32("joint", steps=2)
    assert a.pixels.shape == b.pixels.shape and bool(torch.isfinite(a.pixels).all())
    assert 0 < float((a.pixels - b.pixels).abs().max()) < 0.2  # bf16 arithmetic, not fp32 bits


def test_joint_in_passes_is_the_composed_conditional_calls(pipe):
    """refine=("a2v", "v2a"): the joint pass, then the video redrawn for its sound, then the sound for that
    video, pass k from fresh noise (seed + k * REFINE_SEED_STRIDE); equal to the sampler called three times."""
    from avfast.diffusion import sample
    from avfast.pipeline import REFINE_SEED_STRIDE

    kw = dict(steps=2, sampler="ddim", batch_size=2, condition_mode="clean", progress=False)
    v, a = sample(pipe.model, "joint", seed=4, **kw)
    v2, _ = sample(pipe.model, "a2v", condition=a, seed=4 + REFINE_SEED_STRIDE, **kw)
    _, a3 = sample(pipe.model, "v2a", condition=v2, seed=4 + 2 * REFINE_SEED_STRIDE, **kw)
    clip = pipe("joint", steps=2, sampler="ddim", batch=2, seed=4, refine=("a2v", "v2a"), condition_mode="clean")
    assert clip.calls == 3 * 2 and clip.passes == ("a2v", "v2a") and clip[1].passes == ("a2v", "v2a")
    torch.testing.assert_close(clip.pixels, pipe.decode_video(v2), rtol=0, atol=1e-6)
    torch.testing.assert_close(clip.waveform, pipe.decode_audio(a3, seed=4), rtol=0, atol=1e-6)
    assert not torch.allclose(pipe.decode_video(v), clip.pixels, atol=1e-3)  # the passes changed the clip
    one = pipe("joint", steps=2, sampler="ddim", seed=5, refine=("a2v", "v2a"), condition_mode="clean")
    torch.testing.assert_close(one.pixels[0], clip.pixels[1], rtol=0, atol=1e-5)  # clip i from seed + i

    plain = pipe("joint", steps=2, sampler="ddim", batch=2, seed=4)
    sound_redrawn = pipe("joint", steps=2, sampler="ddim", batch=2, seed=4, refine="v2a")
    assert torch.equal(sound_redrawn.pixels, plain.pixels)  # v2a keeps the joint video
    assert not torch.allclose(sound_redrawn.waveform, plain.waveform, atol=1e-3)
    assert sound_redrawn.calls == 2 * plain.calls


def test_joint_passes_default_to_the_models_own(tmp_path):
    """A config's joint_refine is what a joint call does unless refine= says otherwise; () is one pass."""
    net = _net()
    net.config = net.config.replace(joint_refine=("v2a",))
    refined = Pipeline(net, progress=False)
    own = refined("joint", steps=2, seed=1)
    assert own.calls == 2 * 2 and own.passes == ("v2a",)
    assert torch.equal(own.waveform, refined("joint", steps=2, seed=1, refine="v2a").waveform)
    alone = refined("joint", steps=2, seed=1, refine=())
    assert alone.calls == 2 and alone.passes == ()
    assert refined("v2a", video=own.pixels, steps=2).calls == 2  # conditional tasks are one pass
    net.save_pretrained(tmp_path)
    assert Pipeline.from_pretrained(tmp_path).config.joint_refine == ("v2a",)


def test_default_model_unavailable_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(models.DefaultModelUnavailable, match="no trained default model"):
        Pipeline.from_pretrained("default")


@pytest.mark.parametrize("call,error,message", [
    (lambda p: p("t2v"), ValueError, "`task` must be one of ('joint', 'v2a', 'a2v'), got 't2v'"),
    (lambda p: p("v2a"), ValueError, "task 'v2a' needs video= (a file or a tensor)"),
    (lambda p: p("joint", audio=torch.zeros(N)), ValueError, "task 'joint' takes no audio="),
    (lambda p: p("a2v", audio=torch.zeros(N), video=torch.zeros(3, FRAMES, 32, 32)), ValueError,
     "task 'a2v' takes no video= (it generates the video; the condition is audio=)"),
    (lambda p: p("a2v", audio=torch.zeros(N - 1)), ValueError, "the model needs 0.26 s"),
    (lambda p: p("a2v", audio=torch.full((N,), float("nan"))), ValueError, "NaN or infinite samples"),
    (lambda p: p("v2a", video=torch.zeros(3, FRAMES, 16, 16)), ValueError, "expected pixels [3, F, 32, 32]"),
    (lambda p: p("v2a", video=torch.zeros(3, FRAMES - 1, 32, 32)), ValueError, "the model needs 4"),
    (lambda p: p("a2v", audio=torch.zeros(2, N), batch=3), ValueError, "`batch` (3) disagrees with the 2 clips"),
    (lambda p: p("joint", batch=0), ValueError, "`batch` must be an int >= 1"),
    (lambda p: p("joint", seed=-1), ValueError, "`seed` must be an int >= 0"),
    (lambda p: p("joint", steps=0), ValueError, "`steps` must be an int in [1, 1000]"),
    (lambda p: p("joint", refine="joint"), ValueError, "`refine` passes must be 'v2a' or 'a2v', got 'joint'"),
    (lambda p: p("joint", refine=[1]), ValueError, "`refine` must be a task or a sequence of tasks"),
    (lambda p: p("v2a", video=torch.zeros(3, FRAMES, 32, 32), refine="v2a"), ValueError,
     "task 'v2a' already keeps its condition (use task='joint')"),
    (lambda p: p("a2v", audio="missing.wav"), FileNotFoundError, "missing.wav"),
    (lambda p: Pipeline.from_pretrained("/nonexistent/dir"), FileNotFoundError, "is not a folder"),
    (lambda p: Pipeline.from_pretrained("default", runtime="onnx"), ValueError, "runtime 'onnx' is not available"),
    (lambda p: Pipeline.from_pretrained("default", precision="int8"), ValueError, "cannot run precision 'int8'"),
    # a known runtime this machine cannot run (no TensorRT, or no CUDA GPU): the runtimes' own error, as documented
    (lambda p: Pipeline.from_pretrained("default", runtime="tensorrt", device="cpu"), avfast.runtime.RuntimeUnavailable,
     "runtime 'tensorrt' cannot run here"),
])
def test_bad_requests_are_named(pipe, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(pipe)


def test_top_level_names():
    assert avfast.Pipeline is Pipeline and avfast.Clip is Clip
