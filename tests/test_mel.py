import pytest
import torch

from avfast.data.mel import MelConfig, MelSpectrogram, mel_filterbank, waveform_to_mel


def test_paper_clip_gives_80_by_112():
    wave = torch.randn(28_800) * 0.1  # 1.8 s at 16 kHz
    assert waveform_to_mel(wave).shape == (80, 112)
    assert waveform_to_mel(torch.randn(3, 28_800)).shape == (3, 80, 112)
    assert MelConfig().num_frames(28_800) == 112
    assert MelConfig().num_frames(57_600) == 225  # 3.6 s: 36 frames at test time


def test_batched_equals_single_and_float64_works():
    wave = torch.randn(2, 16_000, dtype=torch.float64)
    batched = waveform_to_mel(wave)
    assert batched.dtype == torch.float64
    torch.testing.assert_close(batched[1], waveform_to_mel(wave[1]))


def test_sine_energy_lands_in_the_right_band():
    t = torch.arange(16_000) / 16_000
    mel = waveform_to_mel(torch.sin(2 * torch.pi * 1000 * t))
    fb = mel_filterbank()
    expected_band = int(fb[:, round(1000 / 16_000 * 512)].argmax())
    assert abs(int(mel.mean(dim=1).argmax()) - expected_band) <= 1


def test_matches_librosa():
    librosa = pytest.importorskip("librosa", reason="librosa is the reference for the mel filterbank")
    import numpy as np
    ref_fb = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=80)
    np.testing.assert_allclose(mel_filterbank().numpy(), ref_fb, atol=1e-7)
    y = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    padded = np.pad(y, (128, 128), mode="reflect")
    ref = librosa.feature.melspectrogram(y=padded, sr=16_000, n_fft=512, hop_length=256, center=False,
                                         power=1.0, n_mels=80)
    ours = 10 ** MelSpectrogram()(torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, np.maximum(ref, 1e-5), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("bad, err", [(torch.zeros(1, 2, 100), ValueError), (torch.zeros(1000, dtype=torch.int16), TypeError)])
def test_bad_waveform_errors_name_the_argument(bad, err):
    with pytest.raises(err, match="waveform"):
        waveform_to_mel(bad)
