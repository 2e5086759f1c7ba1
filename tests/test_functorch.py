"""torch.func transforms over the public ops: torch's custom-op autograd raises under them, so the
public functions run their PyTorch reference there (see avfast.ops._native.under_functorch). These
tests pin that grad and vmap work and agree with ordinary autograd over the native kernels."""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.ops import contrastive_loss, easy_fusion, temporal_spatial_attention


# The cpu backend forced below is not used under the transforms: that warning is the point of the last test.
pytestmark = pytest.mark.filterwarnings("ignore:avfast. backend 'cpu':UserWarning")


@pytest.fixture(autouse=True)
def _cpu_backend():
    with avfast.backend("cpu"):
        yield


def _autograd(fn, x):
    x = x.detach().requires_grad_()
    return torch.autograd.grad(fn(x), x)[0]


def test_easy_fusion_grad_and_vmap():
    v, a = torch.randn(2, 4, 3, 2, 5, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64)

    def loss(x):
        vf, af = easy_fusion(x, a)
        return vf.square().sum() + af.sin().sum()

    torch.testing.assert_close(torch.func.grad(loss)(v), _autograd(loss, v))
    stacked = torch.stack([v, 2 * v])
    got = torch.func.vmap(lambda x: easy_fusion(x, a)[1])(stacked)
    torch.testing.assert_close(got, torch.stack([easy_fusion(v, a)[1], easy_fusion(2 * v, a)[1]]))


def test_contrastive_loss_grad_and_vmap():
    pv, pa = torch.randn(3, 2, 5, 7, dtype=torch.float64), torch.randn(3, 2, 9, dtype=torch.float64)
    tv, ta = torch.randn(2, 5, 7, dtype=torch.float64), torch.randn(2, 9, dtype=torch.float64)

    def loss(p):
        return contrastive_loss(p, pa, tv, ta, 1, eta=0.3).loss

    torch.testing.assert_close(torch.func.grad(loss)(pv), _autograd(loss, pv))
    per_example = torch.func.vmap(loss)(torch.stack([pv, pv + 1]))
    torch.testing.assert_close(per_example, torch.stack([loss(pv), loss(pv + 1)]))


@pytest.mark.parametrize("mode", ["spatial", "temporal", "joint"])
def test_attention_grad(mode):
    qkv = torch.randn(1, 3 * 32, 3, 2, 3)

    def loss(x):
        return temporal_spatial_attention(x, mode, head_dim=16).square().sum()

    torch.testing.assert_close(torch.func.grad(loss)(qkv), _autograd(loss, qkv), atol=1e-5, rtol=1e-4)


def test_a_forced_backend_that_is_not_used_warns_once(monkeypatch):
    """Under transforms and avfast.decomposed() the reference runs whatever is forced: never silently."""
    import warnings

    monkeypatch.setattr(avfast.backends, "_warned_ignored", set())
    v, a = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)

    def loss(x):
        return easy_fusion(x, a)[0].sum()

    with pytest.warns(UserWarning, match=r"backend 'cpu' \(forced by avfast.backend\(\)\) is not used under "
                                         r"torch.func transforms"):
        torch.func.grad(loss)(v)
    with pytest.warns(UserWarning, match=r"backend 'cpu' \(forced by avfast.backend\(\)\) is not used inside "
                                         r"avfast.decomposed\(\)"):
        with avfast.decomposed():
            easy_fusion(v, a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once each: no second warning
        torch.func.grad(loss)(v)
        with avfast.decomposed():
            temporal_spatial_attention(torch.randn(1, 3 * 16, 4, dtype=torch.float64), head_dim=16)
        with avfast.backend(None), avfast.decomposed():  # nothing forced: nothing to warn about
            easy_fusion(v, a)
