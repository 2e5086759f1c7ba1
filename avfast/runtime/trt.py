"""TensorRT (10.x and 11.x Python API): build an engine from the exported ONNX, and run it.

Precision comes from the graph: the network is created strongly typed (TensorRT 11 types every network
strongly and removed the FP16/BF16 builder flags; on 10.x the STRONGLY_TYPED creation flag asks for the
same), and an fp16/bf16 export carries its casts in the graph. Static shapes run as a CUDA graph: one
`execute_async_v3` before capture (TensorRT does deferred work on its first enqueue, which must not be
captured), then every call copies the inputs into the captured buffers and replays the graph.

NOTE: written against the TensorRT documentation; it has not run on a GPU in this project yet.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ._optional import require, require_cuda
from .base import IOSpec, Runtime
from .manifest import spec_and_config

PURPOSE = "the tensorrt runtime"


def _trt():
    return require("tensorrt", PURPOSE)


def build_engine(onnx_path: str | Path, *, dynamic_batch: tuple[int, int, int] | None = None,
                 workspace_gib: float = 4.0, allow_tf32: bool = False, log_level: str = "WARNING") -> bytes:
    """Parses `onnx_path` and returns the serialized engine. `dynamic_batch` = (min, opt, max) makes one
    optimisation profile over the batch dimension of every input (the graph's batch must be dynamic).
    TF32 (on by default in TensorRT: fp32 convolutions with 10-bit mantissas) is off unless `allow_tf32`,
    so an fp32 graph computes in fp32 and holds the fp32 parity bound."""
    trt = _trt()
    require_cuda(PURPOSE)
    logger = trt.Logger(getattr(trt.Logger, log_level))
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # 10.x: opt in; 11.x: accepted and always on
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from a file, so external weights next to it are found
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"tensorrt: the ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not allow_tf32:
        config.clear_flag(tf32)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t.name for t in inputs if any(d < 0 for d in t.shape)]
    if dynamic and dynamic_batch is None:
        raise ValueError(f"tensorrt: inputs {dynamic} have dynamic dimensions; give dynamic_batch=(min, opt, max)")
    if dynamic_batch is not None:
        profile = builder.create_optimization_profile()
        for t in inputs:
            rest = tuple(t.shape)[1:]
            if any(d < 0 for d in rest):
                raise ValueError(f"tensorrt: input {t.name} has dynamic dimensions besides the batch: {tuple(t.shape)}")
            lo, opt, hi = dynamic_batch
            profile.set_shape(t.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"tensorrt: building the engine for {onnx_path} failed (see TensorRT's log above)")
    return bytes(serialized)


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT64": torch.int64,
                 "INT32": torch.int32}


class TensorRTDenoiser(Runtime):
    """`TensorRTDenoiser("export/out/tiny-fp16-b1-f18.engine")`: runs an engine on the current CUDA device."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: str | torch.device = "cuda", cuda_graph: bool = True) -> None:
        trt = _trt()
        require_cuda(PURPOSE)
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise FileNotFoundError(f"tensorrt: no engine file at {engine_path}")
        device = torch.device(device)
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ValueError(f"tensorrt: cannot deserialize {engine_path} (built by another TensorRT version or for "
                             f"another GPU? rebuild it with python -m avfast.export --trt)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: _TORCH_DTYPES[self.engine.get_tensor_dtype(n).name] for n in names}
        shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n in names}
        static = all(d >= 0 for n in self._inputs for d in shapes[n])
        batch_range = (1, 1)
        if not static:  # the range of the (single) optimisation profile
            lo, _, hi = self.engine.get_tensor_profile_shape("v_t", 0)
            batch_range = (int(lo[0]), int(hi[0]))
        graph_spec = IOSpec(video_shape=shapes["v_t"][1:], audio_shape=shapes["a_t"][1:],
                            batch=shapes["v_t"][0] if static else None, batch_range=batch_range,
                            has_labels="labels" in self._inputs, input_names=tuple(self._inputs),
                            output_names=tuple(self._outputs))
        spec, config = spec_and_config(engine_path, graph_spec)
        super().__init__(spec, config, device)
        self.path = engine_path
        self.cuda_graph = bool(cuda_graph and static)
        self._stream = torch.cuda.Stream(device)  # TensorRT syncs extra on the legacy default stream
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: dict[str, torch.Tensor] = {}

    def _bind(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, x in tensors.items():
            if not self.context.set_tensor_address(name, x.data_ptr()):
                raise RuntimeError(f"tensorrt: set_tensor_address({name!r}) failed")

    def _outputs_like(self, B: int) -> dict[str, torch.Tensor]:
        return {n: torch.empty(B, *shape, dtype=self._dtypes[n], device=self.device)
                for n, shape in zip(self._outputs, (self.spec.video_shape, self.spec.audio_shape))}

    def _capture(self, inputs: dict[str, torch.Tensor]) -> None:
        self._static = {n: torch.empty_like(x, dtype=self._dtypes[n]) for n, x in inputs.items()}
        self._static.update(self._outputs_like(inputs["v_t"].shape[0]))
        self._bind(self._static)
        with torch.cuda.stream(self._stream):
            if not self.context.execute_async_v3(self._stream.cuda_stream):  # the uncaptured first enqueue
                raise RuntimeError("tensorrt: execute_async_v3 failed")
        self._stream.synchronize()
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph, stream=self._stream, capture_error_mode="thread_local"):
            self.context.execute_async_v3(self._stream.cuda_stream)

    def _run(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        current = torch.cuda.current_stream(self.device)
        inputs = {n: x.to(self._dtypes[n]) for n, x in inputs.items()}
        if self.cuda_graph:
            if self._graph is None:
                self._capture(inputs)
            for n, x in inputs.items():
                self._static[n].copy_(x)   # on torch's stream; the replay below is ordered after it
            self._graph.replay()
            return tuple(self._static[n].clone() for n in self._outputs)
        for n, x in inputs.items():
            if not self.context.set_input_shape(n, tuple(x.shape)):
                raise ValueError(f"tensorrt: the engine does not accept {n} of shape {tuple(x.shape)}")
        outputs = self._outputs_like(inputs["v_t"].shape[0])
        self._bind({**inputs, **outputs})
        self._stream.wait_stream(current)
        if not self.context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("tensorrt: execute_async_v3 failed")
        current.wait_stream(self._stream)
        for x in (*inputs.values(), *outputs.values()):
            x.record_stream(self._stream)  # the allocator must not reuse them before the engine is done
        return tuple(outputs[n] for n in self._outputs)
