"""Issue 24 diagnosis, kept as a regression test: a long clip's windows are bookkept exactly.

An identity denoiser over the windows of a real-valued long clip gives the clip back unchanged (the fusion
weights are normalised and every position reaches the output), and in a2v with a clean condition every
window sees exactly the mel columns of its own seconds: the columns of the window's own waveform (the
mel front end's reflect padding aside, which touches the first and last columns of a window only).
"""
from __future__ import annotations

import torch

from avfast.diffusion.sampling import sample
from avfast.diffusion.windowed import HOP_LENGTH, audio_columns_for_seconds, frames_for_seconds, windowed


class _Config:
    video_shape, audio_shape, fps, sample_rate, num_train_steps = (2, 18, 4, 4), (80, 112), 10.0, 16000, 1000


class Identity:
    """Returns its input (a 'denoiser' whose v-prediction is x_t) and records what each window saw."""

    config = _Config()

    def __init__(self):
        self.seen_a, self.seen_t_a = [], []

    def __call__(self, v, a, t_v, t_a, labels=None):
        self.seen_a.append(a.clone())
        self.seen_t_a.append(t_a.clone())
        return v.clone(), a.clone()


def _long_clip(seconds=7.2, B=2):
    from avfast.data.mel import MelConfig, waveform_to_mel

    cfg = _Config()
    frames, columns = frames_for_seconds(cfg, seconds), audio_columns_for_seconds(cfg, seconds)
    g = torch.Generator().manual_seed(3)
    wave = torch.randn(B, columns * HOP_LENGTH, generator=g) * torch.linspace(0.05, 0.5, columns * HOP_LENGTH)
    mel = waveform_to_mel(wave, MelConfig(sample_rate=16000, n_mels=80))
    video = torch.randn(B, 2, frames, 4, 4, generator=g)
    return video, wave, mel


def test_identity_denoiser_returns_a_long_clip_unchanged():
    video, _, mel = _long_clip()
    den = windowed(Identity(), video.shape[2], audio_length=mel.shape[2])
    assert len(den.layout.windows) == 6
    pv, pa = den(video, mel, torch.full((2,), 999.0), torch.full((2,), 999.0))
    torch.testing.assert_close(pv, video, rtol=0, atol=1e-5)
    torch.testing.assert_close(pa, mel, rtol=0, atol=1e-5)


def test_a2v_windows_see_exactly_the_audio_of_their_own_seconds():
    from avfast.data.mel import MelConfig, waveform_to_mel

    video, wave, mel = _long_clip()
    model = Identity()
    den = windowed(model, video.shape[2], audio_length=mel.shape[2], max_batch=1)
    sample(den, task="a2v", condition=mel, condition_mode="clean", steps=2, sampler="ddim", batch_size=2,
           progress=False)
    L = den.layout
    assert len(model.seen_a) == 2 * len(L.windows)
    for call, (seen, t_a) in enumerate(zip(model.seen_a, model.seen_t_a)):
        w = L.windows[call % len(L.windows)]
        assert bool((t_a == 0).all())                                   # the condition is clean in every window
        torch.testing.assert_close(seen, mel[:, :, w.audio_start:w.audio_stop], rtol=0, atol=0)
        (v0, v1), (a0, a1) = L.seconds(w)
        assert abs(v0 - a0) <= 0.5 * HOP_LENGTH / 16000 + 1e-9           # same seconds, within half a column
        own = waveform_to_mel(wave[:, w.audio_start * HOP_LENGTH:w.audio_stop * HOP_LENGTH],
                              MelConfig(sample_rate=16000, n_mels=80))
        torch.testing.assert_close(own[..., 2:-2], seen[..., 2:-2], rtol=0, atol=1e-5)
