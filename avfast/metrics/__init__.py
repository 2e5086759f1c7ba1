"""Evaluation metrics of CMMD (Contrastive Multi-Modal Diffusion for Video-Audio Conditional Modeling) and
Sony's baseline ("A Simple but Strong Baseline for Sounding Video Generation", MM-Diffusion with timestep
adjustment and CMC-PE).

Importing this package needs only numpy and torch; opencv (AV-Align's optical flow) and librosa (the
beat tracker) are imported when a metric that needs them runs (install with `pip install "avfast[media]"`).
AV-Align's audio onsets are librosa's detector re-done in numpy (onsets.py), so they need neither
librosa nor its numba JIT.  CLI: `python -m avfast.metrics --help`.
"""
from .av_align import (AVAlignResult, audio_onsets, av_align, av_align_from_events, event_counts, pooled_av_align,
                       video_peaks)
from .beats import BeatResult, beat_hit_rate, beat_times, hit_rate
from .embeddings import EmbeddingExtractor, available_extractors, get_extractor, register_extractor
from .frechet import (KernelDistance, frechet_distance, frechet_distance_from_stats, gaussian_stats,
                      kernel_distance, mmd2_unbiased, per_sample_frechet_distance,
                      per_sample_kernel_distance)

__all__ = [
    "AVAlignResult", "audio_onsets", "av_align", "av_align_from_events", "event_counts", "pooled_av_align",
    "video_peaks",
    "BeatResult", "beat_hit_rate", "beat_times", "hit_rate",
    "EmbeddingExtractor", "available_extractors", "get_extractor", "register_extractor",
    "KernelDistance", "frechet_distance", "frechet_distance_from_stats", "gaussian_stats",
    "kernel_distance", "mmd2_unbiased", "per_sample_frechet_distance", "per_sample_kernel_distance",
]
