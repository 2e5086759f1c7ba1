"""Where an int8 denoiser's time goes on OpenVINO's CPU plugin: its per-layer performance counters
(PERF_COUNT) summed by layer type and kernel, for the int8 export next to the fp32 graph in bf16 and f32.

    nice python -m bench.profile_int8 [--preset paper-128] [--batch 1] [--calls 5] [--json out.json]

The int8 graph is exported with a small calibration set (timing does not depend on the scales; the
command's own export calibrates on more). Stand-in weights for presets without trained ones. Rows: layer
type, runtime precision and kernel (exec type), total ms per call, share, count. "Reorder" rows are
layout/precision conversions between kernels; FakeQuantize/Subgraph rows with u8/i8 outputs are the
quantise steps the plugin fused into elementwise kernels.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def profile(path: Path, hint: str, batch_inputs: dict, calls: int) -> dict:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer(batch_inputs)
    totals: dict = defaultdict(lambda: [0.0, 0])
    for _ in range(calls):
        request.infer(batch_inputs)
        for p in request.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            key = (p.node_type, p.exec_type)
            totals[key][0] += p.real_time.total_seconds() * 1e3 / calls
            totals[key][1] += 1
    total = sum(v[0] for v in totals.values())
    rows = sorted(((k[0], k[1], ms, n // calls) for k, (ms, n) in totals.items()), key=lambda r: -r[2])
    return {"hint": hint, "total_ms": total, "rows": [{"type": t, "kernel": e, "ms": ms, "share": ms / total,
                                                       "count": n} for t, e, ms, n in rows]}


COMPUTE_TYPES = ("Convolution", "MatMul", "FullyConnected")


def is_compute(layer_type: str) -> bool:
    """Convolutions, matmuls and fully connected layers, whatever the plugin's variant of the name
    (OpenVINO 2026 names int8 FC layers `FullyConnectedQuantizedLegacy`)."""
    return layer_type.startswith(COMPUTE_TYPES)


def summarize(prof: dict) -> dict:
    """Time by kind: int8 compute, float compute, reorders, quantise/elementwise, normalisation, other."""
    kinds: dict = defaultdict(float)
    for r in prof["rows"]:
        t, e = r["type"], r["kernel"].lower()
        if is_compute(t):
            kinds["int8 conv/matmul" if ("i8" in e or "u8" in e) else f"float conv/matmul ({e.split('_')[-1]})"] += r["ms"]
        elif t == "Reorder":
            kinds["reorders"] += r["ms"]
        elif t in ("FakeQuantize", "Subgraph", "Eltwise"):
            kinds["elementwise + quantise (fused subgraphs)"] += r["ms"]
        elif t in ("MVN", "Softmax", "Interpolate"):
            kinds[t] += r["ms"]
        else:
            kinds["other"] += r["ms"]
    return {k: round(v, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}


def ceiling(int8: dict, bf16: dict) -> dict:
    """What quantisation can give at most, from two profiles' sums of layer times (ms per call).

    `compute` is the convolutions, matmuls and FC layers (int8 or kept float), `remainder` everything else.
    - `measured`: bf16 sum / int8 sum, the FE ratio as the layer times give it;
    - `same_remainder`: bf16 sum / (int8 compute + bf16 remainder), int8 with its own extras (quantise
      steps, i8 reorders and transposes) gone and nothing else changed: the best quantisation can do;
    - `compute_only`: bf16 compute / int8 compute, a denoiser with no remainder at all.
    A remainder made smaller speeds both precisions by the same milliseconds, so `same_remainder` only
    approaches `compute_only` as the remainder goes to zero.
    """
    def split(prof: dict) -> tuple[float, float]:
        compute = sum(r["ms"] for r in prof["rows"] if is_compute(r["type"]))
        return compute, prof["total_ms"] - compute

    c8, r8 = split(int8)
    c16, r16 = split(bf16)
    if c8 <= 0 or c16 <= 0:
        raise ValueError(f"ceiling: both profiles need compute layers; got int8 {c8:.3f} ms, bf16 {c16:.3f} ms")
    return {"int8_compute_ms": round(c8, 2), "int8_remainder_ms": round(r8, 2),
            "bf16_compute_ms": round(c16, 2), "bf16_remainder_ms": round(r16, 2),
            "measured": round((c16 + r16) / (c8 + r8), 3), "same_remainder": round((c16 + r16) / (c8 + r16), 3),
            "compute_only": round(c16 / c8, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_int8")
    ap.add_argument("--preset", default="paper-128")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=18)
    ap.add_argument("--audio-length", type=int, default=112)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from avfast import models
    from avfast.export import export_onnx, stand_in_model
    from avfast.export.int8 import CalibrationSettings, check_int8_graph, collect_calibration, quantize_onnx

    model = (models.default() if args.preset == "tiny" else
             stand_in_model(args.preset)).eval()
    work = Path(tempfile.mkdtemp(prefix="avfast-profile-int8-"))
    fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
    export_onnx(model, fp32, batch=args.batch, frames=args.frames, audio_length=args.audio_length)
    # 4 steps: `tiny` profiles the shipped default, a 4-step student, which refuses other step counts
    calibration = collect_calibration(model, args.frames, args.audio_length,
                                      CalibrationSettings(clips=max(2, args.batch), steps=4, every=1))
    quantize_onnx(fp32, int8, calibration, args.batch)
    stats = check_int8_graph(int8)
    g = torch.Generator().manual_seed(0)
    v, a, _, _ = model.example_inputs(args.batch, frames=args.frames, audio_length=args.audio_length, generator=g)
    feeds = {"v_t": v.numpy(), "a_t": a.numpy(), "t_v": np.full(args.batch, 500, np.float32),
             "t_a": np.full(args.batch, 500, np.float32)}
    from bench._limits import run_record

    out = {**run_record("bench.profile_int8", argv), "preset": args.preset, "batch": args.batch,
           "graph": {k: v for k, v in stats.items() if k != "float_layers"}, "float_layers": stats["float_layers"],
           "profiles": {}}
    for label, path, hint in (("int8 (float layers f32)", int8, "f32"), ("int8 (float layers bf16)", int8, "bf16"),
                              ("fp32 graph, bf16 kernels", fp32, "bf16")):
        try:
            prof = profile(path, hint, feeds, args.calls)
        except RuntimeError as e:   # OpenVINO 2026.4 refused the paper-128 int8 graph with the bf16 hint ("bad combination")
            out["profiles"][label] = {"error": str(e).strip().splitlines()[-1]}
            print(f"\n{label}: OpenVINO could not compile it: {out['profiles'][label]['error']}")
            continue
        prof["by_kind"] = summarize(prof)
        out["profiles"][label] = prof
        print(f"\n{label}: {prof['total_ms']:.1f} ms per call (sum of layer times)")
        print("  by kind: " + ", ".join(f"{k} {v:.1f} ms" for k, v in prof["by_kind"].items()))
        for r in prof["rows"][:args.top]:
            print(f"  {r['type']:<16} {r['kernel']:<28} {r['ms']:8.2f} ms {100 * r['share']:5.1f} %  x{r['count']}")
    bf16 = out["profiles"].get("fp32 graph, bf16 kernels", {})
    for label in ("int8 (float layers bf16)", "int8 (float layers f32)"):
        if "rows" in bf16 and "rows" in out["profiles"].get(label, {}):
            out["ceiling"] = {"int8": label, **ceiling(out["profiles"][label], bf16)}
            c = out["ceiling"]
            print(f"\nint8 over bf16 ({label} against the fp32 graph in bf16), sums of layer times: measured "
                  f"{c['measured']:.2f}x; int8's remainder at bf16's {c['same_remainder']:.2f}x; "
                  f"compute alone {c['compute_only']:.2f}x (compute {c['bf16_compute_ms']:.1f} / "
                  f"{c['int8_compute_ms']:.1f} ms, remainder {c['bf16_remainder_ms']:.1f} / "
                  f"{c['int8_remainder_ms']:.1f} ms)")
            break
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
