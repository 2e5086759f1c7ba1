"""TemporalSpatialAttention: the drop-in block (GroupNorm -> qkv 1x1 -> attention -> zero-init proj -> residual)."""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.nn import TemporalSpatialAttention
from avfast.ops import attention_reference


def _composite(m: TemporalSpatialAttention, x: torch.Tensor) -> torch.Tensor:
    return x + m.proj_out(attention_reference(m.qkv(m.norm(x)), m.mode, m.head_dim))


@pytest.mark.parametrize("mode", ["spatial", "temporal", "joint"])
def test_video_block_matches_composite(mode):
    m = TemporalSpatialAttention(128, mode)
    x = torch.randn(2, 128, 5, 3, 4)
    assert torch.equal(m(x), x)  # zero-initialised output projection: identity at init
    torch.nn.init.normal_(m.proj_out.weight, std=0.05)
    x.requires_grad_(True)
    with avfast.backend("cpu"):
        y = m(x)
    want = _composite(m, x)
    torch.testing.assert_close(y, want, atol=2e-5, rtol=2e-5)
    g = torch.randn_like(y)
    got_grads = torch.autograd.grad(y, [x, m.qkv.weight], g)
    want_grads = torch.autograd.grad(want, [x, m.qkv.weight], g)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_audio_block():
    m = TemporalSpatialAttention(64, "temporal", video=False)
    torch.nn.init.normal_(m.proj_out.weight, std=0.05)
    x = torch.randn(1, 64, 112)
    torch.testing.assert_close(m(x), _composite(m, x), atol=2e-5, rtol=2e-5)


def test_bad_configuration():
    with pytest.raises(ValueError, match="divisible by `head_dim`"):
        TemporalSpatialAttention(96, "spatial")
    with pytest.raises(ValueError, match="mode"):
        TemporalSpatialAttention(64, "cross")
    with pytest.raises(ValueError, match="5-D input"):
        TemporalSpatialAttention(64, "spatial")(torch.randn(1, 64, 7))


def test_wrong_channel_count_names_the_block_channels():
    with pytest.raises(ValueError, match=r"built for 128 channels \(dim 1\), got 64 \(input shape \[1, 64, 2, 4, 4\]\)"):
        TemporalSpatialAttention(128)(torch.randn(1, 64, 2, 4, 4))
