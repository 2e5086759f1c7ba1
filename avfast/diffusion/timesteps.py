"""Sampling timestep grids and Sony's per-modality timestep adjustment (the Sony baseline paper, Eq. 8).

Grids are diffusers' (`DDIMScheduler.timestep_spacing`) moved to our convention (diffusers index
i = our t - 1), followed by the clean end t = 0:
    leading   t = k·(T // S) + 1 for k = S-1 … 0      (diffusers' default, steps_offset = 0)
    trailing  t = round(T - k·T/S) for k = 0 … S-1   (starts at T)
    linspace  t = round(linspace(0, T - 1, S)) + 1, descending
"""
from __future__ import annotations

import math

SPACINGS = ("leading", "trailing", "linspace")


def timestep_grid(steps: int, num_train_steps: int, spacing: str = "leading") -> list[int]:
    """The S + 1 global timesteps T ≥ t_0 > … > t_{S-1} ≥ 1 > t_S = 0 a sampler walks through."""
    T = num_train_steps
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"`steps` must be an int in [1, {T}] (the model's num_train_steps), got {steps!r}")
    if spacing == "leading":
        ratio = T // steps
        grid = [k * ratio + 1 for k in reversed(range(steps))]
    elif spacing == "trailing":
        grid = [int(round(T - k * T / steps)) for k in range(steps)]
    elif spacing == "linspace":
        grid = [int(round(k * (T - 1) / (steps - 1))) + 1 if steps > 1 else 1 for k in reversed(range(steps))]
    else:
        raise ValueError(f"`spacing` must be one of {SPACINGS}, got {spacing!r}")
    return grid + [0]


def check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"`gamma` (timestep adjustment) must be a finite number > 0, got {gamma!r}")
    return float(gamma)


def adjust_timesteps(grid: list[int], num_train_steps: int, gamma: float) -> tuple[list[int], list[int]]:
    """Local (video, audio) timesteps for the global grid: m(t) = round(T (t/T)^√γ), n(t) = round(T (t/T)^(1/√γ)).

    Both modalities use the joint model's T (Tv = Ta = T). γ > 1 keeps video less noisy than audio;
    At γ = 1 both maps are the identity on the integer grid (tested for every step count).
    """
    gamma = check_gamma(gamma)
    T, p = num_train_steps, math.sqrt(gamma)
    video = [math.floor(T * (t / T) ** p + 0.5) for t in grid]
    audio = [math.floor(T * (t / T) ** (1 / p) + 0.5) for t in grid]
    return video, audio
