"""Samplers against an exact denoiser (Gaussian data), diffusers, and closed forms.

Stated tolerances (float64 state, exact v):
  DDIM-200 (trailing) ends within 0.03 of the exact probability-flow map of its own starting noise
  (measured 0.017; the data's std is ~1.2). DPM-Solver++(2M) in 20 steps reaches DDIM-200's endpoint
  within 0.04 (measured 0.016), and on correlated data it lands at least 2x closer than DDIM-20.
"""
from __future__ import annotations

import math

import pytest
import torch

from avfast.diffusion import CosineSchedule
from avfast.diffusion.sampling import sample
from avfast.diffusion.timesteps import SPACINGS, adjust_timesteps, timestep_grid
from test_diffusion_analytic import GaussianDenoiser, correlated_gaussian, independent_gaussian, one_thread  # noqa: F401

F64 = torch.float64


class Recorder:
    """Wraps a denoiser and keeps every call's inputs and outputs."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        out = self.inner(v_t, a_t, t_v, t_a) if labels is None else self.inner(v_t, a_t, t_v, t_a, labels=labels)
        self.calls.append(dict(v=v_t.detach().clone(), a=a_t.detach().clone(), t_v=t_v.clone(), t_a=t_a.clone(),
                               pv=out[0].detach().clone(), pa=out[1].detach().clone(), labels=labels))
        return out


def shapes(den: GaussianDenoiser) -> dict:
    return dict(video_shape=den.video_shape, audio_shape=den.audio_shape, progress=False, dtype=F64)


def start_noise(den: GaussianDenoiser, B: int, seed: int = 0):
    """What `sample` draws for seeds seed..seed+B-1 (documented: per sample, video then audio, float32 on CPU)."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(B)]
    per = [(torch.randn(1, *den.video_shape, generator=g), torch.randn(1, *den.audio_shape, generator=g)) for g in gens]
    return torch.cat([p[0] for p in per]).double(), torch.cat([p[1] for p in per]).double(), gens


def flat(v, a):
    return torch.cat([v.reshape(v.shape[0], -1), a.reshape(a.shape[0], -1)], 1)


# ---------------------------------------------------------------------------------- timestep grids
def test_grids_match_diffusers_ddim_timesteps():
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install \"avfast[vae]\")")
    for spacing in SPACINGS:
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                        timestep_spacing=spacing)
        for steps in (1, 7, 20, 50, 200, 333, 1000):
            sched.set_timesteps(steps)
            assert timestep_grid(steps, 1000, spacing) == [int(i) + 1 for i in sched.timesteps] + [0], (spacing, steps)


def test_gamma_one_is_the_identity_for_every_grid_and_gamma_adjusts():
    for spacing in SPACINGS:
        for steps in range(1, 1001):
            grid = timestep_grid(steps, 1000, spacing)
            assert adjust_timesteps(grid, 1000, 1.0) == (grid, grid)
    grid = timestep_grid(10, 1000, "trailing")
    m, n = adjust_timesteps(grid, 1000, 1.5)
    assert m[0] == n[0] == 1000 and m[-1] == n[-1] == 0
    assert all(mv <= t <= na for mv, t, na in zip(m, grid, n)) and m != grid and n != grid
    assert m[5] == round(1000 * (500 / 1000) ** math.sqrt(1.5)) and n[5] == round(1000 * (500 / 1000) ** (1 / math.sqrt(1.5)))


