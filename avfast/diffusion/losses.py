"""Training side of the joint diffusion: timestep draws, noisy inputs and the joint v-loss.

    L = E[ w_v · mean((v̂_v - v_v)²) + w_a · mean((v̂_a - v_a)²) ]        (CMMD Eq. 2, weighted)

`avfast.ops.contrastive_loss` with eta = 0 and one group computes the same value (its `positive`
row); this composite is the plain form for the non-contrastive (nCMMD) stage.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .schedule import CosineSchedule, q_sample, v_from_x0_eps


def sample_timesteps(batch_size: int, schedule: CosineSchedule, generator: torch.Generator | None = None,
                     independent: bool = False, clean_prob: float = 0.0,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_v, t_a), float32 [B] of uniform integers in [1, T].

    independent: draw the two modalities' timesteps independently (the Sony baseline paper, Eq. 9); else both
        modalities share one timestep per sample (CMMD).
    clean_prob: probability per sample that one modality (video or audio, even odds) is given at
        t = 0, i.e. clean, so the model learns to take a clean condition (`condition_mode="clean"`
        in `avfast.sample`). That modality's loss term is then dropped by `joint_v_loss`.
    Draws happen on the generator's device and move to `device` (default: the generator's).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"sample_timesteps: `batch_size` must be an int >= 1, got {batch_size!r}")
    if not 0.0 <= clean_prob <= 1.0:
        raise ValueError(f"sample_timesteps: `clean_prob` must be in [0, 1], got {clean_prob!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    T = schedule.num_steps
    t_v = torch.randint(1, T + 1, (batch_size,), generator=generator, device=gen_device)
    t_a = torch.randint(1, T + 1, (batch_size,), generator=generator, device=gen_device) if independent else t_v.clone()
    if clean_prob > 0:
        clean = torch.rand(batch_size, generator=generator, device=gen_device) < clean_prob
        video_clean = torch.rand(batch_size, generator=generator, device=gen_device) < 0.5
        t_v = torch.where(clean & video_clean, 0, t_v)
        t_a = torch.where(clean & ~video_clean, 0, t_a)
    out = device if device is not None else gen_device
    return t_v.to(out, torch.float32), t_a.to(out, torch.float32)


class NoisyBatch(NamedTuple):
    v_t: torch.Tensor       # noisy video, the denoiser's input
    a_t: torch.Tensor       # noisy audio
    t_v: torch.Tensor       # [B] float timesteps
    t_a: torch.Tensor
    target_v: torch.Tensor  # velocity targets
    target_a: torch.Tensor


def noisy_batch(v0: torch.Tensor, a0: torch.Tensor, schedule: CosineSchedule, t_v: torch.Tensor,
                t_a: torch.Tensor, noise_v: torch.Tensor | None = None, noise_a: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> NoisyBatch:
    """Forward-noise clean (v0, a0) to (t_v, t_a) and return the denoiser's inputs with the v targets.

    Noise is drawn with `generator` unless given. At t = 0 the input is x0 and the target is ε
    (v's formula); `joint_v_loss(..., t_v=, t_a=)` ignores those terms.
    """
    if v0.shape[0] != a0.shape[0]:
        raise ValueError(f"noisy_batch: `v0` and `a0` must have the same batch size, got {v0.shape[0]} and {a0.shape[0]}")
    if noise_v is None:
        noise_v = torch.randn(v0.shape, generator=generator, dtype=v0.dtype, device=v0.device)
    if noise_a is None:
        noise_a = torch.randn(a0.shape, generator=generator, dtype=a0.dtype, device=a0.device)
    return NoisyBatch(q_sample(v0, t_v, noise_v, schedule), q_sample(a0, t_a, noise_a, schedule), t_v, t_a,
                      v_from_x0_eps(v0, noise_v, t_v, schedule), v_from_x0_eps(a0, noise_a, t_a, schedule))


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if pred.shape != target.shape:
        raise ValueError(f"joint_v_loss: `pred_{name}` must have `target_{name}`'s shape {list(target.shape)}, "
                         f"got {list(pred.shape)}")
    acc = torch.float64 if pred.dtype == torch.float64 else torch.float32
    return (pred.to(acc) - target.to(acc)).square().reshape(pred.shape[0], -1).mean(1)


def joint_v_loss(pred_v: torch.Tensor, pred_a: torch.Tensor, target_v: torch.Tensor, target_a: torch.Tensor,
                 weight_video: float = 1.0, weight_audio: float = 1.0, t_v: torch.Tensor | None = None,
                 t_a: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """CMMD Eq. 2 with per-modality weights: w_v·mse_v + w_a·mse_a per sample, reduced over the batch.

    Each mse is the mean over that sample's elements (fp32 accumulation, fp64 for fp64 inputs).
    t_v / t_a (optional, [B]): samples where a modality's timestep is 0 were given that modality
    clean, as a condition; its term is not a prediction target and is dropped (weight 0).
    reduction: "mean" or "sum" over the batch, or "none" for the per-sample [B] values.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"joint_v_loss: `reduction` must be 'mean', 'sum' or 'none', got {reduction!r}")
    e_v = _per_sample_mse(pred_v, target_v, "v")
    e_a = _per_sample_mse(pred_a, target_a, "a")
    if e_v.shape != e_a.shape:
        raise ValueError(f"joint_v_loss: video and audio batch sizes differ ({e_v.shape[0]} vs {e_a.shape[0]})")
    if t_v is not None:
        e_v = torch.where(t_v.to(e_v.device) > 0, e_v, torch.zeros_like(e_v))
    if t_a is not None:
        e_a = torch.where(t_a.to(e_a.device) > 0, e_a, torch.zeros_like(e_a))
    j = weight_video * e_v + weight_audio * e_a
    return j.mean() if reduction == "mean" else j.sum() if reduction == "sum" else j
