"""Negative samples for CMMD's joint contrastive loss (paper §2.2 "Creating Negative Samples", Alg. 1).

Three ways to break the audio-visual correspondence of a positive pair, for either modality:

* ``shift``        a circular temporal shift by 200-400 ms (video: 2-4 frames at 10 fps; audio: the
                   same duration in its own frames, 13-25 mel frames at 62.5 frames/s), either sign;
* ``segment_swap`` a random split point k; the negative is cat(partner[:k], self[k:]) or
                   cat(self[:k], partner[k:]) with ``partner`` another sample of the batch;
* ``swap``         another sample of the batch.

Every method is one gather: negative[k, b, t] = x[src_sample[k, b, t], src_time[k, b, t]]. The
method, shift, partner and split are drawn per (negative, sample) from a ``torch.Generator``, so a
step builds all its negatives with one ``index_select`` and no Python loop over samples; the same
generator state gives the same negatives. Each step draws the method of each negative at random from
the enabled ones (the paper's "random subset of negatives per step").

Why a circular shift fills the vacated frames: zero padding or edge replication would leave a
silent / frozen stretch that tells a negative apart by itself (a shortcut the model could learn
instead of synchrony), while rolling keeps every frame of the clip, so the negative has exactly the
content statistics of the positive and differs only in timing. The wrap-around seam is the same kind
of cut that segment_swap makes on purpose.

Guarantees: a shift is never zero (its magnitude is at least one step and below the sequence
length, so it cannot wrap to the identity); swap partners are never the sample itself
(partner = (b + U{1..B-1}) mod B); a segment split leaves at least one step from each side.
With B == 1 there is no partner: swap-based methods raise a clear error unless
``single_sample="shift"`` asks to use shifts only for such batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

METHODS = ("shift", "segment_swap", "swap")
SHIFT, SEGMENT_SWAP, SWAP = 0, 1, 2  # method codes in NegativePlan.method


@dataclass(frozen=True)
class NegativeConfig:
    """What negatives a step draws. Defaults follow the paper's CMMD setup."""

    methods: tuple[str, ...] = METHODS
    num_video: int = 1                 # video negatives per positive (each paired with its true audio)
    num_audio: int = 1                 # audio negatives per positive (each paired with its true video)
    shift_seconds: tuple[float, float] = (0.2, 0.4)
    video_rate: float = 10.0           # video frames per second
    audio_rate: float = 62.5           # audio (mel) frames per second: 16 kHz with a 16 ms hop
    video_time_dim: int = 2            # [B, C, F, H, W]
    audio_time_dim: int = -1           # [B, n_mels, T] or [B, 1, n_mels, T]
    single_sample: str = "error"       # B == 1 with swap-based methods: "error" or "shift"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("NegativeConfig.methods must name at least one method, got ()")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"NegativeConfig.methods: expected names from {METHODS}, got {m!r}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"NegativeConfig.methods has duplicates: {self.methods}")
        if self.num_video < 0 or self.num_audio < 0:
            raise ValueError(f"NegativeConfig: num_video/num_audio must be >= 0, got {self.num_video}, {self.num_audio}")
        lo, hi = self.shift_seconds
        if not 0 < lo <= hi:
            raise ValueError(f"NegativeConfig.shift_seconds must satisfy 0 < lo <= hi, got {self.shift_seconds}")
        if self.video_rate <= 0 or self.audio_rate <= 0:
            raise ValueError(f"NegativeConfig: rates must be > 0, got video {self.video_rate}, audio {self.audio_rate}")
        if self.single_sample not in ("error", "shift"):
            raise ValueError(f"NegativeConfig.single_sample must be 'error' or 'shift', got {self.single_sample!r}")


def shift_steps(seconds: tuple[float, float], rate: float) -> tuple[int, int]:
    """The whole-step shifts [lo, hi] whose duration lies within `seconds` at `rate` steps/s."""
    lo = max(1, math.ceil(seconds[0] * rate - 1e-9))
    hi = math.floor(seconds[1] * rate + 1e-9)
    if lo > hi:
        raise ValueError(f"no whole-step shift lies in {seconds} s at {rate} steps/s; widen shift_seconds")
    return lo, hi


