"""Waveform <-> 80-bin log-mel spectrogram, in pure torch (any device, batched).

Settings follow CMMD ("Feature Extraction"): 16 kHz audio, 80 mel bins, a 32 ms window
(512 samples) with 50 % overlap (16 ms hop, 256 samples).  Framing follows the official MelGAN code
(the paper's vocoder): reflect-pad by (n_fft - hop) / 2 on each side and do not centre, so a clip of
N samples gives N // hop frames -- 1.8 s (28 800 samples) gives exactly 80 x 112, and the vocoder,
which upsamples by the hop, turns 112 frames back into 112 * 256 samples.

The filterbank is the Slaney mel scale with Slaney area normalisation (librosa's default, which
MelGAN uses), computed here so torchaudio is not needed.  Log is log10 of magnitudes clamped at 1e-5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

SAMPLE_RATE = 16_000
N_MELS = 80
N_FFT = 512  # 32 ms at 16 kHz
HOP_LENGTH = 256  # 16 ms at 16 kHz
LOG_FLOOR = 1e-5


def _hz_to_mel_slaney(hz: torch.Tensor) -> torch.Tensor:
    # Linear below 1 kHz, logarithmic above (Slaney's Auditory Toolbox, as librosa htk=False).
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    lin = hz / f_sp
    log = min_log_mel + torch.log(torch.clamp(hz, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(hz >= min_log_hz, log, lin)


def _mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    lin = mel * f_sp
    log = min_log_hz * torch.exp(logstep * (mel - min_log_mel))
    return torch.where(mel >= min_log_mel, log, lin)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = 0.0,
    fmax: Optional[float] = None,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Slaney-normalised triangular mel filters, shape [n_mels, n_fft // 2 + 1] (matches librosa)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}, "
                         f"sample_rate={sample_rate}")
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_pts = torch.linspace(_hz_to_mel_slaney(torch.tensor(fmin, dtype=torch.float64)).item(),
                             _hz_to_mel_slaney(torch.tensor(fmax, dtype=torch.float64)).item(),
                             n_mels + 2, dtype=torch.float64)
    hz_pts = _mel_to_hz_slaney(mel_pts)
    fdiff = torch.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    enorm = 2.0 / (hz_pts[2:n_mels + 2] - hz_pts[:n_mels])  # Slaney: equal area per band
    weights = weights * enorm[:, None]
    return weights.to(dtype=dtype, device=device)


def _check_waveform(waveform: torch.Tensor, name: str = "waveform") -> torch.Tensor:
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [N] or [B, N], got {type(waveform).__name__}")
    if waveform.dim() not in (1, 2):
        raise ValueError(f"{name}: expected shape [N] or [B, N], got {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {waveform.dtype}")
    return waveform


@dataclass
class MelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    fmin: float = 0.0
    fmax: Optional[float] = None

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a clip of num_samples (MelGAN framing: num_samples // hop)."""
        pad = (self.n_fft - self.hop_length) // 2
        return 1 + (num_samples + 2 * pad - self.n_fft) // self.hop_length


class MelSpectrogram(torch.nn.Module):
    """waveform [N] or [B, N] (float, [-1, 1]) -> log10-mel [n_mels, T] or [B, n_mels, T].

    Keeps the window and filterbank as buffers so `.to(device)` moves them.
    """

    def __init__(self, config: Optional[MelConfig] = None):
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        self.register_buffer("mel_basis", mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax),
                             persistent=False)

    def magnitude(self, waveform: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude [B, n_fft//2+1, T] with MelGAN framing."""
        c = self.config
        pad = (c.n_fft - c.hop_length) // 2
        if waveform.shape[-1] <= pad:
            raise ValueError(f"waveform: need more than {pad} samples for reflect padding, "
                             f"got {waveform.shape[-1]}")
        x = F.pad(waveform.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                          window=self.window.to(x.dtype), center=False, return_complex=True)
        return spec.abs()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        waveform = _check_waveform(waveform)
        squeeze = waveform.dim() == 1
        x = waveform.unsqueeze(0) if squeeze else waveform
        mag = self.magnitude(x)
        mel = torch.matmul(self.mel_basis.to(mag.dtype), mag)
        logmel = torch.log10(torch.clamp(mel, min=LOG_FLOOR))
        return logmel.squeeze(0) if squeeze else logmel


_DEFAULT_MODULES: dict = {}


def waveform_to_mel(waveform: torch.Tensor, config: Optional[MelConfig] = None) -> torch.Tensor:
    """Functional form of MelSpectrogram; runs on waveform.device in waveform.dtype."""
    waveform = _check_waveform(waveform)
    key = (config or MelConfig(), waveform.device)
    key = (repr(key[0]), str(key[1]))
    module = _DEFAULT_MODULES.get(key)
    if module is None:
        module = MelSpectrogram(config).to(waveform.device)
        _DEFAULT_MODULES[key] = module
    return module(waveform)
