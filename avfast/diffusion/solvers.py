"""Per-step coefficients of the samplers, computed once as Python floats before the loop.

Every update is written as one linear form in the current state x, the model's v-prediction v and
(for the multistep solver) the previous step's data prediction x0_prev:

    x0   = alpha·x - sigma·v                     (data prediction at the current local timestep)
    x'   = cx·x + cv·v + cprev·x0_prev + cnoise·z
    x0 is needed only for history and guidance; a guided x0 - δ adds c_x0·(-δ) to x' (`c_x0`).

DDIM (Song et al.): x' = α' x0 + sqrt(1 - ᾱ' - s²) ε + s z, ε = sigma·x + alpha·v,
    s = η sqrt((1 - ᾱ')/(1 - ᾱ)) sqrt(1 - ᾱ/ᾱ').
DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep): λ = log(α/σ), h = λ' - λ,
    x' = (σ'/σ) x + α'(1 - e^{-h}) D, D = (1 + 1/(2r)) x0 - x0_prev/(2r), r = h_prev / h,
    first order (D = x0) on the first step, after a step where this modality did not move, and on
    the last step to t = 0 (h = ∞ there, as diffusers' final_sigmas_type="zero").
A modality whose local timestep does not change over a step (possible with γ ≠ 1) stays put.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .schedule import CosineSchedule

SAMPLERS = ("ddim", "dpmpp2m")


class StepCoefficients(NamedTuple):
    alpha: float   # sqrt(ᾱ) at the current local timestep
    sigma: float   # sqrt(1 - ᾱ)
    cx: float
    cv: float
    cprev: float
    cnoise: float
    c_x0: float    # total weight of this step's x0 in x' (what a guidance shift of x0 is multiplied by)


def _ab(schedule: CosineSchedule, t: int) -> float:
    return 1.0 if t == 0 else float(schedule.alphas_cumprod[t - 1])


def ddim_coefficients(local: list[int], schedule: CosineSchedule, eta: float = 0.0) -> list[StepCoefficients]:
    out = []
    for t, t_next in zip(local[:-1], local[1:]):
        ab, ab_next = _ab(schedule, t), _ab(schedule, t_next)
        a, s, a_next = math.sqrt(ab), math.sqrt(1 - ab), math.sqrt(ab_next)
        noise = eta * math.sqrt((1 - ab_next) / (1 - ab)) * math.sqrt(1 - ab / ab_next) if ab < 1 else 0.0
        c_eps = math.sqrt(max(1 - ab_next - noise ** 2, 0.0))
        # x' = a_next (a x - s v) + c_eps (s x + a v) + noise z
        out.append(StepCoefficients(a, s, a_next * a + c_eps * s, -a_next * s + c_eps * a, 0.0, noise, a_next))
    return out


def dpmpp2m_coefficients(local: list[int], schedule: CosineSchedule) -> list[StepCoefficients]:
    out, h_prev = [], None
    for t, t_next in zip(local[:-1], local[1:]):
        ab, ab_next = _ab(schedule, t), _ab(schedule, t_next)
        a, s = math.sqrt(ab), math.sqrt(1 - ab)
        a_next, s_next = math.sqrt(ab_next), math.sqrt(1 - ab_next)
        if s == 0 or t_next == t:  # already clean, or this modality does not move on this step
            out.append(StepCoefficients(a, s, 1.0, 0.0, 0.0, 0.0, 0.0))
            h_prev = None
            continue
        ratio = s_next / s                    # σ'/σ
        c_first = a_next - ratio * a          # α'(1 - e^{-h}); e^{-h} = σ'α / (α'σ)
        if h_prev is None or s_next == 0:
            c_x0, c_prev = c_first, 0.0
        else:
            h = (math.log(a_next) - math.log(s_next)) - (math.log(a) - math.log(s))
            r = h_prev / h
            c_x0, c_prev = c_first * (1 + 1 / (2 * r)), -c_first / (2 * r)
        h_prev = None if s_next == 0 else (math.log(a_next) - math.log(s_next)) - (math.log(a) - math.log(s))
        # x' = ratio x + c_x0 (a x - s v) + c_prev x0_prev
        out.append(StepCoefficients(a, s, ratio + c_x0 * a, -c_x0 * s, c_prev, 0.0, c_x0))
    return out


def step_coefficients(sampler: str, local: list[int], schedule: CosineSchedule, eta: float) -> list[StepCoefficients]:
    if sampler == "ddim":
        return ddim_coefficients(local, schedule, eta)
    if sampler == "dpmpp2m":
        return dpmpp2m_coefficients(local, schedule)
    raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}")
