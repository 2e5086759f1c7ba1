"""How the video and audio branches exchange information, one layer per U-Net block.

easy             CMMD's easy fusion (CMMD Fig. 6): the fused resample+concat op, then a 1x1
                 projection back to each branch's width (zero-initialised, added as a residual).
cmcpe            Sony's CMC-PE (Sony baseline §3.3): a connector encodes the *other* modality's noisy input
                 (plus a self-conditioning x0 estimate when given) into time-indexed features, once per
                 forward; each block resamples them to its own time axis and adds them like a positional
                 encoding before its self-attention.
cross_attention  the conventional baseline: video tokens attend to audio tokens and vice versa.
none             two independent branches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.easy_fusion import easy_fusion
from .blocks import group_norm, zero_


_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")  # torch asks only these (meta has no autocast)


def common_dtype(v: torch.Tensor, a: torch.Tensor) -> torch.dtype:
    """The dtype both branches meet in: autocast's when it is on (residual adds promote to fp32 there)."""
    if v.device.type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(v.device.type):
        return torch.get_autocast_dtype(v.device.type)
    return torch.promote_types(v.dtype, a.dtype)


class EasyFusionLayer(nn.Module):
    def __init__(self, ch_v: int, ch_a: int):
        super().__init__()
        self.proj_v = zero_(nn.Conv3d(ch_v + ch_a, ch_v, 1))
        self.proj_a = zero_(nn.Conv1d(ch_a + ch_v, ch_a, 1))

    def forward(self, v: torch.Tensor, a: torch.Tensor, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        dt = common_dtype(v, a)
        vf, af = easy_fusion(v.to(dt), a.to(dt))
        return v + self.proj_v(vf), a + self.proj_a(af)


class CMCPEConnector(nn.Module):
    """Other-modality features for CMC-PE, computed once per forward from the raw inputs.

    video -> [B, dim, F]: mean over H, W of (v_t, x0_v), then two temporal convs and a GroupNorm;
    audio -> [B, dim, T]: (a_t, x0_a) (mel bins are the features), the same convs and norm.
    Missing self-conditioning estimates are zeros (as in self-conditioning's first pass).
    """

    def __init__(self, video_channels: int, mel_bins: int, dim: int, groups: int):
        super().__init__()
        self.from_video = nn.Sequential(nn.Conv1d(2 * video_channels, dim, 3, padding=1), nn.SiLU(),
                                        nn.Conv1d(dim, dim, 3, padding=1), group_norm(dim, groups))
        self.from_audio = nn.Sequential(nn.Conv1d(2 * mel_bins, dim, 3, padding=1), nn.SiLU(),
                                        nn.Conv1d(dim, dim, 3, padding=1), group_norm(dim, groups))

    def forward(self, v_t: torch.Tensor, a_t: torch.Tensor, self_cond: tuple | None) -> dict:
        x0_v, x0_a = self_cond if self_cond is not None else (None, None)
        x0_v = torch.zeros_like(v_t) if x0_v is None else x0_v.to(v_t.dtype)
        x0_a = torch.zeros_like(a_t) if x0_a is None else x0_a.to(a_t.dtype)
        pooled_v = torch.cat([v_t, x0_v], dim=1).mean(dim=(3, 4))
        return {"video_features": self.from_video(pooled_v),
                "audio_features": self.from_audio(torch.cat([a_t, x0_a], dim=1))}


class CMCPELayer(nn.Module):
    """Adds the other modality's connector features, resampled to this block's time axis."""

    def __init__(self, ch_v: int, ch_a: int, dim: int):
        super().__init__()
        self.to_v = zero_(nn.Conv1d(dim, ch_v, 1))
        self.to_a = zero_(nn.Conv1d(dim, ch_a, 1))

    def forward(self, v: torch.Tensor, a: torch.Tensor, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        pe_v = self.to_v(F.interpolate(ctx["audio_features"], size=v.shape[2], mode="nearest"))
        pe_a = self.to_a(F.interpolate(ctx["video_features"], size=a.shape[2], mode="nearest"))
        return v + pe_v[..., None, None].to(v.dtype), a + pe_a.to(a.dtype)


class CrossAttentionLayer(nn.Module):
    """Video tokens (F*H*W) attend to audio tokens (T) and audio tokens to video tokens; SDPA on the
    4-D [B, heads, N, D] layout; zero-initialised output projections."""

    def __init__(self, ch_v: int, ch_a: int, head_dim: int, groups: int):
        super().__init__()
        self.heads_v, self.heads_a, self.head_dim = max(1, ch_v // head_dim), max(1, ch_a // head_dim), head_dim
        self.norm_v, self.norm_a = group_norm(ch_v, groups), group_norm(ch_a, groups)
        dv, da = self.heads_v * head_dim, self.heads_a * head_dim
        self.q_v = nn.Conv1d(ch_v, dv, 1)
        self.kv_a = nn.Conv1d(ch_a, 2 * dv, 1)
        self.q_a = nn.Conv1d(ch_a, da, 1)
        self.kv_v = nn.Conv1d(ch_v, 2 * da, 1)
        self.out_v = zero_(nn.Conv1d(dv, ch_v, 1))
        self.out_a = zero_(nn.Conv1d(da, ch_a, 1))

    def _attend(self, q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
        """q [B, heads*D, Nq], kv [B, 2*heads*D, Nk] -> [B, heads*D, Nq]."""
        B, _, Nq = q.shape
        k, v = kv.chunk(2, dim=1)
        split = lambda x: x.reshape(B, heads, self.head_dim, x.shape[-1]).transpose(2, 3)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return o.transpose(2, 3).reshape(B, heads * self.head_dim, Nq)

    def forward(self, v: torch.Tensor, a: torch.Tensor, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        dt = common_dtype(v, a)
        B, C, Fr, H, W = v.shape
        hv = self.norm_v(v).reshape(B, C, Fr * H * W).to(dt)
        ha = self.norm_a(a).to(dt)
        ov = self._attend(self.q_v(hv), self.kv_a(ha), self.heads_v)
        oa = self._attend(self.q_a(ha), self.kv_v(hv), self.heads_a)
        return v + self.out_v(ov).reshape(B, C, Fr, H, W), a + self.out_a(oa)


class NoFusion(nn.Module):
    def forward(self, v: torch.Tensor, a: torch.Tensor, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return v, a


def make_fusion(kind: str, ch_v: int, ch_a: int, head_dim: int, groups: int, cmcpe_dim: int) -> nn.Module:
    if kind == "easy":
        return EasyFusionLayer(ch_v, ch_a)
    if kind == "cmcpe":
        return CMCPELayer(ch_v, ch_a, cmcpe_dim)
    if kind == "cross_attention":
        return CrossAttentionLayer(ch_v, ch_a, head_dim, groups)
    if kind == "none":
        return NoFusion()
    raise ValueError(f"fusion: expected one of easy, cmcpe, cross_attention, none; got {kind!r}")
