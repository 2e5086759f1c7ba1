"""Data front ends: log-mel audio features, vocoder, video I/O, latent autoencoders, synthetic clips.

Layouts: video [3, F, H, W] (batched [B, 3, F, H, W]) float in [-1, 1]; audio [N] (batched [B, N])
float in [-1, 1] at 16 kHz; log-mel [80, T] (batched [B, 80, T]).  Optional packages (PyAV,
librosa, soundfile, diffusers) are imported only by the functions that need them.
"""
from .autoencoder import FrameAutoencoder, StableDiffusionVAE, TinyAutoencoder
from .mel import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, MelConfig, MelSpectrogram, mel_filterbank, waveform_to_mel
from .synthetic import SyntheticClip, click_track, make_batch, make_clip
from .video import Clip, load_audio, preprocess_frames, read_video, save_audio, write_video
from .vocoder import MelGANGenerator, Vocoder, griffin_lim, load_melgan, save_melgan

__all__ = [
    "FrameAutoencoder", "StableDiffusionVAE", "TinyAutoencoder",
    "HOP_LENGTH", "N_FFT", "N_MELS", "SAMPLE_RATE", "MelConfig", "MelSpectrogram", "mel_filterbank",
    "waveform_to_mel", "SyntheticClip", "click_track", "make_batch", "make_clip",
    "Clip", "load_audio", "preprocess_frames", "read_video", "save_audio", "write_video",
    "MelGANGenerator", "Vocoder", "griffin_lim", "load_melgan", "save_melgan",
]
