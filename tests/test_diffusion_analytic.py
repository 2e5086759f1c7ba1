"""An exact denoiser for Gaussian data (the oracle of the sampler tests), and checks of it.

Data x0 = [vec(video), vec(audio)] ~ N(μ, Σ). Noised per modality, x_t = A x0 + S ε with A, S
diagonal (sqrt(ᾱ), sqrt(1 - ᾱ) of each modality's timestep), the posterior means are linear:

    K = A Σ A + S²,   E[x0 | x_t] = μ + Σ A K⁻¹ (x_t - A μ),   E[ε | x_t] = S K⁻¹ (x_t - A μ)
    v̂ = A E[ε | x_t] - S E[x0 | x_t]                        (the exact v-prediction)

With a diagonal Σ every element is independent and the arithmetic is elementwise (so a batch is
bitwise the same as its samples one at a time). Other test files import `GaussianDenoiser`.
"""
from __future__ import annotations

import pytest
import torch

from avfast.diffusion import CosineSchedule, q_sample


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only add barrier waits (seconds on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class GaussianDenoiser:
    def __init__(self, video_shape, audio_shape, mean: torch.Tensor, cov: torch.Tensor | None = None,
                 var: torch.Tensor | None = None, num_train_steps: int = 1000) -> None:
        self.video_shape, self.audio_shape = tuple(video_shape), tuple(audio_shape)
        self.nv = int(torch.tensor(self.video_shape).prod())
        self.na = int(torch.tensor(self.audio_shape).prod())
        self.mean = mean.double()
        self.cov = None if cov is None else cov.double()
        self.var = None if var is None else var.double()
        self.schedule = CosineSchedule(num_train_steps)
        self.calls = 0

    # the denoiser protocol
    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        assert labels is None, "GaussianDenoiser has no labels"
        self.calls += 1
        B = v_t.shape[0]
        x = torch.cat([v_t.reshape(B, -1), a_t.reshape(B, -1)], 1).double()
        alpha, sigma = self._coefficients(t_v, t_a)
        v = self.v_from_xt(x, alpha, sigma).to(v_t.dtype)
        return v[:, :self.nv].reshape(v_t.shape), v[:, self.nv:].reshape(a_t.shape)

    def _coefficients(self, t_v, t_a):
        ab_v = self.schedule.alpha_bar(t_v.double().cpu())[:, None]
        ab_a = self.schedule.alpha_bar(t_a.double().cpu())[:, None]
        ab = torch.cat([ab_v.expand(-1, self.nv), ab_a.expand(-1, self.na)], 1)
        return ab.sqrt(), (1 - ab).sqrt()

    def posterior(self, x, alpha, sigma):
        """(E[x0 | x_t], E[ε | x_t]) for flattened x_t [B, D] and per-element coefficients [B, D]."""
        r = x - alpha * self.mean
        if self.var is not None:
            k = alpha ** 2 * self.var + sigma ** 2
            return self.mean + self.var * alpha * r / k, sigma * r / k
        # one K per distinct coefficient row (the samplers give every row of a batch the same timestep)
        x0, eps = torch.empty_like(x), torch.empty_like(x)
        coef = torch.cat([alpha, sigma], 1)
        rows = coef[:1] if bool((coef == coef[0]).all()) else torch.unique(coef, dim=0)
        for row in rows:
            sel = (coef == row).all(1)
            a, s = row[:x.shape[1]], row[x.shape[1]:]
            K = a[:, None] * self.cov * a[None, :] + torch.diag(s ** 2)
            sol = torch.linalg.solve(K, r[sel].T).T
            x0[sel] = self.mean + (sol * a) @ self.cov.T
            eps[sel] = s * sol
        return x0, eps

    def v_from_xt(self, x, alpha, sigma):
        x0, eps = self.posterior(x, alpha, sigma)
        return alpha * eps - sigma * x0

    def split(self, x):
        B = x.shape[0]
        return x[:, :self.nv].reshape(B, *self.video_shape), x[:, self.nv:].reshape(B, *self.audio_shape)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n samples of x0, flattened [n, D], float64."""
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        if self.var is not None:
            return self.mean + self.var.sqrt() * z
        return self.mean + z @ torch.linalg.cholesky(self.cov).T


def correlated_gaussian(video_shape=(1, 2, 2, 2), audio_shape=(2, 3), seed: int = 0) -> GaussianDenoiser:
    """Video and audio strongly correlated (so one modality tells a lot about the other)."""
    g = torch.Generator().manual_seed(seed)
    nv, na = int(torch.tensor(video_shape).prod()), int(torch.tensor(audio_shape).prod())
    D = nv + na
    L = torch.randn(D, 3, generator=g, dtype=torch.float64)  # a rank-3 shared factor ties the modalities
    cov = L @ L.T / 3 + 0.05 * torch.eye(D, dtype=torch.float64)
    mean = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    return GaussianDenoiser(video_shape, audio_shape, mean, cov=cov)


def independent_gaussian(video_shape=(1, 2, 2, 2), audio_shape=(2, 3), seed: int = 0) -> GaussianDenoiser:
    g = torch.Generator().manual_seed(seed)
    D = int(torch.tensor(video_shape).prod()) + int(torch.tensor(audio_shape).prod())
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    var = (0.2 + torch.rand(D, generator=g, dtype=torch.float64)) ** 2
    return GaussianDenoiser(video_shape, audio_shape, mean, var=var)


# ------------------------------------------------------------------ checks of the oracle itself
def _residual_cross_covariance(den: GaussianDenoiser, t_v: float, t_a: float):
    g = torch.Generator().manual_seed(5)
    n = 20000
    x0 = den.draw(n, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    tv, ta = torch.full((n,), t_v), torch.full((n,), t_a)
    alpha, sigma = den._coefficients(tv, ta)
    x_t = alpha * x0 + sigma * eps
    v_true = alpha * eps - sigma * x0
    resid = v_true - den.v_from_xt(x_t, alpha, sigma)
    xc = x_t - x_t.mean(0)
    return resid, (resid.T @ xc) / n, v_true


def test_exact_v_residual_is_uncorrelated_with_the_input():
    # The conditional mean is the linear MMSE estimate for Gaussians: its residual is orthogonal
    # to x_t, with zero mean; a wrong K or wrong sign would leave a correlation of order 1.
    for den in (correlated_gaussian(), independent_gaussian()):
        for t_v, t_a in ((500.0, 500.0), (900.0, 100.0), (0.0, 700.0)):
            resid, cross, v_true = _residual_cross_covariance(den, t_v, t_a)
            scale = float(v_true.std())
            assert float(resid.mean(0).abs().max()) < 0.03 * scale
            assert float(cross.abs().max()) < 0.03 * scale


def test_exact_v_beats_a_perturbed_predictor():
    den = correlated_gaussian()
    g = torch.Generator().manual_seed(1)
    x0 = den.draw(20000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    alpha, sigma = den._coefficients(torch.full((20000,), 400.0), torch.full((20000,), 400.0))
    x_t = alpha * x0 + sigma * eps
    v_true = alpha * eps - sigma * x0
    best = den.v_from_xt(x_t, alpha, sigma)
    mse = float(((v_true - best) ** 2).mean())
    assert mse < float(((v_true - 0.9 * best) ** 2).mean())
    assert mse < float(((v_true - best - 0.05 * x_t) ** 2).mean())


def test_call_matches_forward_process_shapes():
    den = independent_gaussian()
    sched = CosineSchedule()
    g = torch.Generator().manual_seed(2)
    x0 = den.draw(3, g)
    v0, a0 = den.split(x0)
    t = torch.tensor([1.0, 1.0, 1.0])
    nv, na = torch.randn(v0.shape, generator=g, dtype=torch.float64), torch.randn(a0.shape, generator=g, dtype=torch.float64)
    pv, pa = den(q_sample(v0, t, nv, sched), q_sample(a0, t, na, sched), t, t)
    assert pv.shape == v0.shape and pa.shape == a0.shape
    # at t = 1 the data is almost clean: x0 recovered from the exact v is close to the truth
    x0_hat = sched.alpha_bar(1.0).sqrt() * q_sample(a0, t, na, sched) - (1 - sched.alpha_bar(1.0)).sqrt() * pa
    assert float((x0_hat - a0).abs().max()) < 0.02
    # at t = T the input is (almost) pure noise: v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x0 ≈ -x0, whose best guess is -μ
    T = torch.full((3,), 1000.0)
    pv, pa = den(torch.randn(v0.shape, generator=g), torch.randn(a0.shape, generator=g), T, T)
    torch.testing.assert_close(pa.double(), -den.split(den.mean[None].expand(3, -1))[1], atol=1e-3, rtol=0)
