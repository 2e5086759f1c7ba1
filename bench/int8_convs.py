"""What int8 can gain on this CPU at most: the denoiser's own convolutions, each alone, int8 against bf16 on
OpenVINO (docs/int8.md, "What bounds it: the convolutions alone").

    python -m bench.int8_convs [--preset paper-128] [--rounds 15] [--work DIR] [--json out.json]

Every convolution of the int8 export that runs in int8 (its weight comes through a DequantizeLinear), with
its own input shape, weight, strides, pads and groups, becomes a one-layer graph twice: float (compiled
with bf16 kernels) and int8 (QuantizeLinear/DequantizeLinear on the input, per-channel int8 weights, as the
export writes them). Identical layers are timed once and counted as often as the model has them. The
compiled int8 layer is checked to run in int8, and each call is timed by its Convolution layer's own time
(PERF_COUNT), without the conversions of the one-layer graph's input and output. All graphs live in one
process and are called round-robin, so a slow spell of a shared machine hits both precisions alike.

The sum over the model's int8 convolutions, count-weighted, bf16 / int8, is the int8-over-bf16 ratio of a
denoiser that were nothing but those convolutions: what the library's int8 kernels allow at best here,
before any quantise step, layout change or float layer. The whole FE's ratio lies below it (the
PERF_COUNT profile, `bench.profile_int8`, splits the rest).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np


def _hashable(value):
    """An ONNX attribute value as a key and as JSON: lists as tuples, strings (bytes) as str."""
    if isinstance(value, bytes):
        return value.decode()
    return tuple(value) if isinstance(value, list) else value


def int8_convolutions(int8_path: Path) -> Counter:
    """(input shape, weight shape, attributes) -> count, for the Convs of a QDQ export whose weight is
    dequantised from int8 (what the int8 runtime runs in int8)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(int8_path))
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(model.graph.value_info) + list(model.graph.input)}
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out: Counter = Counter()
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = producer.get(node.input[1])
        if w is None or w.op_type != "DequantizeLinear" or w.input[0] not in inits:
            continue  # a layer kept float
        x_shape = shapes.get(node.input[0])
        if not x_shape or 0 in x_shape:
            raise ValueError(f"int8_convolutions: no static input shape for {node.name}")
        attrs = tuple(sorted((a.name, _hashable(onnx.helper.get_attribute_value(a))) for a in node.attribute))
        out[(x_shape, inits[w.input[0]], attrs)] += 1
    return out


def conv_graph(x_shape: tuple, w_shape: tuple, attrs: tuple, int8: bool):
    """A one-Conv ONNX model (input "x"): float weights, or the export's int8 pattern (QDQ input,
    symmetric per-tensor; per-output-channel int8 weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], [numpy_helper.from_array(np.zeros(w_shape[0], np.float32), "b")]
    if int8:
        inits += [numpy_helper.from_array(rng.integers(-127, 128, w_shape).astype(np.int8), "w_q"),
                  numpy_helper.from_array(np.full(w_shape[0], 0.01, np.float32), "w_scale"),
                  numpy_helper.from_array(np.zeros(w_shape[0], np.int8), "w_zero"),
                  numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "x_zero")]
        nodes += [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
                  helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"])]
        x = "x_dq"
    else:
        inits.append(numpy_helper.from_array((0.05 * rng.standard_normal(w_shape)).astype(np.float32), "w"))
        x = "x"
    nodes.append(helper.make_node("Conv", [x, "w", "b"], ["y"], **dict(attrs)))
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compile(model, threads: int):
    """(compiled model, the runtime precisions of its Convolution layers, upper case)."""
    import openvino as ov

    from avfast.runtime.ov import openvino_int8_layers

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True})
    layers = openvino_int8_layers(compiled)["by_type"]  # {"<layer type> <precision>": count}
    return compiled, [k.split()[1].upper() for k in layers if k.split()[0] == "Convolution"]


def convolution_ms(request) -> float:
    """The Convolution layer's own time in the last call (PERF_COUNT): a one-layer graph's call also converts
    its f32 input (to bf16, or quantises it) and its output, which the model's layers mostly do not."""
    return sum(1e3 * p.real_time.total_seconds() for p in request.get_profiling_info()
               if p.node_type == "Convolution" and p.status == p.Status.EXECUTED)


