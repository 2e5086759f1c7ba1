"""`JointUNet`: CMMD's joint video–audio denoiser (CMMD §2.1, Fig. 1, Table 4) on the fused ops.

    model(v_t [B, Cv, F, H, W], a_t [B, mel, T], t_v, t_a, labels=None) -> (v_pred, a_pred)   (v-prediction)

Two U-Nets of the same depth run side by side: video through 2D+1D residual blocks with
temporal-spatial attention, audio through 1D residual blocks with temporal attention. Every block
ends in a fusion layer (`ModelConfig.fusion`: easy fusion by default), so each branch sees the other at
every resolution. Each modality has its own timestep (the Sony baseline's timestep adjustment and clean
conditioning need that); both branches see both timesteps through their embeddings.

Any frame count and mel length work: downsampling rounds odd sizes up and upsampling crops back to
the skip connection's size, and easy fusion resamples between whatever F and T a level has.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..nn.attention import TemporalSpatialAttention
from ._validate import check_inputs
from .blocks import Downsample, ResBlock, Upsample, group_norm, timestep_embedding, zero_
from .config import ModelConfig
from .fusion import CMCPEConnector, make_fusion
from .weights import save_pretrained


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, C*p*p, F, ceil(H/p), ceil(W/p)] (zero-padded to whole patches)."""
    if p == 1:
        return x
    B, C, Fr, H, W = x.shape
    ph, pw = -H % p, -W % p
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    h, w = (H + ph) // p, (W + pw) // p
    x = x.reshape(B, C, Fr, h, p, w, p).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(B, C * p * p, Fr, h, w)