# ---------------------------------------------------------------------------------- DDIM
def test_one_ddim_step_is_the_closed_form_update():
    # DDIM (Song et al. Eq. 12) written from x0 and ε, step by step, with the documented noise order.
    den = independent_gaussian()
    rec = Recorder(den)
    eta, B, seed = 0.6, 2, 3
    v, a = sample(rec, steps=6, eta=eta, spacing="linspace", seed=seed, batch_size=B, **shapes(den))
    _, _, gens = start_noise(den, B, seed)
    sched = CosineSchedule()
    grid = timestep_grid(6, 1000, "linspace")
    states = [(c["v"], c["a"]) for c in rec.calls] + [(v, a)]
    for k, call in enumerate(rec.calls):
        t, t_next = grid[k], grid[k + 1]
        assert torch.equal(call["t_v"], torch.full((B,), float(t))) and torch.equal(call["t_a"], call["t_v"])
        ab, ab_next = float(sched.alpha_bar(t)), float(sched.alpha_bar(t_next))
        s = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        z = [torch.cat([torch.randn(1, *shape, generator=g) for g in gens]).double()
             for shape in (den.video_shape, den.audio_shape)]
        for m, (x, pred) in enumerate(((call["v"], call["pv"]), (call["a"], call["pa"]))):
            x0 = math.sqrt(ab) * x - math.sqrt(1 - ab) * pred
            eps = math.sqrt(1 - ab) * x + math.sqrt(ab) * pred
            expect = math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next - s ** 2) * eps + s * z[m]
            torch.testing.assert_close(states[k + 1][m], expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spacing,steps,eta", [("leading", 25, 0.0), ("trailing", 20, 0.0), ("leading", 10, 1.0)])
def test_ddim_matches_diffusers_step_for_step(spacing, steps, eta):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install \"avfast[vae]\")")
    den = correlated_gaussian()
    rec = Recorder(den)
    B = 3
    v, a = sample(rec, steps=steps, spacing=spacing, eta=eta, batch_size=B, seed=7, **shapes(den))
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=True,
                                    timestep_spacing=spacing)
    sched.set_timesteps(steps)
    xv, xa, gens = start_noise(den, B, seed=7)
    scale = float(flat(v, a).abs().max())
    for k, i in enumerate(sched.timesteps):
        t = torch.full((B,), float(i) + 1)  # diffusers' index i is our t = i + 1
        torch.testing.assert_close(rec.calls[k]["v"], xv, rtol=0, atol=2e-5 * scale)
        torch.testing.assert_close(rec.calls[k]["a"], xa, rtol=0, atol=2e-5 * scale)
        pv, pa = den(xv, xa, t, t)
        zv = torch.cat([torch.randn(1, *den.video_shape, generator=g) for g in gens]).double() if eta else None
        za = torch.cat([torch.randn(1, *den.audio_shape, generator=g) for g in gens]).double() if eta else None
        xv = sched.step(pv, int(i), xv, eta=eta, variance_noise=zv).prev_sample
        xa = sched.step(pa, int(i), xa, eta=eta, variance_noise=za).prev_sample
    torch.testing.assert_close(v, xv, rtol=0, atol=2e-5 * scale)
    torch.testing.assert_close(a, xa, rtol=0, atol=2e-5 * scale)


def test_dpmpp2m_matches_diffusers_step_for_step():
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install \"avfast[vae]\")")
    den = correlated_gaussian()
    B, steps = 2, 20
    v, a = sample(den, steps=steps, sampler="dpmpp2m", spacing="trailing", batch_size=B, **shapes(den))
    sched = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                                  prediction_type="v_prediction", algorithm_type="dpmsolver++",
                                                  solver_order=2, timestep_spacing="trailing",
                                                  final_sigmas_type="zero")
    sched.set_timesteps(steps)
    assert [int(i) + 1 for i in sched.timesteps] + [0] == timestep_grid(steps, 1000, "trailing")
    xv, xa, _ = start_noise(den, B)
    x = flat(xv, xa)
    for i in sched.timesteps:
        t = torch.full((B,), float(i) + 1)
        pv, pa = den(*den.split(x), t, t)
        x = sched.step(flat(pv, pa), int(i), x).prev_sample
    scale = float(x.abs().max())
    torch.testing.assert_close(flat(v, a), x, rtol=0, atol=1e-4 * scale)


def _exact_flow(den: GaussianDenoiser, xv, xa):
    """The probability-flow map of independent Gaussian data: standardised x_T goes to standardised x0."""
    ab = float(den.schedule.alphas_cumprod[-1])
    s = den.var.sqrt()
    return den.mean + s * (flat(xv, xa) - ab ** 0.5 * den.mean) / (ab * s ** 2 + (1 - ab)).sqrt()


def test_ddim_eta0_recovers_the_data_distribution():
    # Independent data: every sample must land where the exact ODE sends its own starting noise.
    den = independent_gaussian()
    v, a = sample(den, steps=200, spacing="trailing", batch_size=64, **shapes(den))
    xv, xa, _ = start_noise(den, 64)
    assert float((flat(v, a) - _exact_flow(den, xv, xa)).abs().max()) < 0.03
    # Correlated data: the sample mean and covariance are the data's, within sampling error.
    den = correlated_gaussian()
    n = 1500
    x = flat(*sample(den, steps=200, spacing="trailing", batch_size=n, **shapes(den)))
    sd = den.cov.diagonal().sqrt()
    assert bool(((x.mean(0) - den.mean).abs() < 4.5 * sd / math.sqrt(n)).all())
    corr_err = (torch.corrcoef(x.T) - den.cov / (sd[:, None] * sd[None, :])).abs().max()
    assert float(corr_err) < 4.5 / math.sqrt(n) + 0.02
    assert float((x.var(0) / sd ** 2 - 1).abs().max()) < 4.5 * math.sqrt(2 / n) + 0.03


