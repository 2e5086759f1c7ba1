"""Diffusion core: the cosine schedule, v-prediction conversions, the joint training loss and the samplers
(`sample`, a plain function over any denoiser; `avfast.Pipeline` wraps it with files, codecs and runtimes),
and clips of any length over a fixed-window model (`windowed`, `sample_windowed`: see avfast.diffusion.windowed).

Timesteps are floats in [0, T] (T = 1000): 0 is clean data, t = k ≥ 1 has ᾱ = alphas_cumprod[k - 1].
"""
from .losses import NoisyBatch, joint_v_loss, noisy_batch, sample_timesteps
from .protocol import Denoiser
from .sampling import sample
from .schedule import CosineSchedule, eps_from_v, q_sample, v_from_x0_eps, x0_from_v
from .timesteps import adjust_timesteps, timestep_grid
from .windowed import audio_columns_for_seconds, frames_for_seconds, sample_windowed, window_layout, windowed

__all__ = ["CosineSchedule", "Denoiser", "NoisyBatch", "adjust_timesteps", "eps_from_v", "joint_v_loss",
           "noisy_batch", "q_sample", "sample", "sample_timesteps", "timestep_grid", "v_from_x0_eps", "x0_from_v",
           "audio_columns_for_seconds", "frames_for_seconds", "sample_windowed", "window_layout", "windowed"]