def unpatchify(x: torch.Tensor, p: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of patchify, cropped back to `size` = (H, W)."""
    if p == 1:
        return x
    B, Cpp, Fr, h, w = x.shape
    C = Cpp // (p * p)
    x = x.reshape(B, C, p, p, Fr, h, w).permute(0, 1, 4, 5, 2, 6, 3).reshape(B, C, Fr, h * p, w * p)
    return x[..., : size[0], : size[1]]


class JointBlock(nn.Module):
    """One U-Net block of both branches: residual blocks, attention, fusion."""

    def __init__(self, cfg: ModelConfig, in_v: int, in_a: int, out_v: int, out_a: int, emb_dim: int,
                 attention: bool):
        super().__init__()
        g = cfg.norm_groups
        self.res_v = ResBlock(in_v, out_v, emb_dim, g, video=True, dropout=cfg.dropout)
        self.res_a = ResBlock(in_a, out_a, emb_dim, g, video=False, dropout=cfg.dropout)
        self.attn_v = nn.ModuleList()
        self.attn_a = nn.ModuleList()
        if attention:
            modes = ("joint",) if cfg.attention_kind == "joint" else ("spatial", "temporal")
            for mode in modes:
                self.attn_v.append(TemporalSpatialAttention(out_v, mode, cfg.head_dim, g, video=True))
            self.attn_a.append(TemporalSpatialAttention(out_a, "joint", cfg.head_dim, g, video=False))
        self.fusion = make_fusion(cfg.fusion, out_v, out_a, cfg.head_dim, g, cfg.cmcpe_dim)
        self.fusion_first = cfg.fusion == "cmcpe"  # CMC-PE is a positional encoding: added before attention

    def forward(self, v, a, emb_v, emb_a, ctx):
        v, a = self.res_v(v, emb_v), self.res_a(a, emb_a)
        if self.fusion_first:
            v, a = self.fusion(v, a, ctx)
        for attn in self.attn_v:
            v = attn(v)
        for attn in self.attn_a:
            a = attn(a)
        if not self.fusion_first:
            v, a = self.fusion(v, a, ctx)
        return v, a


class JointUNet(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        C = cfg.base_channels
        emb_dim = 4 * C
        self.time_dim = C
        # Each branch embeds (own t, other t): it knows how noisy the other modality is (clean
        # conditioning, timestep adjustment), while its scale-shift follows its own noise level.
        self.time_v = nn.Sequential(nn.Linear(2 * C, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.time_a = nn.Sequential(nn.Linear(2 * C, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Label index num_classes is the learned null label (callers pass -1 for it).
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None
        self.connector = (CMCPEConnector(cfg.video_channels, cfg.mel_bins, cfg.cmcpe_dim, cfg.norm_groups)
                          if cfg.fusion == "cmcpe" else None)

        pv = cfg.video_channels * cfg.patch_size ** 2
        Ca0 = cfg.audio_base_channels or C
        self.stem_v = nn.Conv3d(pv, C, (1, 3, 3), padding=(0, 1, 1))
        self.stem_a = nn.Conv1d(cfg.mel_bins, Ca0, 3, padding=1)

        # Both branches follow the same multipliers; the audio branch may start wider
        # (audio_base_channels), so that neither branch is narrower than its own input.
        self.down = nn.ModuleList()
        self.down_v, self.down_a = nn.ModuleList(), nn.ModuleList()
        skips = [(C, Ca0)]
        cv, ca = C, Ca0
        for level, mult in enumerate(cfg.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(JointBlock(cfg, cv, ca, C * mult, Ca0 * mult, emb_dim, level in cfg.attention_levels))
                cv, ca = C * mult, Ca0 * mult
                skips.append((cv, ca))
            self.down.append(blocks)
            last = level == cfg.num_levels - 1
            self.down_v.append(nn.Identity() if last else Downsample(cv, video=True))
            self.down_a.append(nn.Identity() if last else Downsample(ca, video=False))
            if not last:
                skips.append((cv, ca))

        self.mid = nn.ModuleList([JointBlock(cfg, cv, ca, cv, ca, emb_dim, True),
                                  JointBlock(cfg, cv, ca, cv, ca, emb_dim, False)])

        self.up = nn.ModuleList()
        self.up_v, self.up_a = nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                sv, sa = skips.pop()
                blocks.append(JointBlock(cfg, cv + sv, ca + sa, C * mult, Ca0 * mult, emb_dim,
                                         level in cfg.attention_levels))
                cv, ca = C * mult, Ca0 * mult
            self.up.append(blocks)
            self.up_v.append(Upsample(cv, video=True) if level > 0 else nn.Identity())
            self.up_a.append(Upsample(ca, video=False) if level > 0 else nn.Identity())

        self.out_v = nn.Sequential(group_norm(cv, cfg.norm_groups), nn.SiLU(),
                                   zero_(nn.Conv3d(cv, pv, (1, 3, 3), padding=(0, 1, 1))))
        self.out_a = nn.Sequential(group_norm(ca, cfg.norm_groups), nn.SiLU(),
                                   zero_(nn.Conv1d(ca, cfg.mel_bins, 3, padding=1)))

    # ------------------------------------------------------------------ API
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def example_inputs(self, batch_size: int = 1, frames: int | None = None, audio_length: int | None = None,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                       generator: torch.Generator | None = None):
        """(v_t, a_t, t_v, t_a) of this model's shapes (or `frames`/`audio_length`), t = T/2."""
        cfg = self.config
        if device is None:
            p = next(self.parameters(), None)
            device = p.device if p is not None and p.device.type != "meta" else "cpu"
        F_ = cfg.frames if frames is None else int(frames)
        T = cfg.audio_length if audio_length is None else int(audio_length)
        gen_dev = generator.device if generator is not None else device
        v = torch.randn(batch_size, cfg.video_channels, F_, cfg.height, cfg.width, generator=generator,
                        device=gen_dev, dtype=dtype).to(device)
        a = torch.randn(batch_size, cfg.mel_bins, T, generator=generator, device=gen_dev, dtype=dtype).to(device)
        t = torch.full((batch_size,), cfg.num_train_steps / 2, device=device)
        return v, a, t, t.clone()

    def save_pretrained(self, directory, **kwargs) -> None:
        save_pretrained(self, directory, **kwargs)

    # ------------------------------------------------------------------ forward
    def _embed(self, t_v: torch.Tensor, t_a: torch.Tensor, labels: torch.Tensor | None):
        # Sinusoids in fp32 (t reaches 1000), then the MLP's own dtype (a model cast whole to fp16/bf16).
        dt = self.time_v[0].weight.dtype
        sv, sa = timestep_embedding(t_v, self.time_dim).to(dt), timestep_embedding(t_a, self.time_dim).to(dt)
        emb_v = self.time_v(torch.cat([sv, sa], dim=1))
        emb_a = self.time_a(torch.cat([sa, sv], dim=1))
        if self.label_emb is not None:
            B = t_v.shape[0]
            idx = torch.full((B,), self.config.num_classes, dtype=torch.long, device=t_v.device)
            if labels is not None:
                idx = torch.where(labels < 0, idx, labels.long())
            lab = self.label_emb(idx)
            emb_v, emb_a = emb_v + lab, emb_a + lab
        return emb_v, emb_a

    def _run(self, block: JointBlock, v, a, emb_v, emb_a, ctx):
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, v, a, emb_v, emb_a, ctx, use_reentrant=False)
        return block(v, a, emb_v, emb_a, ctx)

    def forward(self, v_t: torch.Tensor, a_t: torch.Tensor, t_v, t_a, labels: torch.Tensor | None = None,
                self_cond: tuple[torch.Tensor | None, torch.Tensor | None] | None = None):
        t_v, t_a, labels = check_inputs(self.config, v_t, a_t, t_v, t_a, labels, self_cond)
        emb_v, emb_a = self._embed(t_v, t_a, labels)
        ctx = self.connector(v_t, a_t, self_cond) if self.connector is not None else {}

        p = self.config.patch_size
        v, a = self.stem_v(patchify(v_t, p)), self.stem_a(a_t)
        hs_v, hs_a = [v], [a]
        for blocks, dv, da in zip(self.down, self.down_v, self.down_a):
            for block in blocks:
                v, a = self._run(block, v, a, emb_v, emb_a, ctx)
                hs_v.append(v)
                hs_a.append(a)
            if not isinstance(dv, nn.Identity):
                v, a = dv(v), da(a)
                hs_v.append(v)
                hs_a.append(a)
        for block in self.mid:
            v, a = self._run(block, v, a, emb_v, emb_a, ctx)
        for blocks, uv, ua in zip(self.up, self.up_v, self.up_a):
            for block in blocks:
                sv, sa = hs_v.pop(), hs_a.pop()
                v = torch.cat([v, sv.to(v.dtype)], dim=1)
                a = torch.cat([a, sa.to(a.dtype)], dim=1)
                v, a = self._run(block, v, a, emb_v, emb_a, ctx)
            if not isinstance(uv, nn.Identity):
                v, a = uv(v, hs_v[-1].shape), ua(a, hs_a[-1].shape)
        v = unpatchify(self.out_v(v), p, v_t.shape[-2:])
        return v.to(v_t.dtype), self.out_a(a).to(a_t.dtype)
