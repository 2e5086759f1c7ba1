"""Parity of an exported runtime against the PyTorch model on the same inputs.

The error is the largest absolute difference, taken relative to the reference output's scale (its
largest magnitude), per modality. Bounds:
  fp32  1e-4: both sides compute in fp32; they differ only in summation order (convolution and matmul
        algorithms), which costs a few ulps per layer: ~1e-6 relative is typical, 1e-4 leaves room for
        other CPUs/GPUs' kernels but catches any real translation error (a wrong resize rule, a lost
        epsilon, a transposed weight all show up at 1e-2 or more).
  fp16  1e-2: against the fp32 model. fp16's unit roundoff is 2^-11 = 4.9e-4; rounding enters at every
        matmul/convolution input (fp32 accumulation) through ~30 layers of a residual U-Net, so errors of
        a few 1e-3 relative are expected (1.2e-3 measured on `tiny`); 1e-2 is ~20 unit roundoffs.
  bf16  5e-2: bf16 keeps 8 significant bits (unit roundoff 2^-8 = 3.9e-3, 8x fp16's), so the same
        depth gives ~8x fp16's error; 5e-2 is ~13 unit roundoffs.
  int8  INT8_BOUND: against the fp32 model (avfast.export.int8: convolution and matmul inputs in int8,
        elementwise ops in float). An int8 activation keeps 256 levels over its tensor's calibrated range,
        so one rounding is up to 2^-8 = 3.9e-3 of the range (bf16's unit roundoff, but relative to the
        tensor's range instead of each value), and a range fixed across timesteps is wider than any one
        timestep's; through ~30 quantised layers the largest element's error (the max over ~10^5
        outputs) measured 0.10-0.52 of the output's scale on the default model along the sampler's
        trajectory (ONNX Runtime, worst at t = T) and up to 0.65 on OpenVINO, which also quantises both
        attention matmuls, for a random-weight `tiny` (docs/int8.md). 1.0 passes those and fails what
        a broken int8 export gives: an uncalibrated one (NNCF's defaults, elementwise inputs in int8)
        measured 3.1-3.3. It is a translation check, not a quality one: whether int8 sampling stays within
        the fp32 row's CI is the quality report's (--runtime openvino --precision int8). `rms_relative`
        (RMS error over the output's RMS) is recorded alongside.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

INT8_BOUND = 1.0
BOUNDS = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2, "int8": INT8_BOUND}


class ParityError(ValueError):
    """An exported runtime's outputs differ from PyTorch's by more than the precision's bound."""


@dataclass
class ModalityError:
    max_abs_error: float
    scale: float          # max |reference output|
    relative: float       # max_abs_error / scale
    rms_relative: float = float("nan")  # RMS error / RMS of the reference (the typical element's error)


@dataclass
class Parity:
    runtime: str
    reference: str
    precision: str
    bound: float
    video: ModalityError
    audio: ModalityError

    @property
    def worst(self) -> float:
        return max(self.video.relative, self.audio.relative)

    @property
    def passed(self) -> bool:
        return self.worst <= self.bound

    def as_dict(self) -> dict:
        return {**asdict(self), "worst_relative": self.worst, "passed": self.passed}

    def __str__(self) -> str:
        return (f"{self.runtime} vs {self.reference}: max error relative to the output's scale "
                f"video {self.video.relative:.2e}, audio {self.audio.relative:.2e} "
                f"(bound {self.bound:.0e} for {self.precision}: {'ok' if self.passed else 'FAILED'})")


def parity_inputs(model, batch: int, frames: int, audio_length: int, seed: int = 0):
    """Standard-normal (v_t, a_t) of the export's shapes and per-sample timesteps drawn in [1, T]."""
    g = torch.Generator().manual_seed(seed)
    v, a, _, _ = model.example_inputs(batch, frames=frames, audio_length=audio_length, device="cpu", generator=g)
    T = model.config.num_train_steps
    t_v = 1 + (T - 1) * torch.rand(batch, generator=g)
    t_a = 1 + (T - 1) * torch.rand(batch, generator=g)
    return v, a, t_v, t_a


def _error(out: torch.Tensor, ref: torch.Tensor, what: str) -> ModalityError:
    ref, out = ref.detach().double().cpu(), out.detach().double().cpu()
    scale = ref.abs().max().item()
    if scale == 0.0:
        raise ValueError(f"parity: the reference {what} output is all zeros (an untrained model's zero-initialised "
                         f"output layers?), so a comparison would prove nothing; export trained weights")
    diff = out - ref
    err = diff.abs().max().item()
    rms = (diff.square().mean().sqrt() / ref.square().mean().sqrt().clamp_min(1e-300)).item()
    return ModalityError(err, scale, err / scale, rms)


def measure_parity(candidate: Callable, reference: Callable, inputs, precision: str,
                   candidate_name: str, reference_name: str) -> Parity:
    """Runs both denoisers on `inputs` = (v_t, a_t, t_v, t_a) and compares their outputs."""
    if precision not in BOUNDS:
        raise ValueError(f"parity: `precision` must be one of {', '.join(BOUNDS)}, got {precision!r}")
    with torch.no_grad():
        ref_v, ref_a = reference(*inputs)
        out_v, out_a = candidate(*inputs)
    return Parity(candidate_name, reference_name, precision, BOUNDS[precision],
                  _error(out_v, ref_v, "video"), _error(out_a, ref_a, "audio"))
