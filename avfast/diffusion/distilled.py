"""Sampling a distilled student: the step count, sampler and γ it was distilled for, and what else is allowed.

A student of `python -m avfast.distill` (config `distilled_steps` N > 0) learnt, for each step of the
N-step trailing grid, to jump where its teacher's two DDIM steps land. Its config records N, the sampler
("ddim") and the timestep adjustment γ (`distilled_gamma`); `resolve` fills in whatever the caller left
out (None) from them, and checks what the caller gave:

  steps  None: N. N: as distilled. A multiple of N (8, 12, ... for N = 4): ALLOWED WITH A WARNING: the
         grid holds the student's own timesteps, but each of its predictions is a jump to the next
         of them, taken here in smaller steps; more steps than distilled for do not improve on N (Salimans
         & Ho 2022, §5) and usually lose a little. Anything else (fewer steps than N, or a count N does not
         divide) is REFUSED (ValueError): the student never saw those timesteps or step sizes; distil a
         student for that count instead (`python -m avfast.distill --steps S`).
  spacing  None or "trailing" (the distilled grids are trailing ones); another spacing is refused.
  sampler  None: the distilled one (ddim). dpmpp2m: allowed with a warning (its second-order
           correction assumes the teacher's small steps).
  gamma    None: the model's own: config `sampling_gamma` where set (a γ chosen on held-out validation clips,
           which may differ from the distilled one), else the distilled γ. Another γ than the distilled
           one, given by the caller: allowed with a warning (the student's steps were distilled on the
           per-modality grids of its own γ; see avfast/distill/config.py).
  eta      > 0 (stochastic DDIM): allowed with a warning (the student matches deterministic DDIM).

A model that is not distilled gets the caller's defaults (γ: its `sampling_gamma` where set, else 1) and no
checks beyond the sampler's own.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

from .solvers import SAMPLERS
from .timesteps import SPACINGS, check_gamma


class Settings(NamedTuple):
    steps: int
    sampler: str
    spacing: str
    gamma: float


class DistilledStepsWarning(UserWarning):
    """A distilled student sampled with settings other than the ones it was distilled for."""


def distilled_steps(config: Any) -> int:
    """The step count `config` was distilled for (0: not a distilled student, or no config)."""
    n = getattr(config, "distilled_steps", 0)
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


def resolve(config: Any, steps: int | None, sampler: str | None, spacing: str | None, gamma: float | None,
            eta: float = 0.0, default_steps: int = 200, default_sampler: str = "ddim", warn: bool = True) -> Settings:
    """The sampler settings for a model with `config` (see the module docstring); None means 'the model's'."""
    # values that are wrong for every model first: one error, not a warning about them and then the error
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}")
    if spacing is not None and spacing not in SPACINGS:
        raise ValueError(f"`spacing` must be one of {SPACINGS}, got {spacing!r}")
    if gamma is not None:
        check_gamma(gamma)
    n = distilled_steps(config)
    own_gamma = getattr(config, "sampling_gamma", None)
    if steps is not None:  # a step count out of range is that, whatever the model (timesteps' own message)
        T = getattr(config, "num_train_steps", 1000)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ValueError(f"`steps` must be an int in [1, {T}] (the model's num_train_steps), got {steps!r}")
    if not n:
        if sampler is None and isinstance(eta, (int, float)) and eta > 0:
            sampler = "ddim"   # stochastic DDIM asked for: the one sampler that takes eta > 0
        return Settings(default_steps if steps is None else steps, default_sampler if sampler is None else sampler,
                        "trailing" if spacing is None else spacing,
                        (1.0 if own_gamma is None else float(own_gamma)) if gamma is None else gamma)
    d_sampler = getattr(config, "distilled_sampler", "ddim") or "ddim"
    d_gamma = float(getattr(config, "distilled_gamma", 1.0))
    notes = []
    if steps is None:
        steps = n
    elif isinstance(steps, int) and not isinstance(steps, bool) and steps != n:
        if steps < n or steps % n:
            what = "fewer steps than" if steps < n else "a step count not divisible by the"
            raise ValueError(f"`steps` = {steps} is {what} {n} this model was distilled for; a distilled student "
                             f"samples at {n} steps (or, with a warning, a multiple of {n}). For {steps} steps, "
                             f"distil a student for them: python -m avfast.distill --steps {steps}")
        notes.append(f"steps = {steps}, more than the {n} it was distilled for (allowed: the grid holds its "
                     f"timesteps, but more steps do not improve on {n})")
    if spacing is None:
        spacing = "trailing"
    elif spacing != "trailing":
        raise ValueError(f"`spacing` = {spacing!r}: this model was distilled on the trailing {n}-step grid; use "
                         f"spacing='trailing' (or leave it out)")
    if sampler is None:
        sampler = d_sampler
    elif sampler != d_sampler:
        notes.append(f"sampler {sampler!r}, not the {d_sampler!r} it was distilled for")
    if gamma is None:   # the model's own: measured, so no warning
        gamma = d_gamma if own_gamma is None else float(own_gamma)
    elif isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and float(gamma) != d_gamma \
            and (own_gamma is None or float(gamma) != float(own_gamma)):
        notes.append(f"gamma = {gamma:g}, not the {d_gamma:g} it was distilled for (its steps follow that γ's "
                     f"per-modality grids)")
    if isinstance(eta, (int, float)) and eta > 0:
        notes.append(f"eta = {eta:g} (stochastic DDIM); it was distilled for deterministic DDIM (eta = 0)")
    if warn and notes:
        warnings.warn(f"distilled {n}-step student sampled with " + "; ".join(notes), DistilledStepsWarning,
                      stacklevel=3)
    return Settings(steps, sampler, spacing, gamma)
