"""`avfast.diffusion.sample`: the plain sampler function (no longer a callable module), shapes from a model's
config, the real U-Net, and every bad input."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

import avfast
from avfast.diffusion import sample
from test_diffusion_analytic import independent_gaussian, one_thread  # noqa: F401

VS, AS = (1, 2, 2, 2), (2, 3)


class WithConfig:
    """The analytic denoiser behind an object that carries a model-like `.config`."""

    def __init__(self, num_classes=0):
        self.inner = independent_gaussian(VS, AS)
        self.config = SimpleNamespace(video_shape=VS, audio_shape=AS, num_train_steps=1000, num_classes=num_classes)

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        return self.inner(v_t, a_t, t_v, t_a)


def test_sampler_is_a_plain_function_and_the_module_is_not_callable():
    from avfast.diffusion.sampling import sample as function

    assert function is sample and callable(sample) and not callable(avfast.sample)  # avfast.sample: the CLI module
    with pytest.warns(DeprecationWarning, match=re.escape("use avfast.diffusion.sample")):
        from avfast.sample import sample as deprecated  # one release of the old import
    assert deprecated is sample
    model = WithConfig()
    out = sample(model, steps=5, seed=3, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(out, function(model, steps=5, seed=3, progress=False)))
    assert out[0].shape == (1, *VS) and out[1].shape == (1, *AS)  # shapes from .config


class AnyShape(WithConfig):
    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        return 0.5 * v_t, 0.5 * a_t


def test_explicit_shapes_override_the_config_and_dtype_follows_noise():
    model = AnyShape()
    v, a = sample(model, steps=3, video_shape=(1, 4, 2, 2), audio_shape=(2, 5), batch_size=2, progress=False)
    assert v.shape == (2, 1, 4, 2, 2) and a.shape == (2, 2, 5)
    noise = (torch.randn(3, *VS, dtype=torch.float64), torch.randn(3, *AS, dtype=torch.float64))
    v, a = sample(model, steps=3, noise=noise, progress=False)
    assert v.dtype == torch.float64 and v.shape[0] == 3


def test_with_the_joint_unet():
    from avfast import models

    torch.manual_seed(0)
    net = models.create("tiny", frames=4, audio_length=16, num_classes=3).eval()
    v, a = sample(net, steps=3, sampler="dpmpp2m", batch_size=2, labels=torch.tensor([0, 2]),
                         cfg_scale=(2.0, 1.5), gamma=1.5, progress=False)
    assert v.shape == (2, *net.config.video_shape) and a.shape == (2, *net.config.audio_shape)
    assert bool(torch.isfinite(v).all() and torch.isfinite(a).all())
    cond = torch.randn(net.config.video_shape)
    v2, a2 = sample(net, task="v2a", condition=cond, steps=2, guidance=0.1, progress=False)
    assert torch.equal(v2[0], cond) and bool(torch.isfinite(a2).all())


def test_progress_bar_is_shown(capsys):
    sample(WithConfig(), steps=4, progress=True)
    err = capsys.readouterr().err
    assert "ddim joint" in err and "/4" in err
    sample(WithConfig(), steps=4, progress=False)
    assert capsys.readouterr().err == ""


class NoGrad(WithConfig):
    supports_grad = False


class WrongShape(WithConfig):
    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        return v_t[:, :, :1], a_t


BAD = [
    (dict(steps=0), ValueError, "`steps` must be an int in [1, 1000]"),
    (dict(steps=1001), ValueError, "`steps` must be an int in [1, 1000]"),
    (dict(steps=2.5), ValueError, "`steps`"),
    (dict(sampler="euler"), ValueError, "`sampler` must be one of ('ddim', 'dpmpp2m'), got 'euler'"),
    (dict(task="t2v"), ValueError, "`task` must be one of ('joint', 'v2a', 'a2v'), got 't2v'"),
    (dict(spacing="karras"), ValueError, "`spacing` must be one of"),
    (dict(condition_mode="noisy"), ValueError, "`condition_mode` must be one of"),
    (dict(task="v2a"), TypeError, "task 'v2a' needs `condition`: the video in model space"),
    (dict(task="v2a", condition=torch.zeros(1, *AS)), ValueError, "`condition` for task 'v2a' must be the video"),
    (dict(task="a2v", condition=torch.zeros(1, *VS)), ValueError, "`condition` for task 'a2v' must be the audio"),
    (dict(task="a2v", condition=torch.zeros(3, *AS), batch_size=2), ValueError, "with B = 2"),
    (dict(condition=torch.zeros(1, *VS)), ValueError, "`condition` is only for task 'v2a' or 'a2v'"),
    (dict(task="v2a", condition=torch.zeros(VS), guidance=-0.1), ValueError, "`guidance` must be a finite number >= 0"),
    (dict(guidance=0.5), ValueError, "applies to task 'v2a' or 'a2v'"),
    (dict(task="v2a", condition=torch.zeros(VS), guidance=0.5, condition_mode="clean"), ValueError,
     "needs condition_mode='replace'"),
    (dict(gamma=0.0), ValueError, "`gamma` (timestep adjustment) must be a finite number > 0"),
    (dict(gamma=-1.0), ValueError, "`gamma`"),
    (dict(gamma=float("nan")), ValueError, "`gamma`"),
    (dict(eta=-0.5), ValueError, "`eta` must be a finite number >= 0"),
    (dict(eta=0.5, sampler="dpmpp2m"), ValueError, "is a DDIM option"),
    (dict(cfg_scale=3.0), ValueError, "needs `labels`"),
    (dict(cfg_scale=(1.0, 2.0, 3.0), labels=1), ValueError, "`cfg_scale` must be a finite number or a (video, audio) pair"),
    (dict(labels=torch.tensor([0.5])), TypeError, "`labels` must be integer class ids"),
    (dict(labels=torch.tensor([1, 2, 3]), batch_size=2), ValueError, "`labels` must be an int or a [B] = [2] tensor"),
    (dict(noise=(torch.zeros(1, *VS), torch.zeros(1, 2, 4))), ValueError, "`noise[1] (audio)` must have shape [B, 2, 3]"),
    (dict(noise=torch.zeros(1, *VS)), TypeError, "`noise` must be a (video, audio) pair"),
    (dict(noise=(torch.zeros(2, *VS), torch.zeros(2, *AS)), batch_size=3), ValueError, "disagrees with the batch"),
    (dict(batch_size=0), ValueError, "`batch_size` must be an int >= 1"),
    (dict(seed=-1), ValueError, "`seed` must be an int >= 0"),
    (dict(video_shape=(1, 0, 2, 2)), ValueError, "`video_shape` must be a tuple of positive ints"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_named(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        sample(WithConfig(num_classes=4), progress=False, **kwargs)


def test_bad_models():
    with pytest.raises(ValueError, match=re.escape("`video_shape` is required: the model has no `.config.video_shape`")):
        sample(lambda v, a, tv, ta: (v, a), progress=False)
    with pytest.raises(TypeError, match="`model` must be a callable denoiser"):
        sample("model.safetensors", progress=False)
    with pytest.raises(ValueError, match="supports_grad = False"):
        sample(NoGrad(), task="a2v", condition=torch.zeros(AS), guidance=1.0, progress=False)
    with pytest.raises(ValueError, match=re.escape("the denoiser returned shapes [1, 1, 1, 2, 2]")):
        sample(WrongShape(), steps=2, progress=False)
    with pytest.raises(ValueError, match=re.escape("no label conditioning (config.num_classes = 0)")):
        sample(WithConfig(num_classes=0), labels=1, progress=False)


class HalfModel(torch.nn.Module):
    """A bf16 'model' around the exact denoiser: it sees bf16 inputs and answers in bf16."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.bfloat16))
        self.inner = independent_gaussian(VS, AS)
        self.config = SimpleNamespace(video_shape=VS, audio_shape=AS, num_train_steps=1000)
        self.input_dtypes = set()

    def forward(self, v_t, a_t, t_v, t_a):
        self.input_dtypes.add(v_t.dtype)
        v, a = self.inner(v_t.double(), a_t.double(), t_v, t_a)
        return v.to(v_t.dtype), a.to(a_t.dtype)


def test_half_precision_model_keeps_a_float32_state():
    model = HalfModel()
    v, a = sample(model, steps=50, batch_size=8, progress=False)
    assert v.dtype == a.dtype == torch.bfloat16 and model.input_dtypes == {torch.bfloat16}
    v32, a32 = sample(model.inner, steps=50, batch_size=8, video_shape=VS, audio_shape=AS, progress=False)
    # bf16 keeps 8 bits of mantissa: each prediction is off by ~0.4 %, the state itself is not rounded
    assert float((v.float() - v32).abs().max()) < 0.02 and float((a.float() - a32).abs().max()) < 0.02  # measured 0.008
