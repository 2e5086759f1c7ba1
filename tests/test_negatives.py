"""Negatives for the joint contrastive loss: shapes, ranges, non-identity, determinism, edge cases."""
from __future__ import annotations

import pytest
import torch

from avfast.train import NegativeConfig, apply_plan, draw_plan, make_negatives
from avfast.train.negatives import SEGMENT_SWAP, SHIFT, SWAP, shift_steps


def _batch(B=5, F=18, T=112):
    return torch.randn(B, 4, F, 3, 3), torch.randn(B, 80, T)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shapes_and_layouts():
    v, a = _batch()
    neg = make_negatives(v, a, NegativeConfig(num_video=3, num_audio=2), _gen())
    assert neg.video.shape == (3, *v.shape) and neg.audio.shape == (2, *a.shape)
    assert neg.video.is_contiguous() and neg.audio.is_contiguous()
    a4 = a[:, None]  # [B, 1, n_mels, T]: time is still the last dimension
    neg4 = make_negatives(v, a4, NegativeConfig(num_video=0, num_audio=1), _gen())
    assert neg4.video.shape == (0, *v.shape) and neg4.audio.shape == (1, *a4.shape)


def test_shift_ranges_match_the_paper_and_roll():
    v, a = _batch(B=64)
    cfg = NegativeConfig(methods=("shift",), num_video=4, num_audio=4)
    neg = make_negatives(v, a, cfg, _gen(3))
    vs, as_ = neg.video_plan.shift, neg.audio_plan.shift
    assert vs.abs().min() >= 2 and vs.abs().max() <= 4  # 200-400 ms at 10 fps
    assert as_.abs().min() >= 13 and as_.abs().max() <= 25  # 208-400 ms at 62.5 frames/s (16 ms hop)
    assert (vs > 0).any() and (vs < 0).any()  # both directions
    assert set(vs.abs().unique().tolist()) == {2, 3, 4}
    for k in range(4):
        for b in range(0, 64, 7):
            torch.testing.assert_close(neg.video[k, b], torch.roll(v[b], int(vs[k, b]), dims=1), rtol=0, atol=0)
            torch.testing.assert_close(neg.audio[k, b], torch.roll(a[b], int(as_[k, b]), dims=-1), rtol=0, atol=0)


def test_rates_are_configurable():
    assert shift_steps((0.2, 0.4), 10.0) == (2, 4)
    assert shift_steps((0.2, 0.4), 62.5) == (13, 25)
    assert shift_steps((0.2, 0.4), 25.0) == (5, 10)
    v, a = _batch(B=8, F=30, T=200)
    cfg = NegativeConfig(methods=("shift",), video_rate=25.0, audio_rate=100.0, num_video=3, num_audio=3)
    neg = make_negatives(v, a, cfg, _gen())
    assert neg.video_plan.shift.abs().min() >= 5 and neg.video_plan.shift.abs().max() <= 10
    assert neg.audio_plan.shift.abs().min() >= 20 and neg.audio_plan.shift.abs().max() <= 40


def test_swap_never_returns_the_sample_itself():
    for B in (2, 3, 7):
        v, a = _batch(B=B)
        neg = make_negatives(v, a, NegativeConfig(methods=("swap",), num_video=5, num_audio=5), _gen(B))
        own = torch.arange(B)
        assert (neg.video_plan.partner != own).all() and (neg.audio_plan.partner != own).all()
        for k in range(5):
            torch.testing.assert_close(neg.video[k], v[neg.video_plan.partner[k]], rtol=0, atol=0)
            torch.testing.assert_close(neg.audio[k], a[neg.audio_plan.partner[k]], rtol=0, atol=0)
    # every other sample is reachable as a partner
    plan = draw_plan(200, 4, 10, 10.0, NegativeConfig(methods=("swap",)), _gen())
    for b in range(4):
        assert set(plan.partner[:, b].tolist()) == set(range(4)) - {b}