class NegativePlan(NamedTuple):
    """What was drawn for K negatives of B samples (all [K, B], int64, on the data's device)."""

    method: torch.Tensor   # SHIFT, SEGMENT_SWAP or SWAP
    shift: torch.Tensor    # signed shift in steps (SHIFT rows; 0 elsewhere)
    partner: torch.Tensor  # the other sample (swap-based rows; the sample itself elsewhere)
    split: torch.Tensor    # split point k in [1, T-1] (SEGMENT_SWAP rows; 0 elsewhere)
    partner_left: torch.Tensor  # bool: SEGMENT_SWAP takes partner[:k] (True) or partner[k:] (False)

    def source(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(src_sample, src_time), each [K, B, T]: negative[k, b, t] = x[src_sample, src_time]."""
        K, B = self.method.shape
        t = torch.arange(T, device=self.method.device).view(1, 1, T)
        own = torch.arange(B, device=self.method.device).view(1, B, 1).expand(K, B, T)
        m = self.method[..., None]
        src_time = torch.where(m == SHIFT, (t - self.shift[..., None]) % T, t.expand(K, B, T))
        left = t < self.split[..., None]
        from_partner = (m == SWAP) | ((m == SEGMENT_SWAP) & (left == self.partner_left[..., None]))
        src_sample = torch.where(from_partner, self.partner[..., None].expand(K, B, T), own)
        return src_sample, src_time


def draw_plan(K: int, B: int, T: int, rate: float, cfg: NegativeConfig, generator: torch.Generator | None,
              device: torch.device | str = "cpu", what: str = "x") -> NegativePlan:
    """Draws methods, shifts, partners and splits for K negatives of each of B samples of length T."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    codes = [METHODS.index(m) for m in cfg.methods]
    if K == 0:
        empty = torch.zeros(0, B, dtype=torch.long, device=device)
        return NegativePlan(empty, empty, empty, empty, empty.bool())
    if B == 1:
        swap_based = [c for c in codes if c != SHIFT]
        if swap_based and cfg.single_sample == "error":
            raise ValueError(
                f"negatives for `{what}`: methods {cfg.methods} include swap-based ones, which need another "
                f"sample of the batch, but the batch has B = 1; use B >= 2, methods=('shift',), or "
                f"single_sample='shift'")
        codes = [SHIFT]
    if SHIFT in codes:
        lo, hi = shift_steps(cfg.shift_seconds, rate)
        if hi >= T:
            raise ValueError(f"negatives for `{what}`: a shift of up to {hi} steps (from shift_seconds="
                             f"{cfg.shift_seconds} at {rate} steps/s) needs a sequence longer than {hi} steps, got T = {T}")
    if SEGMENT_SWAP in codes and T < 2:
        raise ValueError(f"negatives for `{what}`: segment_swap needs T >= 2 steps, got T = {T}")

    def randint(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (K, B), generator=generator, device=gdev)

    method = torch.tensor(codes, device=gdev)[randint(0, len(codes))]
    own = torch.arange(B, device=gdev).expand(K, B)
    partner = (own + randint(1, B)) % B if B > 1 else own.clone()
    if SHIFT in codes:
        sign = randint(0, 2) * 2 - 1
        shift = sign * randint(lo, hi + 1)
    else:
        shift = torch.zeros(K, B, dtype=torch.long, device=gdev)
    split = randint(1, T) if T > 1 else torch.zeros(K, B, dtype=torch.long, device=gdev)
    partner_left = randint(0, 2).bool()

    is_shift = method == SHIFT
    plan = NegativePlan(
        method=method,
        shift=torch.where(is_shift, shift, 0),
        partner=torch.where(is_shift, own, partner),
        split=torch.where(method == SEGMENT_SWAP, split, 0),
        partner_left=partner_left & (method == SEGMENT_SWAP),
    )
    return NegativePlan(*(p.to(device) for p in plan))


def apply_plan(x: torch.Tensor, plan: NegativePlan, time_dim: int) -> torch.Tensor:
    """The negatives [K, B, *x.shape[1:]] (contiguous) of `x` [B, ...] along `time_dim` under `plan`."""
    td = time_dim % x.dim()
    if td == 0:
        raise ValueError(f"time_dim must not be the batch dimension (0), got {time_dim}")
    K = plan.method.shape[0]
    xt = x.movedim(td, 1)
    B, T = xt.shape[0], xt.shape[1]
    src_sample, src_time = plan.source(T)
    rows = xt.reshape(B * T, -1).index_select(0, (src_sample * T + src_time).reshape(-1))
    out = rows.reshape(K, B, T, *xt.shape[2:]).movedim(2, td + 1)
    return out.contiguous()


class Negatives(NamedTuple):
    video: torch.Tensor        # [Kv, B, *video.shape[1:]]
    audio: torch.Tensor        # [Ka, B, *audio.shape[1:]]
    video_plan: NegativePlan
    audio_plan: NegativePlan


def make_negatives(video: torch.Tensor, audio: torch.Tensor, cfg: NegativeConfig = NegativeConfig(),
                   generator: torch.Generator | None = None) -> Negatives:
    """Draws cfg.num_video video negatives and cfg.num_audio audio negatives of a paired batch.

    `video` [B, ...] with time at cfg.video_time_dim and `audio` [B, ...] with time at
    cfg.audio_time_dim (clean x0, or latents: shifting commutes with the per-frame encoder).
    """
    if video.shape[0] != audio.shape[0]:
        raise ValueError(f"make_negatives: batch sizes must match, got video {video.shape[0]}, audio {audio.shape[0]}")
    B = video.shape[0]
    Tv = video.shape[cfg.video_time_dim]
    Ta = audio.shape[cfg.audio_time_dim]
    vplan = draw_plan(cfg.num_video, B, Tv, cfg.video_rate, cfg, generator, video.device, "video")
    aplan = draw_plan(cfg.num_audio, B, Ta, cfg.audio_rate, cfg, generator, audio.device, "audio")
    return Negatives(apply_plan(video, vplan, cfg.video_time_dim), apply_plan(audio, aplan, cfg.audio_time_dim),
                     vplan, aplan)
