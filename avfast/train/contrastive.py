"""Batched positive/negative evaluation for the joint contrastive loss (CMMD Alg. 1).

Algorithm 1 needs the denoiser on three kinds of input pair: the positives (v_n, a_n), the video
negatives with their true audio (v¬_n, a_n) and the audio negatives with their true video
(v_n, a¬_n). Instead of three passes we stack them into one batch of G*B rows,

    [ positives | video-negative 1..Kv (+ true audio) | audio-negative 1..Ka (+ true video) ],

call the denoiser once (or in chunks of `chunk_size` rows) and hand back predictions grouped as
[G, B, ...], the layout `avfast.ops.contrastive_loss` takes (group 0 = positives, then Kv video
negatives, then Ka audio negatives).

Memory note: chunking bounds the peak of one forward pass, which is what matters under
`torch.no_grad()` (evaluation) and for activations that do not outlive the call; with autograd
every chunk's graph is kept until backward, so the saved-activation total is that of G*B rows.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GroupedPredictions(NamedTuple):
    video: torch.Tensor  # [G, B, ...]: group 0 positives, 1..Kv video negatives, then audio negatives
    audio: torch.Tensor  # [G, B, ...]
    num_video_negatives: int
    num_audio_negatives: int


def _negatives(name: str, neg: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if neg is None:
        return x.new_empty(0, *x.shape)
    if neg.dim() != x.dim() + 1 or neg.shape[1:] != x.shape:
        raise ValueError(f"evaluate_groups: `{name}` must have shape [K, {', '.join(map(str, x.shape))}] "
                         f"(K negatives of the positives' shape), got {list(neg.shape)}")
    return neg


def _timesteps(name: str, t: torch.Tensor, B: int) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(1).expand(B)
    if t.shape != (B,):
        raise ValueError(f"evaluate_groups: `{name}` must be a scalar or have shape [{B}], got {list(t.shape)}")
    return t


def stack_groups(v_t: torch.Tensor, a_t: torch.Tensor, v_neg_t: torch.Tensor | None = None,
                 a_neg_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's input batch [G*B, ...] for video and audio (see the module docstring)."""
    if v_t.shape[0] != a_t.shape[0]:
        raise ValueError(f"evaluate_groups: batch sizes must match, got `v_t` {v_t.shape[0]}, `a_t` {a_t.shape[0]}")
    vn = _negatives("v_neg_t", v_neg_t, v_t)
    an = _negatives("a_neg_t", a_neg_t, a_t)
    Kv, Ka = vn.shape[0], an.shape[0]
    v_all = torch.cat([v_t, vn.flatten(0, 1), v_t.expand(Ka, *v_t.shape).flatten(0, 1)])
    a_all = torch.cat([a_t, a_t.expand(Kv, *a_t.shape).flatten(0, 1), an.flatten(0, 1)])
    return v_all, a_all


def evaluate_groups(denoiser: Denoiser, v_t: torch.Tensor, a_t: torch.Tensor, t_v: torch.Tensor,
                    t_a: torch.Tensor, v_neg_t: torch.Tensor | None = None, a_neg_t: torch.Tensor | None = None,
                    chunk_size: int | None = None) -> GroupedPredictions:
    """Runs `denoiser(v, a, t_v, t_a) -> (v_pred, a_pred)` once on positives and negatives together.

    v_t [B, ...], a_t [B, ...]: the noised positives; v_neg_t [Kv, B, ...], a_neg_t [Ka, B, ...]: the
    noised negatives (same timestep as their positive, own noise, as in Alg. 1); t_v, t_a [B] (or
    scalars): per-modality timesteps, repeated for every group. chunk_size: at most this many rows
    per denoiser call (None: one call).
    """
    B = v_t.shape[0]
    v_all, a_all = stack_groups(v_t, a_t, v_neg_t, a_neg_t)
    G = v_all.shape[0] // B
    tv_all = _timesteps("t_v", t_v, B).repeat(G)
    ta_all = _timesteps("t_a", t_a, B).repeat(G)
    rows = G * B
    step = rows if chunk_size is None else int(chunk_size)
    if step < 1:
        raise ValueError(f"evaluate_groups: chunk_size must be >= 1 or None, got {chunk_size}")
    outs = [denoiser(v_all[s:s + step], a_all[s:s + step], tv_all[s:s + step], ta_all[s:s + step])
            for s in range(0, rows, step)]
    v_pred = outs[0][0] if len(outs) == 1 else torch.cat([o[0] for o in outs])
    a_pred = outs[0][1] if len(outs) == 1 else torch.cat([o[1] for o in outs])
    for name, pred, ref in (("video", v_pred, v_all), ("audio", a_pred, a_all)):
        if pred.shape[0] != rows:
            raise ValueError(f"evaluate_groups: the denoiser's {name} prediction must keep the batch of "
                             f"{rows} rows, got {list(pred.shape)} for input {list(ref.shape)}")
    Kv = 0 if v_neg_t is None else v_neg_t.shape[0]
    Ka = G - 1 - Kv
    return GroupedPredictions(v_pred.unflatten(0, (G, B)), a_pred.unflatten(0, (G, B)), Kv, Ka)
