"""ONNX Runtime: the CPU execution provider, or the CUDA one with IO binding.

Inputs and outputs are bound to torch tensors' memory (`io_binding`): on CUDA the graph reads the
sampler's device tensors and writes into device tensors torch allocated, on ORT's compute stream set
to torch's current stream, so a sampling step makes no host copies and needs no extra synchronisation.
On CPU the same binding saves the output copies.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._deps import install_hint
from ._optional import RuntimeUnavailable, require, require_cuda
from .base import IOSpec, Runtime
from .manifest import first_step_graph, spec_and_config

_NUMPY = {torch.float32: np.float32, torch.int64: np.int64}


class OnnxRuntimeDenoiser(Runtime):
    """`OnnxRuntimeDenoiser("export/out/tiny-fp32-b1-f18.onnx", device="cpu" | "cuda")`."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None,
                 first_step=None) -> None:
        path = Path(path)
        device = torch.device(device)
        self.name = "onnxruntime" if device.type == "cpu" else "onnxruntime-cuda"
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"onnxruntime: `device` must be cpu or cuda, got {device}")
        extra = "ort" if device.type == "cpu" else "ort-gpu"
        ort = require("onnxruntime", f"the {self.name} runtime", extra)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT warns about every initializer it folds away
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        if device.type == "cuda":
            require_cuda(f"the {self.name} runtime")
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeUnavailable(
                    f"{self.name}: this onnxruntime has no CUDA execution provider (it has "
                    f"{', '.join(ort.get_available_providers())}); replace it with the GPU build: "
                    f"pip uninstall onnxruntime && {install_hint(extras=['ort-gpu'])}")
            index = device.index if device.index is not None else torch.cuda.current_device()
            device = torch.device("cuda", index)
            stream = torch.cuda.current_stream(device).cuda_stream
            # use_tf32 0: an fp32 graph computes in fp32 (TF32's 10-bit mantissas would miss the fp32 bound)
            providers = [("CUDAExecutionProvider", {"device_id": str(index), "has_user_compute_stream": "1",
                                                    "user_compute_stream": str(stream), "use_tf32": "0"})]
        else:
            providers = ["CPUExecutionProvider"]
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: no ONNX file at {path}")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ValueError(f"{self.name}: cannot load {path}: {e}") from None
        spec, config = spec_and_config(path, self._graph_spec())
        super().__init__(spec, config, device)
        self.path = path
        found = first_step_graph(path, first_step)   # an int8 export's (avfast.runtime.base)
        if found is not None:
            self.first_step = OnnxRuntimeDenoiser(found[0], device, threads, first_step=False)
            self.first_step_t_min = found[1]

    def _graph_spec(self) -> IOSpec:
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = tuple(o.name for o in self.session.get_outputs())
        missing = {"v_t", "a_t", "t_v", "t_a"} - set(inputs)
        if missing:
            raise ValueError(f"{self.name}: the graph lacks the denoiser inputs {sorted(missing)} (has {sorted(inputs)})")
        batch = inputs["v_t"][0]
        return IOSpec(video_shape=tuple(inputs["v_t"][1:]), audio_shape=tuple(inputs["a_t"][1:]),
                      batch=batch if isinstance(batch, int) else None,
                      batch_range=(batch, batch) if isinstance(batch, int) else (1, 2 ** 31 - 1),
                      has_labels="labels" in inputs, input_names=tuple(inputs), output_names=outputs)

    def _run(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        binding = self.session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        for name, x in inputs.items():
            binding.bind_input(name, kind, index, _NUMPY[x.dtype], tuple(x.shape), x.data_ptr())
        B = inputs["v_t"].shape[0]
        outputs = (torch.empty(B, *self.spec.video_shape, device=self.device),
                   torch.empty(B, *self.spec.audio_shape, device=self.device))
        for name, y in zip(self.spec.output_names, outputs):
            binding.bind_output(name, kind, index, np.float32, tuple(y.shape), y.data_ptr())
        self.session.run_with_iobinding(binding)
        return outputs
