"""Frame-wise latent autoencoders for video: [B, 3, F, H, W] in [-1, 1] <-> [B, 4, F, H/8, W/8].

CMMD encodes each frame with the Stable Diffusion VAE (sd-vae-ft-mse), scaling latents by
0.18215.  `StableDiffusionVAE` wraps diffusers' AutoencoderKL loaded from a local folder only (never a
download).  `TinyAutoencoder` is a small randomly initialised network with the same interface, for
tests and CPU smoke runs.  Both encode/decode frames in chunks of at most `max_frames_per_chunk`
(bounding memory) and show a tqdm bar when a job has more than one chunk.
"""
from __future__ import annotations

import abc
import os
from typing import Optional

import torch
import torch.nn as nn

from ._deps import require

SD_VAE_SCALING = 0.18215


class FrameAutoencoder(nn.Module, abc.ABC):
    """Abstract base: subclasses implement _encode_frames / _decode_frames on [N, C, H, W]."""

    latent_channels = 4
    downsample = 8
    scaling_factor = 1.0

    def __init__(self, max_frames_per_chunk: int = 16, progress: bool = True):
        super().__init__()
        if max_frames_per_chunk < 1:
            raise ValueError(f"max_frames_per_chunk: expected >= 1, got {max_frames_per_chunk}")
        self.max_frames_per_chunk = max_frames_per_chunk
        self.progress = progress

    @abc.abstractmethod
    def _encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> unscaled latents [N, 4, H/8, W/8]."""

    @abc.abstractmethod
    def _decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents [N, 4, h, w] -> frames [N, 3, 8h, 8w]."""

    def _chunked(self, fn, x: torch.Tensor, desc: str) -> torch.Tensor:
        chunks = list(torch.split(x, self.max_frames_per_chunk))
        if self.progress and len(chunks) > 1:
            from tqdm.auto import tqdm
            chunks = tqdm(chunks, desc=desc, unit="chunk", leave=False)
        return torch.cat([fn(c) for c in chunks])

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> scaled latents [B, 4, F, H/8, W/8]."""
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"video: expected [B, 3, F, H, W] in [-1, 1], got {tuple(video.shape)}")
        b, _, f, h, w = video.shape
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"video: height and width must be multiples of {self.downsample}, got {h}x{w}")
        p = self._param()
        frames = video.transpose(1, 2).reshape(b * f, 3, h, w)
        z = self._chunked(lambda c: self._encode_frames(c.to(p.device, p.dtype)), frames, "encode frames")
        z = z * self.scaling_factor
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2).to(video.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, 4, F, h, w] -> video [B, 3, F, 8h, 8w] in [-1, 1]."""
        if latents.dim() != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents: expected [B, {self.latent_channels}, F, h, w], got {tuple(latents.shape)}")
        b, c, f, h, w = latents.shape
        p = self._param()
        z = latents.transpose(1, 2).reshape(b * f, c, h, w) / self.scaling_factor
        x = self._chunked(lambda c_: self._decode_frames(c_.to(p.device, p.dtype)), z, "decode frames")
        x = x.clamp(-1, 1)
        return x.reshape(b, f, *x.shape[1:]).transpose(1, 2).to(latents.dtype)


class TinyAutoencoder(FrameAutoencoder):
    """Small random-weight conv autoencoder (3 stride-2 stages, /8) for tests; not a trained codec."""

    def __init__(self, channels: int = 32, max_frames_per_chunk: int = 16, progress: bool = True, seed: int = 0):
        super().__init__(max_frames_per_chunk, progress)
        g = torch.random.fork_rng(devices=[])
        with g:  # deterministic weights without touching the caller's global RNG state
            torch.manual_seed(seed)
            c = channels
            self.encoder = nn.Sequential(
                nn.Conv2d(3, c, 3, padding=1), nn.SiLU(),
                nn.Conv2d(c, c, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(2 * c, self.latent_channels, 3, padding=1),
            )
            self.decoder = nn.Sequential(
                nn.Conv2d(self.latent_channels, 2 * c, 3, padding=1), nn.SiLU(),
                nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
                nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),
                nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(c, 3, 3, padding=1), nn.Tanh(),
            )

    def _encode_frames(self, x):
        return self.encoder(x)

    def _decode_frames(self, z):
        return self.decoder(z)


class StableDiffusionVAE(FrameAutoencoder):
    """The Stable Diffusion VAE (sd-vae-ft-mse) as used by CMMD, from a local diffusers folder.

    Encoding uses the posterior mean (deterministic), times 0.18215, as CMMD's latent diffusion does.
    """

    scaling_factor = SD_VAE_SCALING

    def __init__(self, vae: nn.Module, max_frames_per_chunk: int = 16, progress: bool = True,
                 sample_posterior: bool = False):
        super().__init__(max_frames_per_chunk, progress)
        self.vae = vae.eval()
        self.sample_posterior = sample_posterior
        factor = 2 ** (len(getattr(vae.config, "block_out_channels", [0, 0, 0, 0])) - 1)
        self.downsample = factor
        self.latent_channels = getattr(vae.config, "latent_channels", 4)

    @classmethod
    def from_pretrained(cls, path, torch_dtype: Optional[torch.dtype] = None, **kwargs) -> "StableDiffusionVAE":
        """Load AutoencoderKL from a local folder (config.json + diffusion_pytorch_model.safetensors).

        Never downloads: the path must exist and loading uses local_files_only=True.  Get the files
        once with e.g. `huggingface-cli download stabilityai/sd-vae-ft-mse --local-dir PATH`.
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"path: expected a local folder holding the sd-vae-ft-mse weights "
                                    f"(config.json + diffusion_pytorch_model.safetensors), got {path!r}; "
                                    f"avfast never downloads weights")
        diffusers = require("diffusers", "the Stable Diffusion VAE")
        vae = diffusers.AutoencoderKL.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                      torch_dtype=torch_dtype)
        return cls(vae, **kwargs)

    def _encode_frames(self, x):
        dist = self.vae.encode(x).latent_dist
        return dist.sample() if self.sample_posterior else dist.mean

    def _decode_frames(self, z):
        return self.vae.decode(z).sample
