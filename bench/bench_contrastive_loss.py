"""Joint contrastive loss: fused op vs the PyTorch reference under autograd, forward+backward.

Sizes are the 128-px CMMD model's outputs at batch 8: video v-prediction [8, 4, 18, 16, 16]
(SD-VAE latent, 18 frames) and audio [8, 80, 112] (80-bin mel, 112 steps), with K = 1, 2, 4
negatives per positive for each modality (G = 1 + 2K groups: positives, K video negatives, K
audio negatives). Only the predictions need gradients, as in training (the targets are data).
"""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.ops import contrastive_loss, contrastive_loss_reference
from conftest import warm_up

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
FUSED = "cuda" if HAS_CUDA else "cpu"
B, VIDEO, AUDIO = 8, (4, 18, 16, 16), (80, 112)
IMPLS = {"fused": FUSED, "reference": "reference"}
if HAS_CUDA and avfast.backends.why_unavailable("triton", torch.device("cuda")) is None:
    IMPLS["triton"] = "triton"


def _inputs(K: int, dtype: torch.dtype):
    G = 1 + 2 * K
    pv = torch.randn(G, B, *VIDEO, device=DEVICE, dtype=dtype, requires_grad=True)
    pa = torch.randn(G, B, *AUDIO, device=DEVICE, dtype=dtype, requires_grad=True)
    tv = torch.randn(B, *VIDEO, device=DEVICE, dtype=dtype)
    ta = torch.randn(B, *AUDIO, device=DEVICE, dtype=dtype)
    return pv, pa, tv, ta


def _bytes(K: int, dtype: torch.dtype) -> int:
    """Least traffic of forward+backward: read preds+targets twice, write the pred gradients."""
    G, n = 1 + 2 * K, B * (torch.Size(VIDEO).numel() + torch.Size(AUDIO).numel())
    return (torch.finfo(dtype).bits // 8) * (2 * (G * n + n) + G * n)


# impl varies fastest, so the cases of one group run back to back (their ratio is least exposed to
# drift in the machine's state over the run).
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", [1, 2, 4])
def test_contrastive_loss_forward_backward(benchmark, sync, impl, K, dtype):
    pv, pa, tv, ta = _inputs(K, dtype)

    if impl == "reference":  # the plain PyTorch composite, differentiated by autograd
        def loss():
            return contrastive_loss_reference(pv, pa, tv, ta, K)[0].mean()
    else:
        def loss():
            return contrastive_loss(pv, pa, tv, ta, K).loss

    def run():
        result = torch.autograd.grad(loss(), (pv, pa))
        sync()
        return result

    benchmark.group = f"contrastive_loss fwd+bwd {str(dtype)[6:]} B{B} K{K} (G={1 + 2 * K})"
    benchmark.extra_info.update(impl=impl, bytes=_bytes(K, dtype))
    with avfast.backend(IMPLS[impl]):
        warm_up(run)
        benchmark(run)
