"""The PyTorch runtimes: eager with the reference ops, eager with the fused ops, and torch.compile.

They run the model itself, so any shape works, autograd runs through them (`supports_grad = True`:
reconstruction guidance is available) and the model validates its own inputs.
"""
from __future__ import annotations

import torch

from .. import backends


class _TorchRuntime:
    supports_grad = True
    name = "torch"

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"{self.name}: `model` must be a JointUNet (avfast.models.create / from_pretrained), "
                            f"got {type(model).__name__}")
        self.model = model.eval()
        self.config = model.config
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"


class EagerDenoiser(_TorchRuntime):
    """The model in eager mode; `ops="reference"` forces the PyTorch reference of every fused op
    (the baseline every speedup is measured against), `ops="fused"` lets each op pick its kernel."""

    def __init__(self, model: torch.nn.Module, ops: str = "fused") -> None:
        if ops not in ("reference", "fused"):
            raise ValueError(f"EagerDenoiser: `ops` must be 'reference' or 'fused', got {ops!r}")
        self.name = f"eager-{ops}"
        super().__init__(model)
        self.ops = ops

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        with backends.backend("reference" if self.ops == "reference" else None):
            return self.model(v_t, a_t, t_v, t_a, labels)


class CompiledDenoiser(_TorchRuntime):
    """`torch.compile` of the model (fused ops as graph nodes). The first call of each new shape compiles
    (seconds to minutes); later calls reuse it."""

    name = "compile"

    def __init__(self, model: torch.nn.Module, mode: str | None = None) -> None:
        super().__init__(model)
        self.compiled = torch.compile(self.model, mode=mode, dynamic=False)

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        return self.compiled(v_t, a_t, t_v, t_a, labels)
