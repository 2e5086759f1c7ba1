"""`TemporalSpatialAttention`: the CMMD U-Net attention block as a drop-in module."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.attention import MODES, temporal_spatial_attention


class TemporalSpatialAttention(nn.Module):
    """x + proj_out(attention(qkv(GroupNorm(x)))) for video [B, C, F, H, W] or audio [B, C, T].

    The qkv projection is a 1x1 convolution, so its output is already the [B, 3C, ...] layout the
    fused op reads in place (no permute). `proj_out` is zero-initialised: a fresh block is the
    identity, as in the diffusion U-Nets CMMD builds on. `mode`: spatial, temporal or joint
    (audio always attends over T).
    """

    def __init__(self, channels: int, mode: str = "spatial", head_dim: int = 64, groups: int = 32,
                 video: bool = True) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"TemporalSpatialAttention: `mode` must be one of {', '.join(MODES)}, got {mode!r}")
        if channels % head_dim:
            raise ValueError(f"TemporalSpatialAttention: `channels` ({channels}) must be divisible by `head_dim` "
                             f"({head_dim})")
        if channels % groups:
            groups = next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)
        self.channels, self.mode, self.head_dim, self.video = channels, mode, head_dim, video
        conv = nn.Conv3d if video else nn.Conv1d
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = conv(channels, 3 * channels, kernel_size=1)
        self.proj_out = conv(channels, channels, kernel_size=1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = 5 if self.video else 3
        if x.dim() != want:
            layout = "[B, C, F, H, W]" if self.video else "[B, C, T]"
            raise ValueError(f"TemporalSpatialAttention: expected {want}-D input {layout}, got shape {list(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(f"TemporalSpatialAttention: this block was built for {self.channels} channels "
                             f"(dim 1), got {x.shape[1]} (input shape {list(x.shape)})")
        h = temporal_spatial_attention(self.qkv(self.norm(x)), self.mode, self.head_dim)
        return x + self.proj_out(h)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode!r}, head_dim={self.head_dim}, video={self.video}"
