"""The denoiser contract every sampler is written against.

The model, and later its ONNX Runtime / TensorRT wrappers, are all called the same way:

    v_pred, a_pred = denoiser(v_t, a_t, t_v, t_a)                  # unconditional
    v_pred, a_pred = denoiser(v_t, a_t, t_v, t_a, labels=labels)   # class labels / CFG only

v_t [B, Cv, F, H, W], a_t [B, 80, T]; t_v, t_a float tensors [B] in [0, T] (0 = clean); the outputs
are v-predictions of the inputs' shapes. Samplers pass `labels=` only when labels are used, so a
denoiser without label conditioning need not accept it. A denoiser that autograd cannot run
through (an exported runtime) sets `supports_grad = False`; reconstruction guidance refuses it.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, v_t: torch.Tensor, a_t: torch.Tensor, t_v: torch.Tensor, t_a: torch.Tensor,
                 labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


def supports_grad(denoiser: Denoiser) -> bool:
    """False when the denoiser advertises `supports_grad = False` (exported runtimes)."""
    return bool(getattr(denoiser, "supports_grad", True))
