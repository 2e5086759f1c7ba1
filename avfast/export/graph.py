"""Exporting the joint U-Net to ONNX.

The exporter is torch.onnx's dynamo-based one (`torch.export` + onnxscript, `optimize=True`). On the
`tiny` model (18 frames) it gives 1,194 nodes of 17 standard operator types with every shape folded to
a constant; the TorchScript exporter (opset 17) gives 5,285 nodes of 29 types for the same model, about
3,500 of them shape arithmetic (Shape/Gather/Unsqueeze/Constant/Cast chains that recompute static
sizes at run time). Both match PyTorch within 2e-6; the dynamo graph is the one TensorRT and ONNX
Runtime get.

Fused avfast ops export as their PyTorch reference composites (`avfast.decomposed()`), so the graph
has standard operators only. fp16/bf16 exports run the model under autocast: the graph keeps fp32
inputs, outputs and stored weights, and carries explicit Casts where autocast computes in the lower
precision -- what a strongly typed TensorRT network needs.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._precision import PRECISIONS as _PRECISION_TABLE
from .._precision import QUANTIZED_PRECISIONS, autocast_dtype
from ..backends import decomposed
from ..runtime._optional import require
from .parity import parity_inputs

PRECISIONS = tuple(_PRECISION_TABLE)  # the package's table (avfast/_precision.py); int8 = the fp32 graph quantised
MIN_OPSET = 17
DEFAULT_OPSET = 18
BF16_MIN_OPSET = 22        # Conv, Gemm and the normalisations accept bf16 from opset 22 on
MAX_OPSET = 24             # what TensorRT 10.15's parser reads (avfast/export/tensorrt_onnx_ops.json)
EXTERNAL_DATA_BYTES = 1 << 30  # weights above 1 GiB go to <name>.onnx.data (protobuf stops at 2 GiB)
INPUT_NAMES = ("v_t", "a_t", "t_v", "t_a")
OUTPUT_NAMES = ("v_pred", "a_pred")


class ExportError(RuntimeError):
    """torch.onnx could not export the model; the message carries its reason."""


class DenoiserGraph(nn.Module):
    """What the graph computes: the model's forward with positional inputs, at the export's precision."""

    def __init__(self, model: nn.Module, precision: str) -> None:
        super().__init__()
        self.model, self.autocast = model, autocast_dtype(precision)

    def forward(self, v_t, a_t, t_v, t_a, labels=None):
        if self.autocast is None:
            return self.model(v_t, a_t, t_v, t_a, labels)
        with torch.autocast("cpu", dtype=self.autocast):
            return self.model(v_t, a_t, t_v, t_a, labels)


@dataclass
class GraphInfo:
    path: Path
    external_data: str | None
    opset: int
    precision: str
    batch: int | None                  # None: dynamic
    batch_range: tuple[int, int]
    inputs: list[dict]
    outputs: list[dict]
    seconds: float
    rewrites: dict[str, int] = field(default_factory=dict)  # avfast.export.rewrite pass -> patterns rewritten


def check_options(precision: str, opset: int | None, batch: int, dynamic_batch: tuple[int, int] | None) -> int:
    """Validates the export options; returns the opset to use."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if opset is None:
        opset = BF16_MIN_OPSET if precision == "bf16" else DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an integer in {MIN_OPSET}..{MAX_OPSET} (TensorRT's parser reads up to "
                         f"{MAX_OPSET}), got {opset!r}")
    if precision == "bf16" and opset < BF16_MIN_OPSET:
        raise ValueError(f"bf16 needs opset {BF16_MIN_OPSET} or later (Conv and Gemm take bf16 from there), got {opset}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if dynamic_batch is not None:
        lo, hi = dynamic_batch
        if not 1 <= lo <= hi:
            raise ValueError(f"dynamic batch range must satisfy 1 <= min <= max, got {dynamic_batch}")
    return opset


def export_onnx(model: nn.Module, path: str | Path, *, batch: int = 1, frames: int | None = None,
                audio_length: int | None = None, precision: str = "fp32", opset: int | None = None,
                dynamic_batch: tuple[int, int] | None = None, rewrite: bool = True) -> GraphInfo:
    """Writes the model's ONNX graph to `path` (weights inside, or in `<path>.data` above 1 GiB).

    Static shapes [batch, ...] unless `dynamic_batch` = (min, max) makes the batch a graph dimension.
    `precision` is a float one (int8 is `run_export`'s quantisation of this fp32 graph: avfast.export.int8).
    The caller chooses where `path` lies; `python -m avfast.export` exports into a staging folder and
    renames the checked result into place. `rewrite` applies avfast.export.rewrite's passes (the same
    function with fewer reference-kernel ops; counts in GraphInfo.rewrites); False keeps the exporter's graph.
    """
    require("onnx", "exporting to ONNX")
    require("onnxscript", "exporting to ONNX")
    opset = check_options(precision, opset, batch, dynamic_batch)
    if precision in QUANTIZED_PRECISIONS:
        raise ValueError(f"export_onnx writes float graphs; {precision} is the fp32 graph quantised by "
                         f"avfast.export.int8 (python -m avfast.export --precision {precision})")
    cfg = model.config
    frames = cfg.frames if frames is None else int(frames)
    audio_length = cfg.audio_length if audio_length is None else int(audio_length)
    if frames < 1 or audio_length < 1:
        raise ValueError(f"frames and audio_length must be >= 1, got {frames} and {audio_length}")
    path = Path(path)

    cpu_model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    names = INPUT_NAMES + (("labels",) if cfg.num_classes > 0 else ())
    # torch.export specialises a dimension whose example size is 1: trace a dynamic batch at 2.
    trace_batch = max(2, dynamic_batch[0]) if dynamic_batch is not None else batch
    args = parity_inputs(cpu_model, trace_batch, frames, audio_length)
    if cfg.num_classes > 0:
        args = (*args, torch.zeros(trace_batch, dtype=torch.int64))
    dynamic_shapes = None
    if dynamic_batch is not None:
        dim = torch.export.Dim("batch", min=dynamic_batch[0], max=dynamic_batch[1])
        dynamic_shapes = tuple({0: dim} for _ in names)

    start = time.perf_counter()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # torch.onnx logs a warning per optional torchvision op it cannot register
    try:
        with decomposed(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(DenoiserGraph(cpu_model, precision), args, dynamo=True,
                                        opset_version=opset, input_names=list(names),
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes,
                                        optimize=True, verbose=False, report=False)
    except Exception as e:  # torch.export / onnxscript raise many types; the first line says what failed
        raise ExportError(f"torch.onnx.export failed for this model: {str(e).strip().splitlines()[0]}") from e
    finally:
        quiet.setLevel(level)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    _match_group_norm_types(program.model)
    weight_bytes = sum(p.numel() * p.element_size() for p in cpu_model.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    if rewrite:   # rewritten in memory and written once
        rewrites = _rewrite_and_save(program.model_proto, path, external)
    else:
        program.save(str(path), external_data=external)
        rewrites = {}
    seconds = time.perf_counter() - start

    def io(name: str, shape, dtype: str) -> dict:
        return {"name": name, "shape": ["batch" if dynamic_batch is not None and i == 0 else d
                                          for i, d in enumerate(shape)], "dtype": dtype}

    B = batch if dynamic_batch is None else "batch"
    inputs = [io("v_t", (B, *cfg.video_shape[:1], frames, *cfg.video_shape[2:]), "float32"),
              io("a_t", (B, cfg.mel_bins, audio_length), "float32"),
              io("t_v", (B,), "float32"), io("t_a", (B,), "float32")]
    if cfg.num_classes > 0:
        inputs.append(io("labels", (B,), "int64"))
    outputs = [io("v_pred", inputs[0]["shape"], "float32"), io("a_pred", inputs[1]["shape"], "float32")]
    return GraphInfo(path, path.name + ".data" if external else None, opset, precision,
                     None if dynamic_batch is not None else batch,
                     tuple(dynamic_batch) if dynamic_batch is not None else (batch, batch),
                     inputs, outputs, seconds, rewrites)


def _rewrite_and_save(model, path: Path, external: bool) -> dict[str, int]:
    """Applies avfast.export.rewrite's passes to the exported ModelProto and writes it to `path` (weights in
    `<path>.data` when `external`); returns each pass's count of patterns rewritten."""
    import onnx

    from . import rewrite

    counts = {name: getattr(rewrite, name)(model) for name in rewrite.PASSES}
    data = path.with_name(path.name + ".data")
    if external:
        data.unlink(missing_ok=True)  # onnx appends to an existing external-data file
    onnx.save(model, str(path), save_as_external_data=external, location=data.name if external else None)
    return counts


def _match_group_norm_types(model) -> None:
    """From opset 21 torch.onnx maps group_norm to GroupNormalization, and under autocast it passes a
    bf16/fp16 input with fp32 scale and bias, which ONNX forbids (one type T for all three). Torch computes
    such a mixed group_norm with the input's type; a Cast of scale and bias to it says the same in ONNX."""
    import onnx_ir as ir

    for node in list(model.graph):
        if node.op_type != "GroupNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        x = node.inputs[0]
        if x is None or x.dtype is None:
            continue
        for i in (1, 2):
            value = node.inputs[i]
            if value is not None and value.dtype is not None and value.dtype != x.dtype:
                cast = ir.Node("", "Cast", [value], attributes=[ir.AttrInt64("to", x.dtype.value)],
                               name=f"{node.name}_cast_{i}")
                cast.outputs[0].dtype, cast.outputs[0].shape = x.dtype, value.shape
                model.graph.insert_before(node, cast)
                node.replace_input_with(i, cast.outputs[0])