def test_dpmpp2m_20_steps_reaches_ddim_200():
    den = independent_gaussian()
    kw = dict(spacing="trailing", batch_size=64, **shapes(den))
    ddim200 = flat(*sample(den, steps=200, **kw))
    dpm20 = flat(*sample(den, steps=20, sampler="dpmpp2m", **kw))
    assert float((dpm20 - ddim200).abs().max()) < 0.04
    den = correlated_gaussian()
    ddim200 = flat(*sample(den, steps=200, **kw))
    dpm_err = (flat(*sample(den, steps=20, sampler="dpmpp2m", **kw)) - ddim200).abs().max()
    ddim_err = (flat(*sample(den, steps=20, **kw)) - ddim200).abs().max()
    assert float(dpm_err) < 0.5 * float(ddim_err)


# ---------------------------------------------------------------------------------- timestep adjustment
def test_gamma_one_equals_no_adjustment_bitwise_and_gamma_changes_the_run():
    den = correlated_gaussian()
    rec = Recorder(den)
    v1, a1 = sample(rec, steps=12, sampler="dpmpp2m", spacing="trailing", gamma=1.0, batch_size=2, **shapes(den))
    grid = timestep_grid(12, 1000, "trailing")[:-1]
    assert [float(c["t_v"][0]) for c in rec.calls] == grid == [float(c["t_a"][0]) for c in rec.calls]
    # the unadjusted sampler written without the maps: the same coefficients, hence the same bits
    from avfast.diffusion.sampling import _run, _Noise, _Predictor
    from avfast.diffusion.solvers import step_coefficients
    grid = timestep_grid(12, 1000, "trailing")
    coefs = step_coefficients("dpmpp2m", grid, CosineSchedule(), 0.0)
    times = [torch.full((2,), float(t)) for t in grid[:-1]]
    xv, xa, _ = start_noise(den, 2)
    plain = _run(_Predictor(den, None, (1.0, 1.0), F64), [xv, xa], [coefs, coefs], [times, times], "joint", None,
                 "replace", 0.0, _Noise(0, 2, torch.device("cpu"), None), False, "")
    assert torch.equal(v1, plain[0]) and torch.equal(a1, plain[1])
    rec = Recorder(den)
    v2, a2 = sample(rec, steps=12, sampler="dpmpp2m", spacing="trailing", gamma=1.5, batch_size=2, **shapes(den))
    m, n = adjust_timesteps(grid, 1000, 1.5)
    assert [float(c["t_v"][0]) for c in rec.calls] == m[:-1] and [float(c["t_a"][0]) for c in rec.calls] == n[:-1]
    assert not torch.equal(v1, v2)


# ---------------------------------------------------------------------------------- conditional tasks
def test_replacement_keeps_the_condition_on_its_forward_noised_path():
    den = correlated_gaussian()
    g = torch.Generator().manual_seed(9)
    cond_v, cond_a = den.split(den.draw(2, g))
    sched = CosineSchedule()
    for task, cond, key, m in (("v2a", cond_v, "v", 0), ("a2v", cond_a, "a", 1)):
        rec = Recorder(den)
        noise = start_noise(den, 2)[:2]
        out = sample(rec, task=task, condition=cond, steps=8, sampler="dpmpp2m", gamma=1.3, noise=noise,
                     **shapes(den))
        assert torch.equal(out[m], cond)
        for call in rec.calls:
            t = call["t_" + key]
            alpha, sigma = sched.alpha_bar(t).sqrt(), (1 - sched.alpha_bar(t)).sqrt()
            shape = (-1,) + (1,) * (cond.dim() - 1)
            expect = alpha.view(shape) * cond + sigma.view(shape) * noise[m]
            torch.testing.assert_close(call[key], expect, rtol=1e-12, atol=1e-12)
    # clean mode: the condition goes in clean at t = 0 on every step
    rec = Recorder(den)
    sample(rec, task="v2a", condition=cond_v[0], batch_size=2, steps=5, condition_mode="clean", **shapes(den))
    assert all(torch.equal(c["v"], cond_v[:1].expand(2, *den.video_shape)) and not c["t_v"].any() for c in rec.calls)


def _reconstruction_error(den, cond_v, calls, sched):
    """Mean over steps of ‖c - ĉ0‖² where ĉ0 is the model's reconstruction of the conditioning video."""
    errs = []
    for c in calls:
        ab = sched.alpha_bar(c["t_v"][0])
        recon = ab.sqrt() * c["v"] - (1 - ab).sqrt() * c["pv"]
        errs.append(float((recon - cond_v).square().sum()))
    return sum(errs) / len(errs)


