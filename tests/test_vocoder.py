import pytest
import torch

import torch.nn.functional as F

from avfast.data.mel import LOG_FLOOR, MelConfig, MelSpectrogram, waveform_to_mel
from avfast.data.vocoder import _overlap_add, MelGANGenerator, Vocoder, griffin_lim, load_melgan, num_parameters, save_melgan


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


def reference_griffin_lim(logmel, n_iter, phase, momentum=0.99, dtype=torch.float64):
    """The textbook fast Griffin-Lim in complex arithmetic with F.fold's overlap-add (the oracle in fp64)."""
    c = MelConfig()
    melspec = MelSpectrogram(c)
    mel = torch.pow(10.0, logmel.to(dtype))
    mel = torch.where(mel <= LOG_FLOOR * 1.0001, torch.zeros_like(mel), mel)
    mag = torch.clamp(torch.linalg.pinv(melspec.mel_basis.to(dtype)) @ mel, min=0.0)
    w, frames = melspec.window.to(dtype), mag.shape[-1]
    length = (frames - 1) * c.hop_length + c.n_fft

    def fold(x):
        return F.fold(x, output_size=(1, length), kernel_size=(1, c.n_fft), stride=(1, c.hop_length)).reshape(
            x.shape[0], length)

    norm = fold((w ** 2)[None, :, None].expand(1, c.n_fft, frames))
    norm = torch.where(norm > 1e-8, norm, torch.ones_like(norm))

    def istft(spec):
        return fold(torch.fft.irfft(spec, n=c.n_fft, dim=1) * w[None, :, None]) / norm

    angles = torch.polar(torch.ones_like(mag), 2 * torch.pi * phase.to(dtype))
    prev = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = torch.stft(istft(mag * angles), c.n_fft, c.hop_length, c.win_length, window=w, center=False,
                             return_complex=True)
        angles, prev = rebuilt - momentum / (1 + momentum) * prev, rebuilt
        angles = angles / angles.abs().clamp(min=1e-16)
    pad = (c.n_fft - c.hop_length) // 2
    return istft(mag * angles)[:, pad: pad + frames * c.hop_length]


@pytest.mark.parametrize("batch, columns", [(1, 112), (3, 37)])
def test_griffin_lim_matches_the_textbook_loop(batch, columns):
    """The planar loop (real ops, strided overlap-add, cached pinv) against the complex-arithmetic one:
    within fp32's own error of the fp64 oracle at 8 iterations. (Over 64 momentum iterations rounding
    differences grow chaotically, ~2x either way, so the long run is checked by the mel SNR above.)"""
    from _compare import assert_accurate

    g = torch.Generator().manual_seed(batch)
    t = torch.arange(columns * 256) / 16_000
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(batch, columns * 256, generator=g)
    mel = waveform_to_mel(wave)[..., :columns]
    phase = torch.rand(batch, 257, columns, generator=torch.Generator().manual_seed(0))
    got = griffin_lim(mel, n_iter=8, generator=torch.Generator().manual_seed(0))
    assert_accurate(got, reference_griffin_lim(mel, 8, phase),
                    reference_griffin_lim(mel, 8, phase, dtype=torch.float32), what="griffin_lim (8 iterations)")


@pytest.mark.parametrize("n_fft, hop, frames", [(1024, 256, 112), (16, 4, 1), (12, 5, 7)])
def test_overlap_add_equals_fold(n_fft, hop, frames):
    x = torch.randn(2, n_fft, frames)
    ref = F.fold(x, output_size=(1, (frames - 1) * hop + n_fft), kernel_size=(1, n_fft), stride=(1, hop)).reshape(2, -1)
    assert torch.equal(_overlap_add(x, hop), ref)  # the same terms in the same order: bit-equal


def test_vocoder_without_weights_warns_and_labels_fallback():
    with pytest.warns(RuntimeWarning, match="Griffin-Lim"):
        voc = Vocoder()
    assert voc.is_fallback and voc.method == "griffin-lim"
    assert voc(torch.full((2, 80, 10), -2.0)).shape == (2, 2560)


# ---- a seeded Griffin-Lim (issue 21, item 5) ------------------------------------------------------

def _fallback_vocoder(iters: int = 8) -> Vocoder:
    with pytest.warns(RuntimeWarning, match="Griffin-Lim"):
        return Vocoder(griffin_lim_iters=iters)


def test_vocoder_with_a_generator_is_deterministic_and_leaves_the_global_rng_alone():
    voc = _fallback_vocoder()
    mel = waveform_to_mel(0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(4096) / 16_000))
    state = torch.get_rng_state()
    a = voc(mel, generator=torch.Generator().manual_seed(7))
    torch.rand(100)  # the global RNG moving between calls must not matter
    b = voc(mel, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)
    c = voc(mel, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, voc(mel, generator=torch.Generator().manual_seed(8)))
    torch.set_rng_state(state)
    voc(mel, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)  # untouched by a seeded call
    torch.testing.assert_close(a, griffin_lim(mel, n_iter=8, generator=torch.Generator().manual_seed(7)),
                               rtol=0, atol=0)


def test_vocoder_without_a_generator_still_draws_from_the_global_rng():
    voc = _fallback_vocoder()
    mel = torch.full((80, 6), -1.0)
    torch.manual_seed(3)
    a = voc(mel)
    torch.manual_seed(3)
    assert torch.equal(a, voc(mel))
    assert not torch.equal(a, voc(mel))  # the global RNG moved on


def test_one_generator_per_batch_row_makes_rows_independent_of_the_batch():
    voc = _fallback_vocoder()
    mel = torch.stack([torch.full((80, 6), -1.0), torch.full((80, 6), -1.5)])
    rows = voc(mel, generator=[torch.Generator().manual_seed(s) for s in (10, 11)])
    for i, seed in enumerate((10, 11)):
        alone = voc(mel[i], generator=torch.Generator().manual_seed(seed))
        # Same starting phase; the batched matmuls round differently (measured 1.3e-6 at most).
        torch.testing.assert_close(rows[i], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("generator, message", [
    ([torch.Generator()], "a list of 2"),
    (5, "got int"),
    ([torch.Generator(), 3], "a list of 2"),
])
def test_a_bad_generator_is_a_value_error_naming_it(generator, message):
    voc = _fallback_vocoder()
    with pytest.raises(ValueError, match=f"generator: .*{message}"):
        voc(torch.full((2, 80, 4), -1.0), generator=generator)


def test_melgan_ignores_the_generator(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "melgan.safetensors"
    save_melgan(MelGANGenerator().eval(), str(path))
    voc = Vocoder(weights=str(path))
    mel = torch.randn(80, 5)
    assert torch.equal(voc(mel), voc(mel, generator=torch.Generator().manual_seed(1)))
