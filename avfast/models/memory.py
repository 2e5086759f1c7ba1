"""Memory a joint U-Net needs, estimated on the meta device before any work (see avfast/_memory.py)."""
from __future__ import annotations

import functools
import json
from contextlib import nullcontext

import torch

from .._memory import PeakBytes
from .. import backends
from .config import ModelConfig, preset
from .unet import JointUNet


def windows_peak_bytes(config: ModelConfig, window_frames: int, window_audio: int, windows: int) -> int:
    """Estimated peak bytes of one model call on `windows` windows of a long clip, each `window_frames` video
    frames and `window_audio` mel columns (avfast.diffusion.windowed.window_shapes): a long clip's model memory,
    which grows with the window and the windows per call, not with the clip's duration. Cached: the estimate
    builds the model on the meta device (~0.25 s), which every long-clip call of a pipeline would pay again."""
    return _cached_peak_bytes(config.replace(frames=window_frames, audio_length=window_audio).to_json(), windows)


@functools.lru_cache(maxsize=64)
def _cached_peak_bytes(config_json: str, batch: int) -> int:
    return model_peak_bytes(ModelConfig.from_dict(json.loads(config_json)), batch)


def model_peak_bytes(config: "str | ModelConfig", batch: int = 1, *, training: bool = False, decomposed: bool = False) -> int:
    """Estimated peak bytes of one forward (and backward, with `training`: plus weights, gradients and
    Adam's two moments) of a joint U-Net with `config` at `batch`, in fp32. `decomposed`: the ops as
    their PyTorch composites (what an export and its parity check run), whose attention materialises
    the N x N scores."""
    with torch.device("meta"):
        model = JointUNet(preset(config) if isinstance(config, str) else config)
    model.train(training)
    c = model.config
    v = torch.empty(batch, *c.video_shape, device="meta")
    a = torch.empty(batch, *c.audio_shape, device="meta")
    t = torch.empty(batch, device="meta")
    counter = PeakBytes()
    with (backends.decomposed() if decomposed else nullcontext()), torch.set_grad_enabled(training), counter:
        outputs = model(v, a, t, t)
        if training:
            sum(o.sum() for o in outputs).backward()
    del outputs
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return counter.peak + (4 * params if training else params)
