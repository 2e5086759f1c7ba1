"""`python -m avfast.export`: the joint U-Net to ONNX (and a TensorRT engine with --trt), checked for
standard TensorRT-parsable operators and for parity with PyTorch, with ms/FE per runtime.

    from avfast.export import export_onnx, check_graph
    info = export_onnx(model, "tiny.onnx", frames=18)   # just the graph
    check_graph("tiny.onnx")                             # onnx.checker + TensorRT operator list

    runtime = create_runtime("onnxruntime", model)     # export on demand (cached), then load

`avfast.export.pipeline.run_export` is the whole command (staging folder, parity, timings, manifest).
"""
from __future__ import annotations

from .checks import GraphCheckError, check_graph
from .graph import PRECISIONS, ExportError, GraphInfo, export_onnx
from .parity import BOUNDS, Parity, ParityError, measure_parity, parity_inputs
from .runtimes import create_runtime
from .weights import randomize_zero_layers_, stand_in_model

__all__ = ["BOUNDS", "ExportError", "GraphCheckError", "GraphInfo", "PRECISIONS", "Parity", "ParityError",
           "check_graph", "create_runtime", "export_onnx", "measure_parity", "parity_inputs", "randomize_zero_layers_",
           "stand_in_model"]
