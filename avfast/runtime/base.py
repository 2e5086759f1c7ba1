"""What every runtime shares: the denoiser call signature, `supports_grad`, `name`, and the input checks
of a graph or engine that was built for fixed shapes.

    v_pred, a_pred = runtime(v_t, a_t, t_v, t_a, labels=None)

Exported runtimes take float32 inputs (other float dtypes are converted) on their own device and return
float32 outputs; the graph's precision (fp32/fp16/bf16) is inside it.

An int8 export may come with a first-step graph (avfast.export.int8: quantised on the sampler's first call,
where activation ranges are widest): `first_step` holds its runtime and `first_step_t_min`, and a call
whose every sample has max(t_v, t_a) >= t_min runs on it; every other call on the main graph.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ..models.config import ModelConfig


@dataclass(frozen=True)
class IOSpec:
    """The shapes an exported graph or engine accepts. `batch` None: any batch in `batch_range`."""

    video_shape: tuple[int, ...]          # without the batch: (C, F, H, W)
    audio_shape: tuple[int, ...]          # (mel_bins, T)
    batch: int | None
    batch_range: tuple[int, int] = (1, 1)
    has_labels: bool = False
    num_train_steps: int = 1000
    input_names: tuple[str, ...] = field(default=("v_t", "a_t", "t_v", "t_a"))
    output_names: tuple[str, ...] = field(default=("v_pred", "a_pred"))

    def batch_text(self) -> str:
        return f"batch {self.batch}" if self.batch is not None else f"batch {self.batch_range[0]}..{self.batch_range[1]}"


class Runtime(ABC):
    """Base of the exported-graph runtimes (ONNX Runtime, TensorRT, OpenVINO)."""

    name = "runtime"
    supports_grad = False  # autograd cannot run through an exported graph: reconstruction guidance refuses it

    def __init__(self, spec: IOSpec, config: ModelConfig | None, device: torch.device) -> None:
        self.spec, self.device = spec, torch.device(device)
        # `config` describes the exported shapes, so `avfast.diffusion.sample(runtime)` draws noise of the right size.
        if config is not None:
            config = config.replace(frames=spec.video_shape[1], audio_length=spec.audio_shape[1])
        self.config = config
        self.first_step: Runtime | None = None       # see the module docstring
        self.first_step_t_min: float | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, video={list(self.spec.video_shape)}, "
                f"audio={list(self.spec.audio_shape)}, {self.spec.batch_text()}, device={self.device})")

    def __call__(self, v_t: torch.Tensor, a_t: torch.Tensor, t_v, t_a,
                 labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.prepare(v_t, a_t, t_v, t_a, labels)
        with torch.no_grad():
            if self.first_step is not None and self.at_first_step(inputs["t_v"], inputs["t_a"]):
                return self.first_step._run(inputs)
            return self._run(inputs)

    def at_first_step(self, t_v: torch.Tensor, t_a: torch.Tensor) -> bool:
        """Whether a call with these timesteps [B] goes to the first-step graph (all samples at t_min or above)."""
        return self.first_step_t_min is not None and bool((torch.maximum(t_v, t_a) >= self.first_step_t_min).all())

    @abstractmethod
    def _run(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the checked inputs (by graph input name) and returns (v_pred, a_pred)."""

    # ------------------------------------------------------------------ checks
    def prepare(self, v_t, a_t, t_v, t_a, labels) -> dict[str, torch.Tensor]:
        """Checks the call against the spec; returns contiguous float32 inputs by graph input name."""
        spec, who = self.spec, self.name
        for arg, x, shape, layout in (("v_t", v_t, spec.video_shape, "[B, C, F, H, W]"),
                                      ("a_t", a_t, spec.audio_shape, "[B, mel_bins, T]")):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise TypeError(f"{who}: `{arg}` must be a floating-point tensor {layout}, got "
                                f"{getattr(x, 'dtype', type(x).__name__)}")
            if tuple(x.shape[1:]) != shape:
                raise ValueError(f"{who}: this graph was built for `{arg}` of shape [B, {', '.join(map(str, shape))}] "
                                 f"{layout}, got {list(x.shape)}; export again with these shapes (--frames etc.)")
            if x.device != self.device:
                raise ValueError(f"{who}: runs on {self.device}, got `{arg}` on {x.device}")
        B = v_t.shape[0]
        if a_t.shape[0] != B:
            raise ValueError(f"{who}: batch sizes differ: `v_t` has {B} samples, `a_t` has {a_t.shape[0]}")
        lo, hi = spec.batch_range
        if (spec.batch is not None and B != spec.batch) or (spec.batch is None and not lo <= B <= hi):
            raise ValueError(f"{who}: this graph was built for {spec.batch_text()}, got batch {B}; export with "
                             f"--batch {B} or --dynamic-batch")
        out = {"v_t": v_t.float().contiguous(), "a_t": a_t.float().contiguous(),
               "t_v": self._timesteps("t_v", t_v, B), "t_a": self._timesteps("t_a", t_a, B)}
        if labels is not None and not spec.has_labels:
            raise ValueError(f"{who}: `labels` were given but this model has no label conditioning")
        if spec.has_labels:
            out["labels"] = self._labels(labels, B)
        return out

    def _timesteps(self, arg: str, t, B: int) -> torch.Tensor:
        if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
            raise TypeError(f"{self.name}: `{arg}` must be a number or a tensor of shape [{B}], got {type(t).__name__}")
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(B)
        elif t.shape != (B,):
            raise ValueError(f"{self.name}: `{arg}` must be a scalar or have shape [{B}], got {list(t.shape)}")
        if t.device.type == "cpu":  # reading GPU values would stall the sampler; the torch model checks those
            T = self.spec.num_train_steps
            if not bool(((t >= 0) & (t <= T)).all()):
                raise ValueError(f"{self.name}: `{arg}` must lie in [0, {T}] (0 = clean data)")
        return t.contiguous()

    def _labels(self, labels, B: int) -> torch.Tensor:
        if labels is None:  # the learned null label
            return torch.full((B,), -1, dtype=torch.int64, device=self.device)
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"{self.name}: `labels` must be an integer tensor of shape [{B}]")
        if labels.shape != (B,):
            raise ValueError(f"{self.name}: `labels` must have shape [{B}], got {list(labels.shape)}")
        return labels.to(self.device, torch.int64).contiguous()
