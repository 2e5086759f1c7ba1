"""Checks of an exported graph: `onnx.checker` (full), standard operators only, and every operator (with
its input type and, for Resize, its modes) one that TensorRT's ONNX parser supports."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..runtime._optional import require
from .data import tensorrt_ops


class GraphCheckError(ValueError):
    """The exported graph fails a check; the message lists what and where."""


# onnx.TensorProto element types -> the names of the TensorRT support matrix
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
               16: "BF16"}
_RESIZE = {"mode": {"nearest", "linear"},
           "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
           "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                              "asymmetric", "align_corners"}}
_RESIZE_DEFAULTS = {"mode": "nearest", "nearest_mode": "round_prefer_floor",
                    "coordinate_transformation_mode": "half_pixel"}


def check_graph(path: str | Path, quantized: bool = False) -> Counter:
    """Runs every check on the ONNX file at `path`; returns the operator counts. Raises GraphCheckError.

    `quantized`: an int8 (QDQ) export, which runs on the CPU runtimes only: its Quantize/DequantizeLinear
    pairs may be uint8 (softmax probabilities), which TensorRT's explicit quantisation does not take, so
    their types are not held to TensorRT's list (every operator still is)."""
    onnx = require("onnx", "checking an ONNX graph")
    path = Path(path)
    try:  # by path: handles external data and graphs over 2 GiB
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GraphCheckError(f"{path.name} fails onnx.checker: {e}") from None
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})

    trt = tensorrt_ops()
    supported, (lo, hi) = trt["operators"], trt["opset_range"]
    problems: list[str] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            problems.append(f"opset {imp.version} is outside TensorRT's supported {lo}..{hi}")
        elif imp.domain not in ("", "ai.onnx"):
            problems.append(f"it imports the non-standard operator domain {imp.domain!r}")
    counts: Counter = Counter()
    for node in model.graph.node:
        counts[node.op_type] += 1
        where = f"{node.op_type} node {node.name!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where} is from the non-standard domain {node.domain!r}")
        elif node.op_type not in supported:
            problems.append(f"{where} is not in TensorRT's supported operator list")
        elif node.input and node.input[0] in types and not (
                quantized and node.op_type in ("QuantizeLinear", "DequantizeLinear")):
            kind = _TYPE_NAMES.get(types[node.input[0]], f"type {types[node.input[0]]}")
            if kind not in supported[node.op_type]:
                problems.append(f"{where} takes {kind}, TensorRT supports {', '.join(supported[node.op_type])}")
        if node.op_type == "Resize":
            problems += _resize_problems(node, where, onnx)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise GraphCheckError(f"{path.name} is not deployable with TensorRT: {shown}")
    return counts


def _resize_problems(node, where: str, onnx) -> list[str]:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    out = []
    for key, allowed in _RESIZE.items():
        value = attrs.get(key, _RESIZE_DEFAULTS[key])
        value = value.decode() if isinstance(value, bytes) else value
        if value not in allowed:
            out.append(f"{where} has {key}={value!r} (TensorRT takes {', '.join(sorted(allowed))})")
    if attrs.get("antialias", 0):
        out.append(f"{where} uses antialias, which TensorRT does not support")
    return out
