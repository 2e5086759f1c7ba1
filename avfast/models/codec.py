"""Between data and the model's space: RGB pixels or autoencoder latents for video, normalised
log-mel for audio. Samplers work in model space; these turn their output into frames and mels.

    video: "pixels" -> the model sees RGB in [-1, 1]; "latent" -> the scaled autoencoder latents
           (`avfast.data.FrameAutoencoder.encode`, e.g. the SD VAE's x 0.18215).
    audio: model = (log10-mel - config.mel_center) / config.mel_scale, about [-1, 1].
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def _need_autoencoder(config: ModelConfig, autoencoder, what: str):
    if config.video_space == "latent" and autoencoder is None:
        raise ValueError(f"{what}: this model works on autoencoder latents (config.video_space='latent'); "
                         f"pass autoencoder= (e.g. avfast.data.StableDiffusionVAE.from_pretrained(PATH))")


def video_to_model(pixels: torch.Tensor, config: ModelConfig, autoencoder=None) -> torch.Tensor:
    """[B, 3, F, H, W] in [-1, 1] -> the model's video input."""
    if pixels.dim() != 5 or pixels.shape[1] != 3:
        raise ValueError(f"video_to_model: `pixels` must be [B, 3, F, H, W] in [-1, 1], got {list(pixels.shape)}")
    if config.video_space == "pixels":
        if tuple(pixels.shape[-2:]) != (config.height, config.width):
            raise ValueError(f"video_to_model: the model takes {config.height}x{config.width} frames, got "
                             f"{pixels.shape[-2]}x{pixels.shape[-1]} (resize with avfast.data.preprocess_frames)")
        return pixels
    _need_autoencoder(config, autoencoder, "video_to_model")
    return autoencoder.encode(pixels)


def video_from_model(x: torch.Tensor, config: ModelConfig, autoencoder=None) -> torch.Tensor:
    """The model's video output -> [B, 3, F, H, W] in [-1, 1]."""
    if config.video_space == "pixels":
        return x.clamp(-1, 1)
    _need_autoencoder(config, autoencoder, "video_from_model")
    return autoencoder.decode(x)


def mel_to_model(logmel: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    return (logmel - config.mel_center) / config.mel_scale


def audio_to_model(waveform: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """[B, N] waveform in [-1, 1] at config.sample_rate -> normalised mel [B, mel_bins, T]."""
    from ..data.mel import MelConfig, waveform_to_mel

    return mel_to_model(waveform_to_mel(waveform, MelConfig(sample_rate=config.sample_rate,
                                                            n_mels=config.mel_bins)), config)


def audio_from_model(x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The model's audio output -> log10-mel [B, mel_bins, T] (for `avfast.data.Vocoder`)."""
    return x * config.mel_scale + config.mel_center
