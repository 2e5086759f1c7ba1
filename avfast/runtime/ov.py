"""OpenVINO on the CPU (optional: `pip install "avfast[openvino]"`).

OpenVINO's CPU plugin runs fp32 graphs in bf16 on CPUs with bf16 instructions unless told otherwise;
an fp32 export is compiled with `INFERENCE_PRECISION_HINT = f32` so its parity holds to the fp32 bound.
`inference_precision="bf16"` asks for bf16 explicitly (the same fp32 graph, the plugin's bf16 kernels:
on this project's AVX-512-bf16 CPU 1.5x faster than f32 at paper-128, within the bf16 parity bound); on
a CPU without bf16 instructions the plugin computes in f32.

An int8 export (QDQ pairs from NNCF, avfast.export.int8) compiles to FakeQuantize-fed int8 convolutions
and matmuls; the layers NNCF left in float run at `inference_precision`. Its default for an int8 export,
`int8_float_precision()`, is bf16 where the CPU computes bf16 natively (the plugin reports BF16 among its
OPTIMIZATION_CAPABILITIES), as the plugin itself does for an unhinted graph, else f32: the float layers
(normalisation, elementwise, layout changes) are memory-bound, and bf16 halves their traffic (measured in
docs/int8.md: parity, quality and speed). Its first-step graph, where it has one (avfast.runtime.base), is compiled the
same way next to it. Loading checks that the compiled model really runs int8 layers
(`int8_layers`, from the execution graph's runtime precisions) and refuses one that runs none.

A graph exported with a dynamic batch (`--dynamic-batch`, for TensorRT's profiles) is compiled once per
batch size it is called with, each time reshaped to that static batch (`static_batches=True`, the default;
the last `MAX_STATIC_BATCHES` kept): on the CPU plugin's dynamic-shape kernels the runtimes suite's OpenVINO
rows ran 1.1-1.9x slower than at a static batch (docs/int8.md, "Static shapes"). The first batch (the
graph's smallest) is compiled on load, so loading still checks the graph; each new batch costs one
compilation on its first call.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ._optional import require
from .base import IOSpec, Runtime
from .manifest import first_step_graph, read_manifest, spec_and_config


def openvino_int8_layers(compiled) -> dict:
    """Convolutions and matmuls of an OpenVINO compiled model's execution graph by runtime precision (the
    CPU plugin's `runtimePrecision`): int8 work shows as I8/U8 layers. {"int8_layers", "compute_layers",
    "by_type": {"<layer type> <precision>": count}} over every layer."""
    from collections import Counter

    by: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()

        def text(key: str, default: str) -> str:
            return info[key].astype(str) if key in info else default

        by[(text("layerType", op.get_type_name()), text("runtimePrecision", "?"))] += 1
    compute = {k: v for k, v in by.items() if k[0] in ("Convolution", "MatMul", "FullyConnected")}
    return {"int8_layers": sum(v for (_, p), v in compute.items() if p.upper() in ("I8", "U8")),
            "compute_layers": sum(compute.values()), "by_type": {f"{k} {p}": v for (k, p), v in sorted(by.items())}}


def int8_float_precision(core=None) -> str:
    """What an int8 export's float layers run at by default: "bf16" where the CPU plugin computes bf16
    natively, else "fp32"."""
    if core is None:
        core = require("openvino", "the openvino runtime").Core()
    return "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "fp32"


MAX_STATIC_BATCHES = 4  # a dynamic-batch graph's static compilations kept (least recently used dropped)


class OpenVinoDenoiser(Runtime):
    """`OpenVinoDenoiser("export/out/tiny-fp32-b1-f18.onnx")`: compiles the ONNX for OpenVINO's CPU plugin."""

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, inference_precision: str | None = None,
                 first_step=None, static_batches: bool = True) -> None:
        ov = require("openvino", "the openvino runtime")
        if inference_precision not in (None, "fp32", "bf16"):
            raise ValueError(f"openvino: inference_precision must be 'fp32' or 'bf16' (or None: the export's "
                             f"precision; an int8 export's float layers then run at int8_float_precision()), got "
                             f"{inference_precision!r}")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"openvino: no ONNX file at {path}")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise ValueError(f"openvino: cannot read {path}: {e}") from None
        manifest = read_manifest(path) or {}
        config = {"PERFORMANCE_HINT": "LATENCY"}
        exported = manifest.get("precision", "fp32")
        precision = inference_precision or (int8_float_precision(core) if exported == "int8" else exported)
        if precision in ("fp32", "bf16"):
            config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
        self.inference_precision = precision
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        shapes = {p.get_any_name(): p.get_partial_shape() for p in model.inputs}

        def dims(name: str) -> list[int | None]:
            return [d.get_length() if d.is_static else None for d in shapes[name]]

        video, audio = dims("v_t"), dims("a_t")
        graph_spec = IOSpec(video_shape=tuple(video[1:]), audio_shape=tuple(audio[1:]), batch=video[0],
                            batch_range=(video[0], video[0]) if video[0] is not None else (1, 2 ** 31 - 1),
                            has_labels="labels" in shapes, input_names=tuple(shapes),
                            output_names=tuple(p.get_any_name() for p in model.outputs))
        spec, model_config = spec_and_config(path, graph_spec)
        super().__init__(spec, model_config, torch.device("cpu"))
        self.path = path
        self._core, self._model, self._config = core, model, config
        # batch -> infer request of the graph compiled at that static batch; None: the graph as it is
        self.static_batches = bool(static_batches and spec.batch is None)
        self._requests: OrderedDict[int | None, object] = OrderedDict()
        first = spec.batch_range[0] if self.static_batches else None
        self.compiled = self._compile(first)
        self.int8_layers = None
        if exported == "int8":
            self.int8_layers = openvino_int8_layers(self.compiled)
            if self.int8_layers["int8_layers"] == 0:
                raise ValueError(f"openvino: {path} is an int8 export, but the compiled model runs none of its "
                                 f"{self.int8_layers['compute_layers']} convolutions/matmuls in int8")
        found = first_step_graph(path, first_step, manifest)
        if found is not None:
            self.first_step = OpenVinoDenoiser(found[0], threads, inference_precision, first_step=False,
                                               static_batches=static_batches)
            self.first_step_t_min = found[1]

    def _compile(self, batch: int | None):
        """Compiles the graph (reshaped to a static `batch` unless None), keeps its infer request, returns it."""
        import openvino as ov

        model = self._model
        if batch is not None:
            model = model.clone()
            model.reshape({p.get_any_name(): ov.PartialShape([ov.Dimension(batch), *list(p.get_partial_shape())[1:]])
                           for p in model.inputs})
        compiled = self._core.compile_model(model, "CPU", self._config)
        self._requests[batch] = compiled.create_infer_request()
        while len(self._requests) > MAX_STATIC_BATCHES:
            self._requests.popitem(last=False)
        return compiled

    def _request(self, batch: int):
        key = batch if self.static_batches else None
        if key not in self._requests:
            self._compile(key)
        self._requests.move_to_end(key)
        return self._requests[key]

    def _run(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        import openvino as ov

        request = self._request(int(inputs["v_t"].shape[0]))
        feeds = {name: ov.Tensor(x.numpy(), shared_memory=True) for name, x in inputs.items()}
        request.infer(feeds)
        # The request owns its output memory and reuses it on the next call: copy out.
        return tuple(torch.from_numpy(np.array(request.get_tensor(name).data, copy=True))
                     for name in self.spec.output_names)
