import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV (avfast[media]) is needed for mp4 I/O")
sf = pytest.importorskip("soundfile", reason="soundfile (avfast[media]) is needed for wav I/O")

from avfast.data.synthetic import make_clip  # noqa: E402
from avfast.data.video import load_audio, read_video, save_audio, write_video  # noqa: E402


def test_mp4_round_trip_with_muxed_audio(tmp_path):
    clip = make_clip(duration=2.0, n_events=2, size=64, generator=1)
    path = tmp_path / "clip.mp4"
    write_video(path, clip.video, fps=10, audio=clip.audio)
    back = read_video(path, fps=10, size=64)
    assert back.video.shape == clip.video.shape and back.source_fps == pytest.approx(10)
    assert (back.video - clip.video).abs().mean() < 0.05  # H.264 at crf 18
    assert back.audio.shape == clip.audio.shape
    a, b = back.audio.numpy(), clip.audio.numpy()
    lags = range(-64, 65)
    corr = [np.dot(a[max(0, l):len(a) + min(0, l)], b[max(0, -l):len(b) - max(0, l)]) for l in lags]
    assert list(lags)[int(np.argmax(corr))] == 0  # AAC priming delay is compensated
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_resamples_30fps_to_10fps_and_centre_crops(tmp_path):
    frames = 30
    video = torch.empty(3, frames, 32, 48)
    for f in range(frames):
        video[:, f] = -1 + 2 * f / (frames - 1)  # brightness encodes the frame index
    video[:, :, :, :8] = 1.0  # side bands that the centre crop must remove
    video[:, :, :, -8:] = 1.0
    path = tmp_path / "fast.mp4"
    write_video(path, video, fps=30)
    clip = read_video(path, fps=10, size=16)
    assert clip.video.shape == (3, 10, 16, 16) and clip.audio is None
    picked = ((clip.video.mean(dim=(0, 2, 3)) + 1) / 2 * (frames - 1)).round()
    assert torch.allclose(picked, torch.arange(0, 30, 3).float(), atol=1.0)


def test_low_frame_rate_and_unreadable_files_raise_clear_errors(tmp_path):
    path = tmp_path / "slow.mp4"
    write_video(path, torch.zeros(3, 6, 16, 16), fps=5)
    with pytest.raises(ValueError, match="5 fps, below the requested 10"):
        read_video(path, fps=10)
    assert read_video(path, fps=10, allow_upsampling=True).video.shape[1] == 12
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="cannot read"):
        read_video(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_video(tmp_path / "absent.mp4")
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "odd.mp4", torch.zeros(3, 2, 15, 16))


def test_wav_rate_is_checked_and_resampling_is_opt_in(tmp_path):
    t = np.arange(44_100) / 44_100
    path = tmp_path / "cd.wav"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44_100)
    with pytest.raises(ValueError, match="44100 Hz, expected 16000 Hz"):
        load_audio(path)
    y = load_audio(path, resample=True)
    assert y.shape == (16_000,)
    spectrum = np.abs(np.fft.rfft(y.numpy()))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s long, so bin index = Hz
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....nonsense")
    with pytest.raises(ValueError, match="cannot read"):
        load_audio(garbage)


def test_wav_round_trip(tmp_path):
    wave = torch.linspace(-0.5, 0.5, 1600)
    save_audio(tmp_path / "a.wav", wave)
    torch.testing.assert_close(load_audio(tmp_path / "a.wav"), wave, atol=1e-4, rtol=0)
