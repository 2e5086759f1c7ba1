"""Input checks of the joint U-Net's forward: every bad argument is named with what was expected.

Shape, dtype and device checks are Python comparisons (free under torch.compile). Value checks
(timesteps in range, no NaN, labels in range) read tensor data: on CPU they run eagerly; on other
devices they use `torch._assert_async`, so a sampler never waits on the GPU for them.
"""
from __future__ import annotations

import torch

from .config import ModelConfig

MODEL = "JointUNet"


def _value_check(cond: torch.Tensor, message: str) -> None:
    if torch.compiler.is_compiling():
        return
    if cond.device.type == "cpu":
        if not bool(cond):
            raise ValueError(message)
    else:
        torch._assert_async(cond, message)


def _timesteps(name: str, t, B: int, device: torch.device, T: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"{MODEL}: `{name}` must be a number or a tensor of shape [{B}], got {type(t).__name__}")
        t = torch.tensor(float(t), device=device)
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{MODEL}: `{name}` must be a real (float or int) tensor, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{MODEL}: `{name}` is on {t.device} but the inputs are on {device}")
    if t.dim() == 0 or (t.dim() == 1 and t.numel() == 1):
        t = t.reshape(1).expand(B)
    elif t.shape != (B,):
        raise ValueError(f"{MODEL}: `{name}` must be a scalar or have shape [{B}] (one timestep per sample), "
                         f"got shape {list(t.shape)}")
    t = t.float()
    _value_check(~torch.isnan(t).any(), f"{MODEL}: `{name}` contains NaN")
    _value_check(((t >= 0) & (t <= T)).all(), f"{MODEL}: `{name}` must lie in [0, {T}] (0 = clean data), "
                 f"got values outside it")
    return t


def check_inputs(cfg: ModelConfig, v_t, a_t, t_v, t_a, labels, self_cond):
    for name, x, rank, layout, ch in (("v_t", v_t, 5, "[B, C, F, H, W]", cfg.video_channels),
                                      ("a_t", a_t, 3, "[B, mel_bins, T]", cfg.mel_bins)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{MODEL}: `{name}` must be a tensor {layout}, got {type(x).__name__}")
        if x.dim() != rank:
            raise ValueError(f"{MODEL}: `{name}` must be {rank}-D {layout}, got shape {list(x.shape)}")
        if x.shape[1] != ch:
            raise ValueError(f"{MODEL}: `{name}` must have {ch} channels (dim 1) for this model, got "
                             f"{x.shape[1]} (shape {list(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"{MODEL}: `{name}` must be a floating-point tensor, got {x.dtype}")
        if any(s == 0 for s in x.shape):
            raise ValueError(f"{MODEL}: `{name}` must not be empty, got shape {list(x.shape)}")
    if v_t.dtype != a_t.dtype:
        raise TypeError(f"{MODEL}: `v_t` and `a_t` must have the same dtype, got {v_t.dtype} and {a_t.dtype}")
    if v_t.device != a_t.device:
        raise ValueError(f"{MODEL}: `v_t` and `a_t` must be on the same device, got {v_t.device} and {a_t.device}")
    B = v_t.shape[0]
    if a_t.shape[0] != B:
        raise ValueError(f"{MODEL}: batch sizes differ: `v_t` has {B} samples, `a_t` has {a_t.shape[0]}")
    T = cfg.num_train_steps
    t_v = _timesteps("t_v", t_v, B, v_t.device, T)
    t_a = _timesteps("t_a", t_a, B, v_t.device, T)
    if labels is not None:
        if cfg.num_classes == 0:
            raise ValueError(f"{MODEL}: `labels` were given but this model has no label conditioning "
                             f"(config.num_classes = 0)")
        if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"{MODEL}: `labels` must be an integer tensor of shape [{B}], got "
                            f"{getattr(labels, 'dtype', type(labels).__name__)}")
        if labels.shape != (B,):
            raise ValueError(f"{MODEL}: `labels` must have shape [{B}], got {list(labels.shape)}")
        if labels.device != v_t.device:
            raise ValueError(f"{MODEL}: `labels` is on {labels.device} but the inputs are on {v_t.device}")
        _value_check(((labels >= -1) & (labels < cfg.num_classes)).all(),
                     f"{MODEL}: `labels` must lie in [0, {cfg.num_classes - 1}] or be -1 (the null label)")
    if self_cond is not None:
        if cfg.fusion != "cmcpe":
            raise ValueError(f"{MODEL}: `self_cond` is read by the CMC-PE connector only; this model's fusion is "
                             f"{cfg.fusion!r}")
        if not isinstance(self_cond, (tuple, list)) or len(self_cond) != 2:
            raise TypeError(f"{MODEL}: `self_cond` must be a pair (x0_video or None, x0_audio or None)")
        for name, x, ref in (("self_cond[0]", self_cond[0], v_t), ("self_cond[1]", self_cond[1], a_t)):
            if x is not None and (not isinstance(x, torch.Tensor) or x.shape != ref.shape):
                raise ValueError(f"{MODEL}: `{name}` must match its modality's input shape {list(ref.shape)}, "
                                 f"got {list(getattr(x, 'shape', [])) or type(x).__name__}")
    return t_v, t_a, labels
