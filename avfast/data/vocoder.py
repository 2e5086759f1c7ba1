"""Log-mel -> waveform: the paper's MelGAN generator, or Griffin-Lim when no weights are given.

CMMD (Appendix F.1) uses the official MelGAN architecture (descriptinc/melgan-neurips,
ngf=32, 3 residual layers, upsampling 8x8x2x2 = 256 = our hop) retrained at 16 kHz on 80 mel bins:
about 4.27 M trainable parameters.  Weights load only from a local safetensors file: pickle-based
checkpoints can execute code, so they are refused.  Without weights, `Vocoder` falls back to
Griffin-Lim phase reconstruction, which is far lower quality; it warns and sets `is_fallback`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from .._state_dict import state_dict_problems
from .mel import LOG_FLOOR, MelConfig, MelSpectrogram


def _wn_conv(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.Conv1d(*args, **kwargs))


def _wn_conv_transpose(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class _ResnetBlock(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ReflectionPad1d(dilation),
            _wn_conv(dim, dim, kernel_size=3, dilation=dilation),
            nn.LeakyReLU(0.2),
            _wn_conv(dim, dim, kernel_size=1),
        )
        self.shortcut = _wn_conv(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class MelGANGenerator(nn.Module):
    """MelGAN generator (Kumar et al. 2019), layer for layer as the official code so its
    state-dict keys (model.N....) line up with converted official checkpoints.

    Input: log10-mel [B, n_mels, T]; output: waveform [B, 1, T * prod(ratios)] in [-1, 1].
    """

    def __init__(self, n_mels: int = 80, ngf: int = 32, n_residual_layers: int = 3,
                 ratios=(8, 8, 2, 2)):
        super().__init__()
        self.n_mels = n_mels
        self.hop_length = 1
        for r in ratios:
            self.hop_length *= r
        mult = 2 ** len(ratios)
        layers = [nn.ReflectionPad1d(3), _wn_conv(n_mels, mult * ngf, kernel_size=7)]
        for r in ratios:
            layers += [
                nn.LeakyReLU(0.2),
                _wn_conv_transpose(mult * ngf, mult * ngf // 2, kernel_size=r * 2, stride=r,
                                   padding=r // 2 + r % 2, output_padding=r % 2),
            ]
            layers += [_ResnetBlock(mult * ngf // 2, dilation=3 ** j) for j in range(n_residual_layers)]
            mult //= 2
        layers += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), _wn_conv(ngf, 1, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"mel: expected [B, {self.n_mels}, T], got {tuple(mel.shape)}")
        return self.model(mel)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _legacy_key(key: str) -> str:
    # Official checkpoints use torch.nn.utils.weight_norm names (weight_g / weight_v); we use the
    # parametrization API, whose names differ.  Accept both.
    if key.endswith(".weight_g"):
        return key[: -len(".weight_g")] + ".parametrizations.weight.original0"
    if key.endswith(".weight_v"):
        return key[: -len(".weight_v")] + ".parametrizations.weight.original1"
    return key


class WeightsMismatch(KeyError, ValueError):
    """A weights file that is not the module's state dict (a KeyError for old callers, a ValueError for
    programs: one line naming the file)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def load_melgan(path: str, n_mels: int = 80, map_location: str = "cpu") -> MelGANGenerator:
    """Build a MelGANGenerator and load weights from a local .safetensors file (strict). Anything else
    (a pickle, a torch.save file, a truncated file, another model's weights) is a ValueError naming the
    file; nothing is ever unpickled."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"vocoder weights: {path!r} is a folder, not a .safetensors file")
    if not str(path).endswith(".safetensors"):
        raise ValueError(f"vocoder weights: expected a local .safetensors file (pickle checkpoints are refused "
                         f"because loading them can run code), got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocoder weights: file not found: {path!r}")
    from safetensors.torch import load_file

    try:
        raw = load_file(path, device=map_location)
    except Exception as e:  # SafetensorError (truncated, not safetensors), OSError: one line naming the file
        raise ValueError(f"vocoder weights: {path!r} is not a readable .safetensors file "
                         f"({' '.join(str(e).split()) or type(e).__name__})") from None
    state = {_legacy_key(k): v for k, v in raw.items()}
    model = MelGANGenerator(n_mels=n_mels)
    expected = model.state_dict()
    if state and not set(state) & set(expected):
        raise WeightsMismatch(f"vocoder weights: {path!r} is not a MelGAN generator's weights: none of its "
                              f"{len(state)} tensors is one (it has e.g. {sorted(state)[0]})")
    problems = state_dict_problems(expected, state)
    if problems:
        raise WeightsMismatch(f"{path!r} is not a MelGAN generator ({n_mels} mels) state dict; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_melgan(model: MelGANGenerator, path: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """[B, n_fft, T] -> [B, (T-1)*hop + n_fft]: frame t added in at sample t*hop.

    Where hop divides n_fft (Griffin-Lim's n_fft / 4) this is n_fft / hop strided adds of [T, hop]
    blocks, the same sums as `F.fold` (bit-equal: each sample is a sum of the same terms in the same
    frame order) at a fraction of col2im's cost; otherwise `F.fold`."""
    B, n_fft, T = frames.shape
    if n_fft % hop:
        return F.fold(frames, output_size=(1, (T - 1) * hop + n_fft), kernel_size=(1, n_fft),
                      stride=(1, hop)).reshape(B, -1)
    k = n_fft // hop
    out = frames.new_zeros(B, T + k - 1, hop)
    blocks = frames.reshape(B, k, hop, T).transpose(2, 3)  # block j of frame t lands on hop-block t + j
    for j in range(k):
        out[:, j:j + T] += blocks[:, j]
    return out.reshape(B, -1)


def _ola_norm(frames: int, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """The squared window overlap-added over `frames` frames [1, (frames-1)*hop + n_fft], zeros replaced by 1:
    what an overlap-add inverse divides by. It depends only on the length, so Griffin-Lim computes it once."""
    norm = _overlap_add((window ** 2)[None, :, None].expand(1, n_fft, frames), hop)
    return torch.where(norm > 1e-8, norm, torch.ones_like(norm))


def _istft(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor,
           norm: torch.Tensor | None = None) -> torch.Tensor:
    """Overlap-add inverse of an uncentred STFT [B, F, T] -> [B, (T-1)*hop + n_fft].

    torch.istft(center=False) rejects a Hann window because the first sample has zero window
    weight (its NOLA check); here such samples are simply left at zero. `norm`: `_ola_norm` of the
    same length, when the caller has it already.
    """
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # [B, n_fft, T]
    norm = _ola_norm(spec.shape[-1], n_fft, hop, window) if norm is None else norm
    return _overlap_add(frames, hop) / norm


def _mel_pinv(config: MelConfig, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pinv(mel basis) [F, n_mels], window [n_fft]) of a mel config, cached: otherwise an SVD per call
    (~3 ms, a tenth of a clip's Griffin-Lim). Callers must not modify them."""
    return _mel_pinv_cached(dataclasses.astuple(config), dtype, device)


@functools.lru_cache(maxsize=8)
def _mel_pinv_cached(fields: tuple, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    melspec = MelSpectrogram(MelConfig(*fields)).to(device)
    return torch.linalg.pinv(melspec.mel_basis.to(dtype)), melspec.window.to(dtype)


Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def _initial_phase(shape: torch.Size, generator: Generators, dtype: torch.dtype) -> torch.Tensor:
    """Uniform [0, 1) phases of `shape` [B, F, T], drawn on the CPU (the same phases on any device).

    Why a generator: Griffin-Lim's output depends on its starting phase, so a clip is reproducible
    (and rows of an evaluation are paired) only when the phase comes from the sample's own seed, not
    from whatever the global RNG has been through.  One generator draws the whole batch at once; a
    list of B generators draws row b from generator b, so a row's starting phase does not depend on
    its batch (its audio then matches a one-row call to float rounding, as batched matmuls round
    differently; call once per row for bit-equal files).
    """
    if generator is None or isinstance(generator, torch.Generator):
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator: expected a CPU torch.Generator (phases are drawn on the CPU so "
                             f"that every device gets the same ones), got one on {generator.device}")
        return torch.rand(shape, generator=generator, dtype=dtype, device="cpu")
    if (not isinstance(generator, (list, tuple)) or len(generator) != shape[0]
            or not all(isinstance(g, torch.Generator) for g in generator)):
        got = f"{len(generator)} items" if isinstance(generator, (list, tuple)) else type(generator).__name__
        raise ValueError(f"generator: expected None, a torch.Generator or a list of {shape[0]} of them "
                         f"(one per batch row), got {got}")
    return torch.stack([_initial_phase(shape[1:], g, dtype) for g in generator])


def griffin_lim(logmel: torch.Tensor, config: Optional[MelConfig] = None, n_iter: int = 64,
                momentum: float = 0.99, generator: Generators = None) -> torch.Tensor:
    """Log10-mel [n_mels, T] or [B, n_mels, T] -> waveform [N] or [B, N] with N = T * hop.

    The linear magnitude is recovered by least squares through the mel filterbank (clamped >= 0),
    then phase by fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99 like torchaudio).  The
    starting phase comes from `generator` (a CPU torch.Generator, or one per batch row); with None
    it comes from the global RNG.  With a generator the output is deterministic and the global RNG
    is left untouched.
    """
    config = config or MelConfig()
    if logmel.dim() not in (2, 3) or logmel.shape[-2] != config.n_mels:
        raise ValueError(f"logmel: expected [{config.n_mels}, T] or [B, {config.n_mels}, T], "
                         f"got {tuple(logmel.shape)}")
    squeeze = logmel.dim() == 2
    logmel = logmel.unsqueeze(0) if squeeze else logmel
    dtype = torch.float32 if logmel.dtype in (torch.float16, torch.bfloat16) else logmel.dtype
    mel = torch.pow(10.0, logmel.to(dtype))
    mel = torch.where(mel <= LOG_FLOOR * 1.0001, torch.zeros_like(mel), mel)
    pinv, window = _mel_pinv(config, dtype, str(logmel.device))
    mag = torch.clamp(pinv @ mel, min=0.0)  # [B, F, T]

    c = config
    pad = (c.n_fft - c.hop_length) // 2
    frames = mag.shape[-1]
    phase = _initial_phase(mag.shape, generator, dtype).to(mag.device)
    angles = torch.polar(torch.ones_like(mag), 2 * torch.pi * phase)
    # The loop keeps the unit phasors planar, [2 (re, im), B, F, T]: complex tensors times real ones
    # promote (a copy per op) and |z| over an interleaved last dim of 2 is slow; planar, each update is
    # a few contiguous real ops (~2x faster overall; the same algorithm, float rounding apart).
    unit = torch.stack([angles.real, angles.imag])
    prev = torch.zeros_like(unit)
    norm = _ola_norm(frames, c.n_fft, c.hop_length, window)
    keep = momentum / (1 + momentum)

    def waveform(unit: torch.Tensor) -> torch.Tensor:
        return _istft(torch.complex(unit[0] * mag, unit[1] * mag), c.n_fft, c.hop_length, window, norm)

    for _ in range(n_iter):
        rebuilt = torch.stft(waveform(unit), c.n_fft, c.hop_length, c.win_length, window=window,
                             center=False, return_complex=True)
        rebuilt = torch.stack([rebuilt.real, rebuilt.imag])
        unit = torch.add(rebuilt, prev, alpha=-keep)  # fast Griffin-Lim: rebuilt - momentum' * previous
        prev = rebuilt
        unit = unit * torch.addcmul(unit[0] * unit[0], unit[1], unit[1]).clamp_(min=1e-32).rsqrt_()
    wav = waveform(unit)
    wav = wav[:, pad: pad + frames * c.hop_length].to(logmel.dtype)
    return wav.squeeze(0) if squeeze else wav


class Vocoder(nn.Module):
    """Log-mel -> waveform.  With `weights` (local .safetensors) it runs MelGAN; without, it warns
    and uses Griffin-Lim (`is_fallback` is True, `method` == "griffin-lim")."""

    def __init__(self, weights: Optional[str] = None, config: Optional[MelConfig] = None,
                 griffin_lim_iters: int = 64):
        super().__init__()
        self.config = config or MelConfig()
        self.griffin_lim_iters = griffin_lim_iters
        if weights is not None:
            self.generator = load_melgan(weights, n_mels=self.config.n_mels)
            if self.generator.hop_length != self.config.hop_length:
                raise ValueError(f"weights: MelGAN upsamples by {self.generator.hop_length}, but the mel "
                                 f"config hop is {self.config.hop_length}")
            self.is_fallback = False
            self.method = "melgan"
        else:
            warnings.warn("Vocoder: no MelGAN weights given; using Griffin-Lim, a much lower-quality "
                          "fallback (metallic, phasey audio). Pass weights='melgan.safetensors' for "
                          "paper-quality audio.", RuntimeWarning, stacklevel=2)
            self.generator = None
            self.is_fallback = True
            self.method = "griffin-lim"

    @torch.no_grad()
    def forward(self, logmel: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """[n_mels, T] or [B, n_mels, T] -> [N] or [B, N], N = T * hop.

        `generator` seeds Griffin-Lim's starting phase: pass torch.Generator().manual_seed(seed) with
        the sample's seed (or one generator per batch row) for the same audio every run; MelGAN is
        deterministic and ignores it.  None draws from the global RNG, as before.
        """
        if self.generator is None:
            return griffin_lim(logmel, self.config, n_iter=self.griffin_lim_iters, generator=generator)
        squeeze = logmel.dim() == 2
        x = logmel.unsqueeze(0) if squeeze else logmel
        wav = self.generator(x.to(next(self.generator.parameters()).dtype)).squeeze(1)
        return wav.squeeze(0) if squeeze else wav

