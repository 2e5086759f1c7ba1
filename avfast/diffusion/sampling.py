"""`avfast.diffusion.sample`: joint, video→audio and audio→video generation with DDIM or DPM-Solver++(2M).

Everything that depends only on the arguments (timestep grids, Sony's per-modality maps, every
step's coefficients as Python floats, the timestep tensors, the starting noise) is prepared before
the loop; the loop itself only calls the denoiser and does a few fused tensor ops per modality. It
never reads a tensor's value on the host, so on a GPU it queues work without synchronising.

Conditional tasks (CMMD §2.1, Eq. 3):
  condition_mode="replace"  the given modality is forward-noised to the current step with fixed noise
                            (its starting noise), x_t = α_t c + σ_t ε_c; with guidance λ > 0 the
                            generated modality's x0 estimate moves by -λ·sqrt(ᾱ_t)·∇_{x_t}‖c - ĉ0‖²
                            (reconstruction guidance; λ = 0 is plain replacement).
  condition_mode="clean"    the given modality is passed clean at t = 0 (models trained with
                            independent timesteps, `sample_timesteps(..., clean_prob > 0)`).
Randomness: sample i of a batch draws its starting noise (video, then audio; float32 on the CPU)
from `torch.Generator().manual_seed(seed + i)`, so a batch gives the clips of its seeds one at a
time. DDIM with η > 0 then draws each step's noise (video, then audio) per sample from the same CPU
generator on CPU, or from a generator on the sampling device seeded `seed + i` elsewhere (no
host-to-device copy inside the loop). A `generator=` replaces all of this with one generator
drawing for the whole batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .distilled import resolve
from .protocol import Denoiser, supports_grad
from .schedule import CosineSchedule
from .solvers import SAMPLERS, StepCoefficients, step_coefficients
from .timesteps import SPACINGS, adjust_timesteps, check_gamma, timestep_grid

TASKS = ("joint", "v2a", "a2v")
CONDITION_MODES = ("replace", "clean")
NULL_LABEL = -1  # the model's learned "no label" class (classifier-free guidance)
DEFAULT_NUM_TRAIN_STEPS = 1000


# --------------------------------------------------------------------------------- argument checks
def _shape_from(name: str, given: Sequence[int] | None, config: Any, attr: str) -> tuple[int, ...]:
    shape = given if given is not None else getattr(config, attr, None)
    if shape is None:
        raise ValueError(f"`{name}` is required: the model has no `.config.{attr}` (give the shape without the "
                         f"batch dimension, e.g. (C, F, H, W) for video, (80, T) for audio)")
    shape = tuple(shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"`{name}` must be a tuple of positive ints without the batch dimension, got {shape!r}")
    return shape


def _cfg_pair(cfg_scale: float | Sequence[float]) -> tuple[float, float]:
    pair = (cfg_scale, cfg_scale) if isinstance(cfg_scale, (int, float)) else tuple(cfg_scale)
    if len(pair) != 2 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
                                 for s in pair):
        raise ValueError(f"`cfg_scale` must be a finite number or a (video, audio) pair of them, got {cfg_scale!r}")
    return float(pair[0]), float(pair[1])


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return float(value)


def _device_dtype(model: Any, noise, device, dtype) -> tuple[torch.device, torch.dtype]:
    """Explicit arguments, else the model's parameters, else `noise`, else the model's `.device` /
    `.dtype` attributes (runtime wrappers), else CPU float32."""
    ref = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    ref = ref if ref is not None else (noise[0] if noise is not None else None)
    if device is None:
        device = ref.device if ref is not None else getattr(model, "device", None) or "cpu"
    if dtype is None:
        dtype = ref.dtype if ref is not None else getattr(model, "dtype", None) or torch.float32
    return torch.device(device), dtype


def _check_noise(noise, shapes: tuple[tuple[int, ...], tuple[int, ...]], batch_size: int) -> int:
    if not (isinstance(noise, (tuple, list)) and len(noise) == 2 and all(isinstance(n, torch.Tensor) for n in noise)):
        raise TypeError(f"`noise` must be a (video, audio) pair of tensors, got {type(noise).__name__}")
    B = noise[0].shape[0] if noise[0].dim() else 0
    for name, n, shape in (("noise[0] (video)", noise[0], shapes[0]), ("noise[1] (audio)", noise[1], shapes[1])):
        if tuple(n.shape) != (B, *shape):
            raise ValueError(f"`{name}` must have shape [B, {', '.join(map(str, shape))}], got {list(n.shape)}")
    if batch_size not in (1, B):
        raise ValueError(f"`batch_size` ({batch_size}) disagrees with the batch of `noise` ({B})")
    return B


def _check_condition(condition, task: str, shape: tuple[int, ...], B: int, device, dtype) -> torch.Tensor:
    modality = "video" if task == "v2a" else "audio"
    layout = f"[{', '.join(map(str, shape))}] or [B, {', '.join(map(str, shape))}]"
    if not isinstance(condition, torch.Tensor):
        raise TypeError(f"task {task!r} needs `condition`: the {modality} in model space, {layout}; got "
                        f"{type(condition).__name__}")
    if tuple(condition.shape) == shape:
        condition = condition.unsqueeze(0)
    if tuple(condition.shape[1:]) != shape or condition.shape[0] not in (1, B):
        raise ValueError(f"`condition` for task {task!r} must be the {modality}, {layout} with B = {B}; got "
                         f"{list(condition.shape)}")
    return condition.to(device, dtype).expand(B, *shape)


def _labels(labels, B: int, device) -> torch.Tensor | None:
    if labels is None:
        return None
    labels = torch.as_tensor(labels, device=device)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must be integer class ids, got dtype {labels.dtype}")
    if labels.dim() == 0:
        labels = labels.reshape(1)
    if labels.dim() != 1 or labels.shape[0] not in (1, B):
        raise ValueError(f"`labels` must be an int or a [B] = [{B}] tensor, got shape {list(labels.shape)}")
    return labels.long().expand(B).contiguous()


# --------------------------------------------------------------------------------- noise
class _Noise:
    """Per-sample random streams (see the module docstring)."""

    def __init__(self, seed: int, B: int, device: torch.device, generator: torch.Generator | None) -> None:
        self.device, self.generator = device, generator
        self.cpu = [torch.Generator().manual_seed(seed + i) for i in range(B)] if generator is None else []
        self.on_device: list[torch.Generator] | None = None
        self.seed = seed

    def start(self, shapes: tuple[tuple[int, ...], ...]) -> list[torch.Tensor]:
        """Starting noise of each shape, float32 where drawn (the caller moves it to the device)."""
        if self.generator is not None:
            return [torch.randn(shape, generator=self.generator, device=self.generator.device) for shape in shapes]
        per_sample = [[torch.randn((1, *shape[1:]), generator=g) for shape in shapes] for g in self.cpu]
        return [torch.cat([s[m] for s in per_sample]) for m in range(len(shapes))]

    def step(self, like: torch.Tensor) -> torch.Tensor:
        if self.generator is not None:
            return torch.randn(like.shape, generator=self.generator, device=self.generator.device).to(like)
        if self.device.type == "cpu":
            gens = self.cpu
        else:
            if self.on_device is None:
                self.on_device = [torch.Generator(self.device).manual_seed(self.seed + i) for i in range(len(self.cpu))]
            gens = self.on_device
        return torch.cat([torch.randn((1, *like.shape[1:]), generator=g, device=g.device) for g in gens]).to(like)


# --------------------------------------------------------------------------------- the loop
class _Predictor:
    """Calls the denoiser for one step, with classifier-free guidance batched into one 2B call."""

    def __init__(self, denoiser: Denoiser, labels: torch.Tensor | None, cfg: tuple[float, float],
                 dtype: torch.dtype) -> None:
        self.denoiser, self.cfg, self.dtype = denoiser, cfg, dtype
        self.use_cfg = labels is not None and cfg != (1.0, 1.0)
        self.labels = torch.cat([labels, torch.full_like(labels, NULL_LABEL)]) if self.use_cfg else labels

    def __call__(self, v, a, t_v, t_a):
        if self.use_cfg:
            out_v, out_a = self._call(torch.cat([v, v]), torch.cat([a, a]), t_v, t_a)
            (cond_v, uncond_v), (cond_a, uncond_a) = out_v.chunk(2), out_a.chunk(2)
            return torch.lerp(uncond_v, cond_v, self.cfg[0]), torch.lerp(uncond_a, cond_a, self.cfg[1])
        return self._call(v, a, t_v, t_a)

    def _call(self, v, a, t_v, t_a):
        v, a = v.to(self.dtype), a.to(self.dtype)  # the state may be wider than the model (fp32 for fp16)
        out = self.denoiser(v, a, t_v, t_a) if self.labels is None else self.denoiser(v, a, t_v, t_a, labels=self.labels)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"the denoiser must return (v_pred, a_pred), got {type(out).__name__}")
        if out[0].shape != v.shape or out[1].shape != a.shape:
            raise ValueError(f"the denoiser returned shapes {list(out[0].shape)} and {list(out[1].shape)} for inputs "
                             f"{list(v.shape)} and {list(a.shape)}")
        return out


def _update(x: torch.Tensor, v: torch.Tensor, c: StepCoefficients, x0_prev: torch.Tensor | None,
            noise: torch.Tensor | None) -> torch.Tensor:
    out = torch.add(x * c.cx, v, alpha=c.cv)
    if c.cprev:
        out.add_(x0_prev, alpha=c.cprev)
    if noise is not None:
        out.add_(noise, alpha=c.cnoise)
    return out


def _run(predict: _Predictor, x: list[torch.Tensor], coefs: list[list[StepCoefficients]],
         times: list[list[torch.Tensor]], task: str, condition: torch.Tensor | None, mode: str,
         guidance: float, noise: _Noise, progress: bool, desc: str) -> list[torch.Tensor]:
    """x = [video, audio] state; coefs/times per modality and step. Returns the final [video, audio]."""
    gen = {"joint": (0, 1), "v2a": (1,), "a2v": (0,)}[task]
    cond = None if task == "joint" else 1 - gen[0]
    eps_cond = x[cond] if cond is not None else None   # replacement noise = the condition's starting noise
    steps = len(coefs[0])
    # x0 is materialised only where the next step needs it (multistep history) or guidance shifts it.
    keep_x0 = [[k + 1 < steps and coefs[m][k + 1].cprev != 0.0 for k in range(steps)] for m in range(2)]
    x0_prev: list[torch.Tensor | None] = [None, None]
    for k in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if cond is not None:
            c = coefs[cond][k]
            x[cond] = condition if mode == "clean" else torch.add(condition * c.alpha, eps_cond, alpha=c.sigma)
        t_v, t_a = times[0][k], times[1][k]
        if guidance > 0:
            g = gen[0]
            with torch.enable_grad():
                x_in = list(x)
                x_in[g] = x[g].detach().requires_grad_(True)
                pred = list(predict(x_in[0], x_in[1], t_v, t_a))
                c = coefs[cond][k]
                recon = x[cond] * c.alpha - pred[cond] * c.sigma
                (grad,) = torch.autograd.grad((condition - recon).square().sum(), x_in[g])
            pred = [p.detach() for p in pred]
            shift = grad * (-guidance * coefs[g][k].alpha)   # x0 ← x0 - λ sqrt(ᾱ_t) ∇‖c - ĉ0‖²
        else:
            pred = list(predict(x[0], x[1], t_v, t_a))
            shift = None
        for m in gen:
            c = coefs[m][k]
            z = noise.step(x[m]) if c.cnoise else None
            new = _update(x[m], pred[m], c, x0_prev[m], z)
            if shift is not None:
                new.add_(shift, alpha=c.c_x0)
            if keep_x0[m][k]:
                x0 = torch.add(x[m] * c.alpha, pred[m], alpha=-c.sigma)
                x0_prev[m] = x0 if shift is None else x0.add_(shift)
            x[m] = new
    if cond is not None:
        x[cond] = condition
    return x


# --------------------------------------------------------------------------------- public API
def sample(model: Denoiser, task: str = "joint", condition: torch.Tensor | None = None, steps: int | None = None,
           sampler: str | None = None, seed: int = 0, batch_size: int = 1, eta: float = 0.0,
           spacing: str | None = None, guidance: float = 0.0, condition_mode: str | None = None,
           gamma: float | None = None,
           cfg_scale: float | Sequence[float] = (1.0, 1.0), labels: torch.Tensor | int | None = None,
           video_shape: Sequence[int] | None = None, audio_shape: Sequence[int] | None = None,
           noise: tuple[torch.Tensor, torch.Tensor] | None = None, progress: bool = True,
           generator: torch.Generator | None = None, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate (video, audio) in model space: video [B, *video_shape], audio [B, *audio_shape].

    model: any `Denoiser` (the joint U-Net, or an exported runtime wrapped the same way). Shapes and
        T come from `model.config` (`video_shape`, `audio_shape`, `num_train_steps`) when it has one;
        `video_shape=` / `audio_shape=` override them and are required for a bare callable.
    task: "joint", "v2a" (condition = video [B, *video_shape] or unbatched) or "a2v" (condition = audio).
        For v2a/a2v the condition is returned as the given modality.
    steps / sampler / spacing / eta: 1 ≤ steps ≤ T; "ddim" (η ≥ 0) or "dpmpp2m" (η must be 0);
        grids as diffusers' leading / trailing / linspace spacing. None (the defaults): a distilled
        student's (`model.config.distilled_steps`, its sampler, trailing), else 200, "ddim", "trailing";
        a student's other step counts are checked (avfast.diffusion.distilled: a multiple of its count
        warns, anything else is refused).
    guidance: reconstruction-guidance weight λ ≥ 0 for v2a/a2v (0 = replacement). Needs autograd
        through the denoiser (`supports_grad` not False) and condition_mode="replace".
    condition_mode: "replace" (forward-noise the condition) or "clean" (pass it at t = 0). None: the model's
        own (`model.config.condition_mode`: "clean" for a model trained with clean conditions; "replace"
        without a config, and with guidance > 0, which needs it).
    gamma: Sony's timestep adjustment γ > 0 (1 = none); video follows m(t), audio n(t). None: a distilled
        student's `distilled_gamma`, else 1.
    cfg_scale, labels: classifier-free guidance per modality (video, audio); pred = u + s (c - u),
        u with labels = -1 (the null label). Scale 1 (both) is the plain conditional prediction.
    noise: (v_T, a_T) fixes the starting noise (batch taken from it); else drawn from `seed`
        (sample i from seed + i) or from `generator`.
    device / dtype: default to the model's parameters, else `noise`, else the model's `.device` /
        `.dtype`, else CPU float32. With fp16/bf16 the sampler keeps its state in float32 and casts
        the denoiser's inputs; the result comes back in `dtype`.
    """
    if not callable(model):
        raise TypeError(f"`model` must be a callable denoiser (v_t, a_t, t_v, t_a[, labels]) -> (v, a), got "
                        f"{type(model).__name__}")
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    steps, sampler, spacing, gamma = resolve(getattr(model, "config", None), steps, sampler, spacing, gamma, eta)
    if sampler not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"`spacing` must be one of {SPACINGS}, got {spacing!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0, got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    eta, guidance, gamma = _non_negative("eta", eta), _non_negative("guidance", guidance), check_gamma(gamma)
    if condition_mode is None:
        own = getattr(getattr(model, "config", None), "condition_mode", "replace")
        condition_mode = "replace" if guidance or own not in CONDITION_MODES else own
    if condition_mode not in CONDITION_MODES:
        raise ValueError(f"`condition_mode` must be one of {CONDITION_MODES}, got {condition_mode!r}")
    if eta > 0 and sampler != "ddim":
        raise ValueError(f"`eta` > 0 (stochastic sampling) is a DDIM option; sampler {sampler!r} needs eta = 0")
    if task == "joint" and condition is not None:
        raise ValueError("`condition` is only for task 'v2a' or 'a2v'; task 'joint' generates both modalities")
    if guidance > 0:
        if task == "joint":
            raise ValueError("`guidance` (reconstruction guidance λ) applies to task 'v2a' or 'a2v', not 'joint'")
        if condition_mode != "replace":
            raise ValueError("`guidance` > 0 needs condition_mode='replace' (a clean condition has nothing to "
                             "reconstruct)")
        if not supports_grad(model):
            name = getattr(model, "name", None) or type(model).__name__
            raise ValueError(f"`guidance` > 0 needs gradients through the denoiser, and this {name} denoiser has "
                             f"none (supports_grad = False); use guidance=0 (replacement)")
    cfg = _cfg_pair(cfg_scale)
    if cfg != (1.0, 1.0) and labels is None:
        raise ValueError(f"`cfg_scale` = {cfg} needs `labels` (classifier-free guidance compares the labelled "
                         f"prediction with the null label's); pass labels= or leave cfg_scale at 1")

    config = getattr(model, "config", None)
    if labels is not None and getattr(config, "num_classes", None) == 0:
        raise ValueError("`labels` were given but the model has no label conditioning (config.num_classes = 0)")
    shapes = (_shape_from("video_shape", video_shape, config, "video_shape"),
              _shape_from("audio_shape", audio_shape, config, "audio_shape"))
    T = int(getattr(config, "num_train_steps", DEFAULT_NUM_TRAIN_STEPS))
    device, dtype = _device_dtype(model, noise, device, dtype)
    B = _check_noise(noise, shapes, batch_size) if noise is not None else batch_size
    if task != "joint":
        condition = _check_condition(condition, task, shapes[0 if task == "v2a" else 1], B, device, dtype)
    label_ids = _labels(labels, B, device)

    schedule = CosineSchedule(T)
    grid = timestep_grid(steps, T, spacing)
    local = adjust_timesteps(grid, T, gamma)
    if condition_mode == "clean" and task != "joint":
        cond = 0 if task == "v2a" else 1
        local = tuple([0] * len(grid) if m == cond else local[m] for m in range(2))
    coefs = [step_coefficients(sampler, local[m], schedule, eta) for m in range(2)]
    reps = 2 if label_ids is not None and cfg != (1.0, 1.0) else 1
    times = [[torch.full((reps * B,), float(t), device=device) for t in local[m][:-1]] for m in range(2)]

    rng = _Noise(seed, B, device, generator)
    drawn = rng.start(((B, *shapes[0]), (B, *shapes[1])))  # drawn even when `noise` replaces it, so the
    # Half-precision models get a float32 state: 200 updates rounded to fp16 would drift.
    state = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    if condition is not None:
        condition = condition.to(state)
    x = [n.to(device, state) for n in (noise if noise is not None else drawn)]  # step noise is the same either way
    predict = _Predictor(model, label_ids, cfg, dtype)
    with torch.no_grad():
        out = _run(predict, x, coefs, times, task, condition, condition_mode, guidance, rng, progress,
                   desc=f"{sampler} {task}")
    return out[0].to(dtype), out[1].to(dtype)