def test_segment_swap_takes_one_side_from_each():
    v, a = _batch(B=6, T=40)
    neg = make_negatives(v, a, NegativeConfig(methods=("segment_swap",), num_video=3, num_audio=3), _gen(5))
    plan = neg.audio_plan
    assert (plan.split >= 1).all() and (plan.split <= 39).all()
    assert (plan.partner != torch.arange(6)).all()
    assert plan.partner_left.any() and (~plan.partner_left).any()
    for k in range(3):
        for b in range(6):
            s, p = int(plan.split[k, b]), int(plan.partner[k, b])
            left, right = (a[p], a[b]) if plan.partner_left[k, b] else (a[b], a[p])
            want = torch.cat([left[:, :s], right[:, s:]], dim=-1)
            torch.testing.assert_close(neg.audio[k, b], want, rtol=0, atol=0)


@pytest.mark.parametrize("methods", [("shift",), ("segment_swap",), ("swap",), ("shift", "segment_swap", "swap")])
def test_never_identity(methods):
    v, a = _batch(B=4)
    neg = make_negatives(v, a, NegativeConfig(methods=methods, num_video=6, num_audio=6), _gen(11))
    for k in range(6):
        assert (neg.video[k] - v).flatten(1).abs().amax(1).min() > 0
        assert (neg.audio[k] - a).flatten(1).abs().amax(1).min() > 0


def test_random_subset_of_methods_per_step():
    plan = draw_plan(50, 8, 112, 62.5, NegativeConfig(), _gen())
    counts = torch.bincount(plan.method.flatten(), minlength=3)
    assert (counts > 0).all()  # each method is drawn
    assert (plan.shift[plan.method != SHIFT] == 0).all() and (plan.shift[plan.method == SHIFT] != 0).all()
    assert (plan.split[plan.method != SEGMENT_SWAP] == 0).all()
    assert (plan.partner[plan.method == SHIFT] == torch.arange(8).expand(50, 8)[plan.method == SHIFT]).all()
    assert (plan.partner[plan.method == SWAP] != torch.arange(8).expand(50, 8)[plan.method == SWAP]).all()


def test_deterministic_under_a_generator():
    v, a = _batch()
    cfg = NegativeConfig(num_video=3, num_audio=3)
    n1 = make_negatives(v, a, cfg, _gen(42))
    n2 = make_negatives(v, a, cfg, _gen(42))
    n3 = make_negatives(v, a, cfg, _gen(43))
    assert torch.equal(n1.video, n2.video) and torch.equal(n1.audio, n2.audio)
    assert not (torch.equal(n1.video, n3.video) and torch.equal(n1.audio, n3.audio))


def test_apply_plan_is_differentiable_gather():
    v, _ = _batch(B=3)
    v.requires_grad_()
    plan = draw_plan(2, 3, v.shape[2], 10.0, NegativeConfig(methods=("shift",)), _gen())
    out = apply_plan(v, plan, time_dim=2)
    (g,) = torch.autograd.grad(out.sum(), v)
    torch.testing.assert_close(g, torch.full_like(v, 2.0))  # each element lands in each of 2 negatives once


def test_single_sample_batch():
    v, a = _batch(B=1)
    with pytest.raises(ValueError, match=r"need another sample of the batch, but the batch has B = 1"):
        make_negatives(v, a, NegativeConfig(), _gen())
    neg = make_negatives(v, a, NegativeConfig(single_sample="shift", num_video=2, num_audio=2), _gen())
    assert (neg.video_plan.method == SHIFT).all() and (neg.audio_plan.method == SHIFT).all()
    make_negatives(v, a, NegativeConfig(methods=("shift",)), _gen())  # shifts need no partner


def test_config_and_length_errors():
    with pytest.raises(ValueError, match="expected names from"):
        NegativeConfig(methods=("reverse",))
    with pytest.raises(ValueError, match="shift_seconds must satisfy"):
        NegativeConfig(shift_seconds=(0.4, 0.2))
    with pytest.raises(ValueError, match="no whole-step shift"):
        shift_steps((0.01, 0.02), 10.0)
    v, a = _batch(B=2, F=4)  # shifts of up to 4 frames would wrap a 4-frame clip onto itself
    with pytest.raises(ValueError, match=r"needs a sequence longer than 4 steps, got T = 4"):
        make_negatives(v, a, NegativeConfig(methods=("shift",)), _gen())
    with pytest.raises(ValueError, match="batch sizes must match"):
        make_negatives(v, a[:1], NegativeConfig(), _gen())
