"""Stand-in weights for exporting a model before it is trained."""
from __future__ import annotations

import math

import torch
from torch import nn


def randomize_zero_layers_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Draws every all-zero weight from N(0, 1/fan_in), in place.

    A freshly initialised U-Net starts its residual branches and output convolutions at zero (so it begins
    as the identity), which makes its outputs exactly zero: a parity check on them would compare zeros
    with zeros. Exports of untrained models use this so their checks compare real numbers.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return model


def stand_in_model(preset: str, seed: int = 0, **overrides) -> nn.Module:
    """`models.create(preset, **overrides)` with its initialisation drawn from `seed` (the global generator is
    left as it was) and its all-zero layers randomised, in eval mode: the same stand-in weights in every process.

    Exports are cached by their weights' checksum (`avfast.export.pipeline.export_cached`), so weights drawn
    from the unseeded global generator made each benchmark run export its graphs anew.
    """
    from avfast import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.create(preset, **overrides)
    return randomize_zero_layers_(model, seed=seed).eval()
