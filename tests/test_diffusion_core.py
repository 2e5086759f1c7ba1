"""The cosine schedule, the forward process, v/ε/x0 conversions, timestep draws and the joint v-loss."""
import math

import pytest
import torch

from avfast.diffusion import (CosineSchedule, eps_from_v, joint_v_loss, noisy_batch, q_sample, sample_timesteps,
                              v_from_x0_eps, x0_from_v)


@pytest.fixture(scope="module")
def schedule():
    return CosineSchedule(1000)


def test_alphas_cumprod_is_nichol_dhariwal(schedule):
    # Written out independently: ᾱ_k = prod_{i<k} (1 - min(1 - f((i+1)/T)/f(i/T), 0.999)).
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    prod, expect = 1.0, []
    for i in range(1000):
        prod *= 1 - min(1 - f((i + 1) / 1000) / f(i / 1000), 0.999)
        expect.append(prod)
    assert schedule.alphas_cumprod.dtype == torch.float64 and schedule.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(schedule.alphas_cumprod, torch.tensor(expect, dtype=torch.float64), rtol=1e-12, atol=0)
    assert bool((schedule.alphas_cumprod.diff() < 0).all())


def test_alphas_cumprod_matches_diffusers(schedule):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install \"avfast[vae]\")")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    torch.testing.assert_close(schedule.alphas_cumprod.float(), ref, rtol=1e-6, atol=1e-9)


def test_alpha_bar_lookup_and_interpolation(schedule):
    ab = schedule.alpha_bar(torch.tensor([0, 1, 500, 1000]))
    assert ab[0] == 1.0 and ab[1] == schedule.alphas_cumprod[0] and ab[3] == schedule.alphas_cumprod[999]
    assert ab[2] == schedule.alphas_cumprod[499]
    # float integral t equals the integer lookup; half steps lie halfway in log-SNR
    torch.testing.assert_close(schedule.alpha_bar(torch.tensor([0.0, 1.0, 500.0, 1000.0])), ab, rtol=0, atol=0)
    a, b = schedule.alphas_cumprod[499], schedule.alphas_cumprod[500]
    mid = float(schedule.alpha_bar(500.5))
    snr = lambda x: math.log(x / (1 - x))  # noqa: E731
    assert snr(mid) == pytest.approx((snr(float(a)) + snr(float(b))) / 2, rel=1e-9)
    assert float(schedule.alpha_bar(0.5)) == pytest.approx((1 + float(schedule.alphas_cumprod[0])) / 2, rel=1e-12)


def test_alpha_bar_rejects_out_of_range(schedule):
    with pytest.raises(ValueError, match=r"\[0, 1000\]"):
        schedule.alpha_bar(torch.tensor([1001.0]))
    with pytest.raises(ValueError, match=r"\[0, 1000\]"):
        schedule.alpha_bar(-1)
    with pytest.raises(ValueError, match="num_steps"):
        CosineSchedule(0)


def test_conversions_round_trip(schedule):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([1.0, 400.0, 1000.0])
    x_t = q_sample(x0, t, eps, schedule)
    v = v_from_x0_eps(x0, eps, t, schedule)
    torch.testing.assert_close(x0_from_v(x_t, v, t, schedule), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_v(x_t, v, t, schedule), eps, rtol=1e-9, atol=1e-9)
    # closed form per sample
    ab = schedule.alphas_cumprod[399]
    torch.testing.assert_close(x_t[1], ab.sqrt() * x0[1] + (1 - ab).sqrt() * eps[1])
    torch.testing.assert_close(v[1], ab.sqrt() * eps[1] - (1 - ab).sqrt() * x0[1])
    # t = 0 is clean
    torch.testing.assert_close(q_sample(x0, torch.zeros(3), eps, schedule), x0, rtol=0, atol=0)


def test_sample_timesteps(schedule):
    g = torch.Generator().manual_seed(0)
    t_v, t_a = sample_timesteps(4096, schedule, g)
    assert t_v.dtype == torch.float32 and torch.equal(t_v, t_a)
    assert t_v.min() >= 1 and t_v.max() <= 1000 and torch.equal(t_v, t_v.round())
    assert abs(t_v.mean().item() - 500.5) < 3 * 289 / math.sqrt(4096)
    t_v, t_a = sample_timesteps(4096, schedule, g, independent=True)
    assert (t_v != t_a).float().mean() > 0.99
    t_v, t_a = sample_timesteps(4096, schedule, g, independent=True, clean_prob=0.5)
    clean_v, clean_a = t_v == 0, t_a == 0
    assert not bool((clean_v & clean_a).any())
    assert abs((clean_v | clean_a).float().mean().item() - 0.5) < 0.05
    assert abs(clean_v.float().mean().item() - 0.25) < 0.04
    same = sample_timesteps(8, schedule, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(same, sample_timesteps(8, schedule, torch.Generator().manual_seed(3))))
    with pytest.raises(ValueError, match="batch_size"):
        sample_timesteps(0, schedule)
    with pytest.raises(ValueError, match="clean_prob"):
        sample_timesteps(2, schedule, clean_prob=1.5)


def test_joint_v_loss_written_out_and_matches_contrastive_loss(schedule):
    from avfast.ops import contrastive_loss

    g = torch.Generator().manual_seed(2)
    v0, a0 = torch.randn(3, 4, 2, 6, 6, generator=g), torch.randn(3, 80, 12, generator=g)
    t_v, t_a = sample_timesteps(3, schedule, g, independent=True)
    batch = noisy_batch(v0, a0, schedule, t_v, t_a, generator=g)
    pred_v = batch.target_v + 0.3 * torch.randn(batch.target_v.shape, generator=g)
    pred_a = batch.target_a + 0.2 * torch.randn(batch.target_a.shape, generator=g)
    loss = joint_v_loss(pred_v, pred_a, batch.target_v, batch.target_a, weight_video=0.7, weight_audio=1.3)
    by_hand = sum(0.7 * ((pred_v[b] - batch.target_v[b]) ** 2).mean() + 1.3 * ((pred_a[b] - batch.target_a[b]) ** 2).mean()
                  for b in range(3)) / 3
    torch.testing.assert_close(loss, by_hand)
    fused = contrastive_loss(pred_v[None], pred_a[None], batch.target_v, batch.target_a, num_video_negatives=0, eta=0.0,
                             weight_v=0.7, weight_a=1.3)
    torch.testing.assert_close(loss, fused.loss, rtol=1e-5, atol=1e-7 * float(loss))
    torch.testing.assert_close(loss, fused.positive, rtol=1e-5, atol=1e-7 * float(loss))


def test_joint_v_loss_drops_clean_modality_terms():
    pred_v, tgt_v = torch.ones(2, 3), torch.zeros(2, 3)
    pred_a, tgt_a = 2 * torch.ones(2, 5), torch.zeros(2, 5)
    per = joint_v_loss(pred_v, pred_a, tgt_v, tgt_a, t_v=torch.tensor([0.0, 5.0]), t_a=torch.tensor([7.0, 0.0]),
                       reduction="none")
    torch.testing.assert_close(per, torch.tensor([4.0, 1.0]))
    with pytest.raises(ValueError, match="pred_v"):
        joint_v_loss(torch.ones(2, 4), pred_a, tgt_v, tgt_a)
    with pytest.raises(ValueError, match="reduction"):
        joint_v_loss(pred_v, pred_a, tgt_v, tgt_a, reduction="avg")