def test_reconstruction_guidance_lowers_the_condition_reconstruction_error():
    den = correlated_gaussian()
    g = torch.Generator().manual_seed(11)
    cond_v, _ = den.split(den.draw(4, g))
    sched = CosineSchedule()
    errors, finals = {}, {}
    for lam in (0.0, 0.5):
        rec = Recorder(den)
        v, a = sample(rec, task="v2a", condition=cond_v, batch_size=4, steps=40, guidance=lam, **shapes(den))
        errors[lam] = _reconstruction_error(den, cond_v, rec.calls, sched)
        finals[lam] = a
    assert errors[0.5] < 0.8 * errors[0.0], errors
    # and the audio moves toward the exact conditional mean E[a | v = c]
    nv = den.nv
    S = den.cov
    cond_mean = den.mean[nv:] + (S[nv:, :nv] @ torch.linalg.solve(S[:nv, :nv], (cond_v.reshape(4, -1) - den.mean[:nv]).T)).T
    dist = {lam: float((finals[lam].reshape(4, -1) - cond_mean).square().sum()) for lam in finals}
    assert dist[0.5] < dist[0.0], dist


# ---------------------------------------------------------------------------------- classifier-free guidance
class LabelDenoiser:
    """Per-modality v that depends on the label (label -1 = null): modalities never mix."""

    def __call__(self, v_t, a_t, t_v, t_a, labels):
        lv = labels.to(v_t.dtype).view(-1, *([1] * (v_t.dim() - 1)))
        la = labels.to(a_t.dtype).view(-1, *([1] * (a_t.dim() - 1)))
        return 0.3 * v_t + 0.1 * lv + 0.01 * t_v.view_as(lv), -0.2 * a_t + 0.05 * la * a_t


def test_cfg_formula_and_scale_one_is_the_conditional_prediction():
    kw = dict(video_shape=(1, 2, 2, 2), audio_shape=(2, 3), progress=False, batch_size=2, labels=torch.tensor([3, 5]))
    rec = Recorder(LabelDenoiser())
    v, a = sample(rec, steps=1, cfg_scale=(2.5, 0.5), **kw)
    (call,) = rec.calls  # cond and uncond in one 2B call
    assert call["labels"].tolist() == [3, 5, -1, -1] and call["v"].shape[0] == 4
    pv = call["pv"][2:] + 2.5 * (call["pv"][:2] - call["pv"][2:])
    pa = call["pa"][2:] + 0.5 * (call["pa"][:2] - call["pa"][2:])
    ab = float(CosineSchedule().alpha_bar(1000))
    # one step from T straight to t = 0: x0 = sqrt(ᾱ) x - sqrt(1 - ᾱ) v
    torch.testing.assert_close(v, ab ** 0.5 * call["v"][:2] - (1 - ab) ** 0.5 * pv)
    torch.testing.assert_close(a, ab ** 0.5 * call["a"][:2] - (1 - ab) ** 0.5 * pa)
    # a scale of 1 gives exactly the conditional prediction (video here, audio there)
    cond_only = Recorder(LabelDenoiser())
    v_c, a_c = sample(cond_only, steps=6, **kw)
    assert all(c["labels"].tolist() == [3, 5] for c in cond_only.calls)
    v_1, a_1 = sample(LabelDenoiser(), steps=6, cfg_scale=(1.0, 4.0), **kw)
    assert torch.equal(v_1, v_c) and not torch.equal(a_1, a_c)
    v_2, a_2 = sample(LabelDenoiser(), steps=6, cfg_scale=(3.0, 1.0), **kw)
    assert torch.equal(a_2, a_c) and not torch.equal(v_2, v_c)


# ---------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 0.8), ("dpmpp2m", 0.0)])
def test_a_batch_of_seeds_equals_the_seeds_one_at_a_time(sampler, eta):
    den = independent_gaussian()
    kw = dict(steps=10, sampler=sampler, eta=eta, **shapes(den))
    v, a = sample(den, seed=5, batch_size=3, **kw)
    for i in range(3):
        vi, ai = sample(den, seed=5 + i, **kw)
        assert torch.equal(v[i:i + 1], vi) and torch.equal(a[i:i + 1], ai)
    v2, a2 = sample(den, seed=5, batch_size=3, **kw)
    assert torch.equal(v, v2) and torch.equal(a, a2)
    v3, _ = sample(den, seed=6, batch_size=3, **kw)
    assert not torch.equal(v, v3)
    # noise= with the seed's own starting noise reproduces the run exactly (step noise included)
    xv, xa, _ = start_noise(den, 3, seed=5)
    v4, a4 = sample(den, seed=5, noise=(xv, xa), **kw)
    assert torch.equal(v, v4) and torch.equal(a, a4)