def measure(convs: Counter, rounds: int, threads: int, progress: bool = True) -> list[dict]:
    rows, requests = [], []
    for (x_shape, w_shape, attrs), count in convs.items():
        x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
        pair = {}
        for label, int8 in (("bf16", False), ("int8", True)):
            compiled, precisions = _compile(conv_graph(x_shape, w_shape, attrs, int8), threads)
            if int8 and not any(p in ("I8", "U8") for p in precisions):
                raise RuntimeError(f"the int8 graph of conv {w_shape} on {x_shape} did not compile to an int8 "
                                   f"convolution (runtime precisions {precisions})")
            pair[label] = compiled.create_infer_request()
        requests.append((pair, {0: x}))
        rows.append({"input": list(x_shape), "weight": list(w_shape), "attributes": dict(attrs), "count": count,
                     "ms": {"bf16": [], "int8": []}})
    for pair, feed in requests:  # warm-up
        for r in pair.values():
            for _ in range(2):
                r.infer(feed)
    from tqdm import tqdm

    for i in tqdm(range(rounds), desc="rounds", disable=not progress):
        for k in range(len(requests)):
            pair, feed = requests[(k + i) % len(requests)]
            row = rows[(k + i) % len(requests)]
            for label in (("bf16", "int8") if i % 2 == 0 else ("int8", "bf16")):
                pair[label].infer(feed)
                row["ms"][label].append(convolution_ms(pair[label]))
    for row in rows:
        row["median_ms"] = {k: statistics.median(v) for k, v in row["ms"].items()}
        row["bf16_over_int8"] = row["median_ms"]["bf16"] / row["median_ms"]["int8"]
    return rows


def summary(rows: list[dict]) -> dict:
    total = {k: sum(r["count"] * r["median_ms"][k] for r in rows) for k in ("bf16", "int8")}
    ratios = sorted(r["bf16_over_int8"] for r in rows)
    return {"layers": sum(r["count"] for r in rows), "distinct": len(rows), "sum_ms": total,
            "bf16_over_int8": total["bf16"] / total["int8"], "per_layer_ratio_range": [ratios[0], ratios[-1]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.int8_convs")
    ap.add_argument("--preset", default="paper-128")
    ap.add_argument("--frames", type=int, default=18)
    ap.add_argument("--audio-length", type=int, default=112)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder of bench.int8_graphs' exports (made when absent)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._limits import run_record
    from bench.int8_graphs import _build

    work = Path(args.work or tempfile.mkdtemp(prefix="avfast-int8-convs-"))
    work.mkdir(parents=True, exist_ok=True)
    int8_path = _build(args.preset, work, args.frames, args.audio_length, graphs=("rewritten",))["rewritten int8"][0]
    rows = measure(int8_convolutions(int8_path), args.rounds, args.threads)
    s = summary(rows)
    for r in sorted(rows, key=lambda r: -r["count"] * r["median_ms"]["bf16"]):
        print(f"{'x'.join(map(str, r['weight'])):>18} on {'x'.join(map(str, r['input'])):<20} x{r['count']:<3} "
              f"bf16 {r['median_ms']['bf16']:7.3f} ms  int8 {r['median_ms']['int8']:7.3f} ms  "
              f"{r['bf16_over_int8']:.2f}x")
    print(f"{s['layers']} int8 convolutions ({s['distinct']} distinct): bf16 {s['sum_ms']['bf16']:.1f} ms, int8 "
          f"{s['sum_ms']['int8']:.1f} ms, bf16 / int8 {s['bf16_over_int8']:.2f}x (layers "
          f"{s['per_layer_ratio_range'][0]:.2f}-{s['per_layer_ratio_range'][1]:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({**run_record("bench.int8_convs", argv), "preset": args.preset,
                                               "rounds": args.rounds, "threads": args.threads, "summary": s,
                                               "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
