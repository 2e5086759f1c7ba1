"""One contrastive training step: positives and negatives in one denoiser call vs three calls.

A step is CMMD Alg. 1 with one video and one audio negative per positive (G = 3 groups):
the denoiser on [positives | video negatives + true audio | audio negatives + true video]
(`avfast.train.evaluate_groups`), the fused joint contrastive loss, backward, Adam. "batched"
stacks the three groups into one call of 3B rows; "separate" (the baseline) makes one call per
group (`chunk_size=B`): the same rows, the same loss, three smaller calls. fp32, default backends.
"""
from __future__ import annotations

import functools

import pytest
import torch

from avfast import models
from avfast.ops import contrastive_loss
from avfast.train import evaluate_groups
from conftest import DEVICE, warm_up

# label -> (preset, batch size, timed rounds, warm-up steps); the rounds keep the whole bench run near
# 20 min on 2 cores. The first warm-up step also allocates Adam's state.
CONFIGS = {"tiny B1": ("tiny", 1, 5, 2), "paper-128 B1": ("paper-128", 1, 2, 1)}
SMOKE = {"tiny B1"}
K = 1  # negatives per positive for each modality
IMPLS = ("batched", "separate")  # chunk_size None (one call) or B rows (one call per group)


@functools.lru_cache(maxsize=1)  # the cases of one model run back to back
def _model(label: str) -> models.JointUNet:
    torch.manual_seed(0)
    return models.create(CONFIGS[label][0]).train().to(DEVICE.name)


def _params():
    for label in CONFIGS:
        for impl in IMPLS:  # varies fastest: a case's rows run back to back
            marks = [pytest.mark.smoke] if label in SMOKE else []
            yield pytest.param(label, impl, marks=marks, id=f"{label.replace(' ', '-')}-{impl}")


@pytest.mark.parametrize("label,impl", list(_params()))
def test_contrastive_train_step(benchmark, label, impl):
    preset, B, rounds, warm = CONFIGS[label]
    model = _model(label)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    v_t, a_t, t_v, t_a = model.example_inputs(batch_size=B, generator=gen)
    v_neg = torch.randn((K, *v_t.shape), generator=gen).to(DEVICE.name)
    a_neg = torch.randn((K, *a_t.shape), generator=gen).to(DEVICE.name)
    target_v, target_a = torch.randn_like(v_t), torch.randn_like(a_t)
    chunk_size = None if impl == "batched" else B

    def step():
        optimizer.zero_grad(set_to_none=True)
        groups = evaluate_groups(model, v_t, a_t, t_v, t_a, v_neg, a_neg, chunk_size=chunk_size)
        loss = contrastive_loss(groups.video, groups.audio, target_v, target_a, groups.num_video_negatives).loss
        loss.backward()
        optimizer.step()

    benchmark.group = f"train step {label} K{K}+{K} (G={1 + 2 * K}) fp32"
    benchmark.extra_info.update(impl=impl, dtype="fp32", model=preset, baseline=impl == "separate")
    warm_up(step, warm)
    benchmark.pedantic(step, rounds=rounds, iterations=1)