def test_one_generator_for_the_whole_batch():
    den = independent_gaussian()
    kw = dict(steps=5, eta=0.5, batch_size=2, **shapes(den))
    v1, _ = sample(den, generator=torch.Generator().manual_seed(1), **kw)
    v2, _ = sample(den, generator=torch.Generator().manual_seed(1), **kw)
    v3, _ = sample(den, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(v1, v2) and not torch.equal(v1, v3)


# ---------------------------------------------------------------------------------- no host synchronisation
class MetaDenoiser(torch.nn.Module):
    """Differentiable, label-aware, and runs on the meta device (no values at all)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((), 0.5, device="meta"))

    def forward(self, v_t, a_t, t_v, t_a, labels=None):
        mix = a_t.mean((1, 2)).view(-1, 1, 1, 1, 1)
        return self.w * v_t + 0.1 * mix + t_v.view(-1, 1, 1, 1, 1) * 1e-3, self.w * a_t - v_t.mean((1, 2, 3, 4)).view(-1, 1, 1)


@pytest.mark.parametrize("options", [dict(task="joint", sampler="dpmpp2m", gamma=1.5),
                                     dict(task="v2a", guidance=0.3, labels=torch.tensor([1, 2]), cfg_scale=2.0),
                                     dict(task="a2v", condition_mode="clean", sampler="dpmpp2m")])
def test_the_loop_never_reads_a_tensor_value(options):
    # Meta tensors have no data: any .item(), bool(tensor) or host copy inside the loop raises.
    model = MetaDenoiser()
    cond = None
    if options["task"] == "v2a":
        cond = torch.empty(2, 4, 2, 4, 4, device="meta")
    elif options["task"] == "a2v":
        cond = torch.empty(2, 80, 6, device="meta")
    if "labels" in options:
        options = dict(options, labels=options["labels"].to("meta"))
    v, a = sample(model, condition=cond, steps=6, batch_size=2, video_shape=(4, 2, 4, 4), audio_shape=(80, 6),
                  progress=False, **options)
    assert v.device.type == "meta" and v.shape == (2, 4, 2, 4, 4) and a.shape == (2, 80, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch here)")
def test_the_loop_does_not_synchronise_on_cuda():
    # Inputs already on the GPU, so nothing before the loop copies either; any sync raises.
    model = MetaDenoiser().to_empty(device="cuda")
    torch.nn.init.constant_(model.w, 0.5)
    kw = dict(steps=8, batch_size=2, video_shape=(4, 2, 4, 4), audio_shape=(80, 6), progress=False)
    noise = (torch.randn(2, 4, 2, 4, 4, device="cuda"), torch.randn(2, 80, 6, device="cuda"))
    cond = torch.randn(2, 80, 6, device="cuda")
    sample(model, noise=noise, **kw)  # warm up (CUDA context, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for options in (dict(task="joint", sampler="dpmpp2m", gamma=1.5), dict(task="a2v", condition=cond, guidance=0.2),
                        dict(task="joint", eta=0.7)):
            v, a = sample(model, noise=noise, **kw, **options)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert v.is_cuda and bool(torch.isfinite(v).all())


def test_condition_mode_defaults_to_the_models_own():
    """condition_mode=None: a model whose config says 'clean' gets its condition clean at t = 0; one without
    a config (or with guidance > 0) gets replacement."""
    from types import SimpleNamespace

    den = correlated_gaussian()
    cond_v = den.split(den.draw(1, torch.Generator().manual_seed(2)))[0]
    rec = Recorder(den)
    rec.config = SimpleNamespace(video_shape=den.video_shape, audio_shape=den.audio_shape, condition_mode="clean")
    own = sample(rec, task="v2a", condition=cond_v, steps=3, seed=1, progress=False, dtype=F64)
    assert rec.calls and all(not c["t_v"].any() for c in rec.calls)  # clean: t = 0 on every step
    explicit = sample(rec, task="v2a", condition=cond_v, steps=3, seed=1, progress=False, dtype=F64,
                      condition_mode="clean")
    assert torch.equal(own[1], explicit[1])
    rec.calls.clear()
    sample(rec, task="v2a", condition=cond_v, steps=3, seed=1, progress=False, dtype=F64, guidance=0.1)
    assert all(c["t_v"].all() for c in rec.calls)  # guidance needs replacement: the condition is noised
    bare = Recorder(den)
    sample(bare, task="v2a", condition=cond_v, steps=3, seed=1, **shapes(den))
    assert all(c["t_v"].all() for c in bare.calls)
