"""The PyTorch runtimes: eager with the reference ops, eager with the fused ops, and torch.compile.

They run the model itself, so any shape works, autograd runs through them (`supports_grad = True`:
reconstruction guidance is available) and the model validates its own inputs. `precision="bf16"` or
`"fp16"` runs the network under `torch.autocast` and hands the outputs back in fp32 (the sampler keeps its
state in fp32); int8 is refused (a quantised export: runtime 'openvino' or 'onnxruntime').
"""
from __future__ import annotations

import torch

from .. import backends
from .._precision import FLOAT_PRECISIONS, autocast_dtype, check_precision


class _TorchRuntime:
    supports_grad = True
    name = "torch"

    def __init__(self, model: torch.nn.Module, precision: str = "fp32") -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"{self.name}: `model` must be a JointUNet (avfast.models.create / from_pretrained), "
                            f"got {type(model).__name__}")
        check_precision(precision, FLOAT_PRECISIONS, f"runtime {self.name!r} (PyTorch autocast)")
        self.model = model.eval()
        self.config = model.config
        self.precision, self.autocast = precision, autocast_dtype(precision)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, precision={self.precision!r}, device={self.device})"

    def _forward(self, fn, v_t, a_t, t_v, t_a, labels):
        if self.autocast is None:
            return fn(v_t, a_t, t_v, t_a, labels)
        with torch.autocast(v_t.device.type, dtype=self.autocast):
            out = fn(v_t, a_t, t_v, t_a, labels)
        return tuple(o.float() for o in out)


class EagerDenoiser(_TorchRuntime):
    """The model in eager mode; `ops="reference"` forces the PyTorch reference of every fused op
    (the baseline every speedup is measured against), `ops="fused"` lets each op pick its kernel."""

    def __init__(self, model: torch.nn.Module, ops: str = "fused", precision: str = "fp32") -> None:
        if ops not in ("reference", "fused"):
            raise ValueError(f"EagerDenoiser: `ops` must be 'reference' or 'fused', got {ops!r}")
        self.name = f"eager-{ops}"
        super().__init__(model, precision)
        self.ops = ops

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        with backends.backend("reference" if self.ops == "reference" else None):
            return self._forward(self.model, v_t, a_t, t_v, t_a, labels)


class CompiledDenoiser(_TorchRuntime):
    """`torch.compile` of the model (fused ops as graph nodes). The first call of each new shape compiles
    (seconds to minutes); later calls reuse it. Autocast is inside the compiled region."""

    name = "compile"

    def __init__(self, model: torch.nn.Module, mode: str | None = None, precision: str = "fp32") -> None:
        super().__init__(model, precision)
        forward = self.model if self.autocast is None else (
            lambda v_t, a_t, t_v, t_a, labels: self._forward(self.model, v_t, a_t, t_v, t_a, labels))
        self.compiled = torch.compile(forward, mode=mode, dynamic=False)

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        return self.compiled(v_t, a_t, t_v, t_a, labels)
