"""Which layers of the denoiser tolerate int8: quantise the fp32 export with every group of
avfast.export.int8.GROUPS in int8, then with one group at a time kept in float, and measure per-evaluation
parity (max |int8 - fp32| over max |fp32|, per modality) on held-out trajectory inputs (data seed 4, not
the calibration's 3) and on the export's standard parity inputs, on ONNX Runtime and OpenVINO.

    nice python -m bench.int8_sensitivity [--preset tiny] [--out bench/results/int8-sensitivity-tiny.json]

A group whose float copy lowers the error clearly is one that does not tolerate int8 (docs/int8.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def _errors(runtime, inputs, references, timesteps=None) -> dict:
    out = {"video": [], "audio": []}
    with torch.no_grad():
        for (v, a, t_v, t_a), (rv, ra) in zip(inputs, references):
            ov, oa = runtime(v, a, t_v, t_a)
            out["video"].append(((ov - rv).abs().max() / rv.abs().max()).item())
            out["audio"].append(((oa - ra).abs().max() / ra.abs().max()).item())
    result = {k: {"median": float(torch.tensor(x).median()), "worst": max(x)} for k, x in out.items()}
    if timesteps is not None:  # worst of both modalities, median per generated-modality timestep
        by: dict = {}
        for t, ev, ea in zip(timesteps, out["video"], out["audio"]):
            by.setdefault(int(t), []).append(max(ev, ea))
        result["by_timestep"] = {t: float(torch.tensor(e).median()) for t, e in sorted(by.items(), reverse=True)}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.int8_sensitivity")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--frames", type=int, default=18)
    ap.add_argument("--audio-length", type=int, default=112)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated config labels' first words to run (default: all)")
    ap.add_argument("--reuse-calibration", action="store_true", help="reuse the last run's calibration (temp dir)")
    args = ap.parse_args(argv)

    from avfast import models
    from avfast.export import export_onnx, parity_inputs, stand_in_model
    from avfast.export.int8 import (FLOAT_OP_TYPES, GROUPS, KEEP_FLOAT, CalibrationSettings, QuantizeOptions, check_int8_graph,
                                    collect_calibration, quantize_onnx)
    from avfast.runtime import load
    from avfast.runtime.torch_runtimes import EagerDenoiser

    model = (models.default() if args.preset == "tiny" else
             stand_in_model(args.preset)).eval()
    work = Path(tempfile.mkdtemp(prefix="avfast-int8-sens-"))
    fp32 = work / "fp32.onnx"
    export_onnx(model, fp32, batch=1, frames=args.frames, audio_length=args.audio_length)
    t0 = time.perf_counter()
    cache = Path(tempfile.gettempdir()) / f"avfast-int8-calibration-{args.preset}-{args.frames}-{args.audio_length}.pt"
    if args.reuse_calibration and cache.is_file():
        calibration, held = torch.load(cache, weights_only=False)
    else:
        calibration = collect_calibration(model, args.frames, args.audio_length)
        held = collect_calibration(model, args.frames, args.audio_length,
                                   CalibrationSettings(clips=2, every=6, data_seed=4, seed=1000))
        torch.save((calibration, held), cache)
    print(f"calibration {calibration.samples} samples, evaluation {held.samples} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    reference = EagerDenoiser(model, "fused")
    evaluation = [tuple(x[i:i + 1] for x in call) for call in held.inputs for i in range(call[0].shape[0])]
    standard = [parity_inputs(model, 1, args.frames, args.audio_length, seed=s) for s in range(3)]
    per_call = [r["t_a"] if r["task"] == "v2a" else r["t_v"] for r in held.records]
    eval_t = [t for t, call in zip(per_call, held.inputs) for _ in range(call[0].shape[0])]
    with torch.no_grad():
        ref_eval = [reference(*x) for x in evaluation]
        ref_std = [reference(*x) for x in standard]

    configs = {"nncf-default (elementwise inputs int8 too)": ((), ()),
               "conv/matmul int8 (elementwise float)": ((), FLOAT_OP_TYPES),
               "default (" + ", ".join(KEEP_FLOAT) + " float)": (KEEP_FLOAT, FLOAT_OP_TYPES)}
    configs.update({f"{g} float": ((g,), FLOAT_OP_TYPES) for g in GROUPS})
    results = {"preset": args.preset, "frames": args.frames, "audio_length": args.audio_length,
               "calibration": calibration.describe(), "evaluation": held.describe(), "configs": {}}
    if args.only:
        wanted = set(args.only.split(","))
        configs = {k: v for k, v in configs.items() if k.split()[0] in wanted}
    for label, (keep, types) in configs.items():
        path = work / "q.onnx"
        t0 = time.perf_counter()
        info = quantize_onnx(fp32, path, calibration, 1, QuantizeOptions(keep_float=keep, float_op_types=types))
        row = {"keep_float": list(keep), "quantize_s": round(time.perf_counter() - t0, 1),
               "graph": {k: v for k, v in check_int8_graph(path).items() if k != "float_layers"},
               "kept_nodes": {g: v["nodes"] for g, v in info["kept_float"].items()}}
        for name in ("onnxruntime", "openvino"):
            try:
                rt = load(name, path)
            except Exception as e:  # noqa: BLE001 -- a missing runtime is reported, not fatal
                row[name] = f"unavailable: {e}"
                continue
            row[name] = {"trajectory": _errors(rt, evaluation, ref_eval, eval_t),
                         "standard": _errors(rt, standard, ref_std)}
        results["configs"][label] = row
        ort = row["onnxruntime"]["trajectory"] if isinstance(row["onnxruntime"], dict) else {}
        ov = row["openvino"]["trajectory"] if isinstance(row["openvino"], dict) else {}
        print(f"{label:<40} ort worst v {ort.get('video', {}).get('worst', float('nan')):.3f} "
              f"a {ort.get('audio', {}).get('worst', float('nan')):.3f} | ov worst v "
              f"{ov.get('video', {}).get('worst', float('nan')):.3f} a {ov.get('audio', {}).get('worst', float('nan')):.3f}"
              f" | ov median v {ov.get('video', {}).get('median', float('nan')):.3f} "
              f"a {ov.get('audio', {}).get('median', float('nan')):.3f} | ov by t "
              + " ".join(f"{t}:{e:.2f}" for t, e in ov.get("by_timestep", {}).items()), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def render(results: dict) -> str:
    """The sweep's markdown table (docs/int8.md): per configuration, the int8 layers and the errors on held-out
    trajectory inputs (worst video / audio on each runtime, OpenVINO's worst-modality median per timestep)."""
    configs = results["configs"]
    ts = sorted({t for row in configs.values() if isinstance(row.get("openvino"), dict)
                 for t in row["openvino"]["trajectory"].get("by_timestep", {})}, key=float, reverse=True)
    head = ["kept float", "int8 layers", "ORT worst v / a", "OpenVINO worst v / a",
            *[f"OpenVINO t = {t}" for t in ts]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row in configs.items():
        cells = [label, f"{row['graph']['int8_layers']} / {row['graph']['compute_layers']}"]
        for name in ("onnxruntime", "openvino"):
            e = row[name]["trajectory"] if isinstance(row.get(name), dict) else None
            cells.append("—" if e is None else f"{e['video']['worst']:.2f} / {e['audio']['worst']:.2f}")
        by = row["openvino"]["trajectory"].get("by_timestep", {}) if isinstance(row.get("openvino"), dict) else {}
        cells += [f"{by[t]:.2f}" if t in by else "—" for t in ts]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:  # python -m bench.int8_sensitivity --render RESULTS.json
        print(render(json.loads(Path(sys.argv[2]).read_text())))
        sys.exit(0)
    sys.exit(main())
