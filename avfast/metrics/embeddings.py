"""Pluggable embedding extractors for Fréchet / kernel distances.

An extractor maps ONE clip to frame-level embeddings [n, D]: set-level metrics pool the frames of
all clips (or their per-clip means, see `pool`), per-sample metrics use each clip's frames.
Inputs use avfast's layouts: audio [N] float at 16 kHz, video [3, F, H, W] float in [-1, 1].

Extractors load weights from local paths only (nothing is ever downloaded).  Built in:
  logmel       audio: the 80-bin log-mel frames (no weights; a cheap spectral statistic, NOT a
               perceptual embedding like CLAP/VGGish -- use it for smoke tests and regressions)
  thumbnails   video: each frame box-filtered to 8x8 RGB (no weights; same caveat, vs I3D for FVD)
  onnx         any modality: a local .onnx model (e.g. CLAP/VGGish/I3D exported by you), run with
               onnxruntime on the clip with a batch dimension; its first output is reshaped to [n, D]
Register your own with `register_extractor(name, factory)`; factory(path=None, **options).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class EmbeddingExtractor(Protocol):
    name: str
    modality: str  # "audio" or "video"

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:  # -> [n, D]
        ...


_REGISTRY: Dict[str, Callable[..., EmbeddingExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., EmbeddingExtractor]) -> None:
    """Make `factory(path=None, **options)` available as get_extractor(name, ...)."""
    if not name or not callable(factory):
        raise ValueError(f"register_extractor: need a name and a callable factory, got {name!r}, {factory!r}")
    _REGISTRY[name] = factory


def available_extractors() -> List[str]:
    return sorted(_REGISTRY)


def get_extractor(name: str, path: Optional[str] = None, **options) -> EmbeddingExtractor:
    if name not in _REGISTRY:
        raise KeyError(f"extractor: unknown name {name!r}; available: {', '.join(available_extractors())}")
    return _REGISTRY[name](path=path, **options)


class LogMelExtractor:
    name, modality = "logmel", "audio"

    def __init__(self, path: Optional[str] = None):
        if path is not None:
            raise ValueError("path: the logmel extractor has no weights; do not pass a path")

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        from ..data.mel import waveform_to_mel
        if clip.dim() != 1:
            raise ValueError(f"clip: logmel expects mono audio [N], got {tuple(clip.shape)}")
        return waveform_to_mel(clip.float()).T.contiguous()  # [T, 80]


class ThumbnailExtractor:
    name, modality = "thumbnails", "video"

    def __init__(self, path: Optional[str] = None, side: int = 8):
        if path is not None:
            raise ValueError("path: the thumbnails extractor has no weights; do not pass a path")
        self.side = side

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.dim() != 4 or clip.shape[0] != 3:
            raise ValueError(f"clip: thumbnails expects video [3, F, H, W], got {tuple(clip.shape)}")
        frames = clip.float().transpose(0, 1)  # [F, 3, H, W]
        return F.adaptive_avg_pool2d(frames, self.side).flatten(1)  # [F, 3*side*side]


class OnnxExtractor:
    name = "onnx"

    def __init__(self, path: Optional[str] = None, modality: str = "audio", embedding_dim: Optional[int] = None):
        if path is None or not str(path).endswith(".onnx") or not os.path.isfile(path):
            raise FileNotFoundError(f"path: the onnx extractor needs a local .onnx file, got {path!r}")
        if modality not in ("audio", "video"):
            raise ValueError(f"modality: expected 'audio' or 'video', got {modality!r}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("the onnx extractor needs onnxruntime: pip install onnxruntime") from exc
        self.modality = modality
        self.embedding_dim = embedding_dim
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.detach().float().cpu().unsqueeze(0).numpy()
        out = torch.from_numpy(self.session.run(None, {self.input_name: x})[0]).float()
        dim = self.embedding_dim or out.shape[-1]
        return out.reshape(-1, dim)


register_extractor("logmel", LogMelExtractor)
register_extractor("thumbnails", ThumbnailExtractor)
register_extractor("onnx", OnnxExtractor)
