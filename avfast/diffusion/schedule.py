"""The cosine noise schedule (Nichol & Dhariwal 2021) and the forward process.

Timestep convention (shared by the model, the samplers and training): timesteps are floats in
[0, T] with T = `num_steps`. t = 0 is clean data (ᾱ = 1); t = k ≥ 1 has ᾱ = `alphas_cumprod[k - 1]`.
`alphas_cumprod` is the table of diffusers' `squaredcos_cap_v2`, so diffusers' timestep index i is
our t = i + 1.

    x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε,        v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0   (v-prediction)
"""
from __future__ import annotations

import math

import torch

Timesteps = torch.Tensor | float | int


class CosineSchedule:
    """ᾱ of the cosine schedule: β_i = min(1 - f((i+1)/T) / f(i/T), max_beta), f(u) = cos²((u+s)/(1+s)·π/2).

    `alphas_cumprod` is the length-T float64 table (index k - 1 holds ᾱ at t = k).
    """

    def __init__(self, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> None:
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"CosineSchedule: `num_steps` must be an int >= 1, got {num_steps!r}")
        self.num_steps = num_steps
        self.s = float(s)
        self.max_beta = float(max_beta)

        def f(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)],
                             dtype=torch.float64)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        # ᾱ indexed by t itself: entry 0 is the clean end (ᾱ = 1).
        self._table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        self._log_snr = torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)

    @property
    def T(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return f"CosineSchedule(num_steps={self.num_steps}, s={self.s}, max_beta={self.max_beta})"

    def _check(self, t: torch.Tensor, name: str) -> None:
        if not torch.is_floating_point(t) and t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"`{name}` must be a real tensor or number, got dtype {t.dtype}")
        if t.numel() and not torch.compiler.is_compiling() and t.device.type == "cpu":
            lo, hi = float(t.min()), float(t.max())
            if lo < 0 or hi > self.num_steps:
                raise ValueError(f"`{name}` must lie in [0, {self.num_steps}] (0 = clean), got values in "
                                 f"[{lo:g}, {hi:g}]")

    def alpha_bar(self, t: Timesteps, name: str = "t") -> torch.Tensor:
        """ᾱ at timesteps `t` (any shape) as float64 on t's device.

        Integer t is a table lookup. Between integers k ≥ 1 the log-SNR is interpolated linearly;
        on (0, 1), where the log-SNR of t = 0 is infinite, ᾱ is interpolated linearly from 1.
        Range checks run for CPU tensors only, so a sampler on a GPU never waits for one.
        """
        t = torch.as_tensor(t)
        self._check(t, name)
        table = self._table.to(t.device)
        if not torch.is_floating_point(t):
            return table[t.long()]
        t = t.to(torch.float64)
        lo = t.floor().clamp(0, self.num_steps)
        hi = t.ceil().clamp(0, self.num_steps)
        frac = t - lo
        a_lo, a_hi = table[lo.long()], table[hi.long()]
        log_snr = self._log_snr.to(t.device)
        snr_lo = log_snr[(lo.long() - 1).clamp(min=0)]
        snr_hi = log_snr[(hi.long() - 1).clamp(min=0)]
        interp = torch.sigmoid(snr_lo + frac * (snr_hi - snr_lo))
        interp = torch.where(lo >= 1, interp, a_lo + frac * (a_hi - a_lo))
        return torch.where(frac == 0, a_lo, interp)

    def coefficients(self, t: Timesteps, like: torch.Tensor, name: str = "t") -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(ᾱ_t), sqrt(1 - ᾱ_t)) shaped [B, 1, 1, ...] to broadcast against `like` [B, ...], in like's dtype."""
        a = self.alpha_bar(t, name).to(like.device)
        if a.dim() == 1:
            a = a.view(-1, *([1] * (like.dim() - 1)))
        return a.sqrt().to(like.dtype), (1.0 - a).sqrt().to(like.dtype)


def q_sample(x0: torch.Tensor, t: Timesteps, noise: torch.Tensor, schedule: CosineSchedule) -> torch.Tensor:
    """Forward process x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε; t is a scalar or [B]."""
    if noise.shape != x0.shape:
        raise ValueError(f"q_sample: `noise` must have x0's shape {list(x0.shape)}, got {list(noise.shape)}")
    alpha, sigma = schedule.coefficients(t, x0)
    return alpha * x0 + sigma * noise


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, t: Timesteps, schedule: CosineSchedule) -> torch.Tensor:
    """The velocity target v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0."""
    alpha, sigma = schedule.coefficients(t, x0)
    return alpha * eps - sigma * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: Timesteps, schedule: CosineSchedule) -> torch.Tensor:
    """x0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v."""
    alpha, sigma = schedule.coefficients(t, x_t)
    return alpha * x_t - sigma * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, t: Timesteps, schedule: CosineSchedule) -> torch.Tensor:
    """ε = sqrt(1 - ᾱ_t) x_t + sqrt(ᾱ_t) v."""
    alpha, sigma = schedule.coefficients(t, x_t)
    return sigma * x_t + alpha * v
