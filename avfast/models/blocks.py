"""Building blocks of the joint U-Net: timestep embedding, 2D+1D video and 1D audio residual blocks,
resampling that works for any length (odd sizes included)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of float timesteps t [B] (the DDPM/ADM form)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(channels, groups)
    return nn.GroupNorm(g, channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters: a residual branch that starts as the identity (ADM's habit)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _expand(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, C] -> [B, C, 1, ...] with as many trailing singleton dims as `like` has after C."""
    return x.reshape(*x.shape, *([1] * (like.dim() - 2)))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, timestep scale-shift, GroupNorm-SiLU-dropout-conv, skip.

    video=True: the convs are per-frame 3x3 (Conv3d with kernel (1, 3, 3)), followed by a zero-initialised
    temporal conv over frames (kernel (3, 1, 1)) in its own residual branch: CMMD's 2D+1D block.
    video=False: 1D convs over audio time (kernel 3).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, video: bool, dropout: float = 0.0):
        super().__init__()
        self.video = video
        conv = nn.Conv3d if video else nn.Conv1d
        k, p = ((1, 3, 3), (0, 1, 1)) if video else (3, 1)
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = conv(in_ch, out_ch, k, padding=p)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_(conv(out_ch, out_ch, k, padding=p))
        self.skip = nn.Identity() if in_ch == out_ch else conv(in_ch, out_ch, 1)
        if video:
            self.norm_t = group_norm(out_ch, groups)
            self.conv_t = zero_(nn.Conv3d(out_ch, out_ch, (3, 1, 1), padding=(1, 0, 0)))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = _expand(self.emb(F.silu(emb)), h).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        h = self.skip(x) + h
        if self.video:
            h = h + self.conv_t(F.silu(self.norm_t(h)))
        return h


class Downsample(nn.Module):
    """Stride-2 conv: video halves H and W (frames kept), audio halves T. Odd sizes give ceil(n / 2)."""

    def __init__(self, ch: int, video: bool):
        super().__init__()
        self.conv = (nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if video
                     else nn.Conv1d(ch, ch, 3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then conv, cropped to the skip connection's size (so odd sizes round-trip)."""

    def __init__(self, ch: int, video: bool):
        super().__init__()
        self.video = video
        self.conv = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1)) if video else nn.Conv1d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        if self.video:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")[..., : size[-2], : size[-1]]
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")[..., : size[-1]]
        return self.conv(x)
