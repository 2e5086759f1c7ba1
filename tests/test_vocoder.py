import pytest
import torch

from avfast.data.mel import waveform_to_mel
from avfast.data.vocoder import MelGANGenerator, Vocoder, griffin_lim, load_melgan, num_parameters, save_melgan


def test_melgan_matches_paper_size_and_hop():
    g = MelGANGenerator()
    assert abs(num_parameters(g) - 4.27e6) / 4.27e6 < 0.005  # paper: 4.27 M
    with torch.no_grad():
        assert g(torch.randn(1, 80, 112)).shape == (1, 1, 112 * 256)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    g = MelGANGenerator().eval()
    path = tmp_path / "melgan.safetensors"
    save_melgan(g, str(path))
    voc = Vocoder(weights=str(path))
    assert not voc.is_fallback and voc.method == "melgan"
    mel = torch.randn(80, 20)
    with torch.no_grad():
        torch.testing.assert_close(voc(mel), g(mel[None])[0, 0])


def test_official_weight_norm_key_names_are_accepted(tmp_path):
    from safetensors.torch import save_file
    g = MelGANGenerator().eval()
    legacy = {k.replace(".parametrizations.weight.original0", ".weight_g")
              .replace(".parametrizations.weight.original1", ".weight_v"): v.contiguous()
              for k, v in g.state_dict().items()}
    assert any(k.endswith(".weight_g") for k in legacy)
    save_file(legacy, str(tmp_path / "legacy.safetensors"))
    loaded = load_melgan(str(tmp_path / "legacy.safetensors"))
    mel = torch.randn(1, 80, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel), g(mel))


def test_wrong_state_dict_names_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in MelGANGenerator().state_dict().items()}
    state.pop("model.1.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(KeyError, match=r"missing tensors: model\.1\.bias.*unexpected tensors: extra\.weight"):
        load_melgan(str(tmp_path / "bad.safetensors"))


def test_pickle_checkpoints_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        load_melgan(str(tmp_path / "melgan.pt"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_melgan(str(tmp_path / "absent.safetensors"))


def _mel_snr_db(reference_logmel, wave):
    ref, got = 10 ** reference_logmel, 10 ** waveform_to_mel(wave)
    return float(10 * torch.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()))


def test_griffin_lim_round_trip_mel_snr():
    g = torch.Generator().manual_seed(1)
    t = torch.arange(28_800) / 16_000
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.2 * torch.sin(2 * torch.pi * 1250 * t) * (t > 0.5)
    wave = wave + 0.05 * torch.randn(28_800, generator=g)
    mel = waveform_to_mel(wave)
    rebuilt = griffin_lim(mel, n_iter=64, generator=torch.Generator().manual_seed(0))
    assert rebuilt.shape == (112 * 256,)
    # 64 iterations reach ~24 dB mel-SNR; random phase (0 iterations) gives ~7 dB, so 15 dB separates them.
    assert _mel_snr_db(mel, rebuilt) > 15
    assert _mel_snr_db(mel, griffin_lim(mel, n_iter=0, generator=torch.Generator().manual_seed(0))) < 10


def test_vocoder_without_weights_warns_and_labels_fallback():
    with pytest.warns(RuntimeWarning, match="Griffin-Lim"):
        voc = Vocoder()
    assert voc.is_fallback and voc.method == "griffin-lim"
    assert voc(torch.full((2, 80, 10), -2.0)).shape == (2, 2560)
