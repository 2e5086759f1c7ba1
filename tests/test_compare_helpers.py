"""tests/_compare.py's rule can fail: on real kernel results in every dtype the op tests use, the right
answer passes and an all-zero gradient, a result 1 % off everywhere and one wrong element fail.
(The max(1, |ref|) tolerances it replaced let an all-zero bf16/fp16 loss gradient through.)"""
from __future__ import annotations

import pytest
import torch

import avfast
from avfast.ops import attention as A
from avfast.ops import contrastive_loss_reference
from _cases import DTYPES
from _compare import assert_accurate
from _oracles import contrastive_loss_oracle


def _wrong_answers(right: torch.Tensor, oracle: torch.Tensor) -> dict[str, torch.Tensor]:
    one = right.detach().clone().reshape(-1)
    k = one.numel() // 3  # an arbitrary element, 2 % of the output's size off
    one[k] += 0.02 * oracle.abs().max().item()
    return {"all zero": torch.zeros_like(right),
            "1 % off": (right.detach().double() * 1.01).to(right.dtype),
            "one wrong element": one.reshape(right.shape)}


def _rule_tells_right_from_wrong(right, oracle, baseline, what):
    assert_accurate(right, oracle, baseline, what=what)
    for name, wrong in _wrong_answers(right, oracle).items():
        with pytest.raises(AssertionError, match="error"):
            assert_accurate(wrong, oracle, baseline, what=f"{what}, {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_loss_rows_and_gradients(dtype):
    # The 128-px model's sizes at B = 2: gradients ~2w/N ~ 1e-4, far below max(1, |ref|).
    G, Kv, B, sv, sa = 3, 1, 2, (4, 18, 16, 16), (80, 112)
    x = [torch.randn(G, B, *sv, dtype=dtype), torch.randn(G, B, *sa, dtype=dtype),
         torch.randn(B, *sv, dtype=dtype), torch.randn(B, *sa, dtype=dtype)]
    grad = torch.randn(4, B, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    results = []
    for fn, inputs in ((lambda *t: torch.ops.avfast.contrastive_loss(*t, Kv, 0.3, 0.7, 1.3), x),
                       (lambda *t: contrastive_loss_oracle(*t, Kv, 0.3, 0.7, 1.3), [t.double() for t in x]),
                       (lambda *t: contrastive_loss_reference(*t, Kv, 0.3, 0.7, 1.3), x)):
        inputs = [t.detach().requires_grad_() for t in inputs]
        with avfast.backend("cpu"):
            rows = fn(*inputs)
            results.append((rows.detach(), *torch.autograd.grad(rows, inputs[:2], grad.to(rows.dtype))))
    got, oracle, pytorch = results
    if dtype == torch.float64:
        pytorch = [None] * len(pytorch)  # no more precise oracle: the rule's baseline is the oracle itself
    for name, r, o, p in zip(("rows", "grad pred_v", "grad pred_a"), got, oracle, pytorch):
        _rule_tells_right_from_wrong(r, o, p, f"{dtype} {name}")


@pytest.mark.parametrize("dtype", [p for p in DTYPES if p.values[0] != torch.float64])
def test_attention_output_and_gradient(dtype):
    x = torch.randn(1, 3 * 64, 5, 3, 3, dtype=dtype)
    grad = torch.randn(1, 64, 5, 3, 3, dtype=dtype)
    results = []
    for fn, inputs in ((lambda t: A.temporal_spatial_attention(t, "joint", 32), x),
                       (lambda t: A.attention_reference(t, "joint", 32), x.double()),
                       (lambda t: A.attention_sdpa(t, "joint", 32), x)):
        inputs = inputs.detach().requires_grad_()
        with avfast.backend("cpu"):
            out = fn(inputs)
            results.append((out.detach(), *torch.autograd.grad(out, inputs, grad.to(out.dtype))))
    for name, r, o, p in zip(("out", "grad qkv"), *results):
        _rule_tells_right_from_wrong(r, o, p, f"{dtype} attention {name}")


def test_nan_fails_and_the_oracle_must_be_fp64():
    oracle = torch.randn(8, dtype=torch.float64)
    right = oracle.float()
    assert_accurate(right, oracle, what="right")
    right[3] = float("nan")
    with pytest.raises(AssertionError, match="nan"):
        assert_accurate(right, oracle, what="nan")
    with pytest.raises(TypeError, match="`oracle` must be float64"):
        assert_accurate(right, oracle.float(), what="fp32 oracle")
