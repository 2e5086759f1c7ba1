"""The export's graph rewrites and the int8 float-layer choice, A/B on OpenVINO: ms per FE of the stock graph
(no rewrites; int8 with the fusion and wide-range layers float, the choice before the rewrites) against the
rewritten one (int8 with `KEEP_FLOAT`), in bf16 and int8, at one preset's B1 (docs/int8.md, "Speed"). Int8
rows run their float layers at the runtime's default (`int8_float_precision()`: bf16 on a bf16 CPU); the
`rewritten int8 f32` row compiles the same int8 graph with its float layers in f32, as before that default.

    nice python -m bench.int8_graphs [--preset paper-128] [--rounds 24] [--pause PID,PID] [--work DIR]
    python -m bench.int8_graphs --suite [--rounds 24]   # the runtimes suite's own exports, B1 and B4

All compiled models live in one process and are called round-robin (one call each per round, the order
rotated), so slow drifts of a shared machine hit every row alike; `--pause` stops the given processes
(SIGSTOP, then SIGCONT) while timing. Medians and ratios of medians are printed and, with --json, written.
Exports are made once into --work (reused when present). Stand-in weights: timing does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _build(preset: str, work: Path, frames: int, audio_length: int,
           graphs: tuple[str, ...] = ("stock", "rewritten")) -> dict[str, tuple[Path, str | None]]:
    from avfast.export import stand_in_model
    from avfast.export.graph import export_onnx
    from avfast.export.int8 import KEEP_FLOAT, CalibrationSettings, QuantizeOptions, collect_calibration, quantize_onnx

    model = stand_in_model(preset)
    kinds = {"stock": (work / "stock.onnx", False, ("fusion", "wide_range")),
             "rewritten": (work / "rewritten.onnx", True, KEEP_FLOAT)}
    calibration = None
    rows = {}
    for name in graphs:
        path, rewrite, keep = kinds[name]
        if not path.is_file():
            export_onnx(model, path, batch=1, frames=frames, audio_length=audio_length, rewrite=rewrite)
        q = work / f"{name}-int8-{'-'.join(keep) or 'none'}.onnx"
        if not q.is_file():
            if calibration is None:
                calibration = collect_calibration(model, frames, audio_length, CalibrationSettings(
                    clips=2, steps=6, every=2, first_step_clips=0))
            quantize_onnx(path, q, calibration, 1, QuantizeOptions(keep_float=keep))
        rows[f"{name} bf16"] = (path, "bf16")
        rows[f"{name} int8"] = (q, None)
    if "rewritten" in graphs:
        rows["rewritten int8 f32"] = (rows["rewritten int8"][0], "fp32")
    return rows


def _time(rows: dict, rounds: int, pause: list[int], frames: int, audio_length: int, config) -> dict[str, list[float]]:
    from avfast.runtime import load

    runtimes = {k: load("openvino", p, precision=prec, first_step=False) for k, (p, prec) in rows.items()}
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, config.video_channels, frames, config.height, config.width, generator=g)
    a = torch.randn(1, config.mel_bins, audio_length, generator=g)
    t = torch.full((1,), config.num_train_steps / 2)
    return _round_robin(runtimes, (v, a, t, t), rounds, pause)


def _round_robin(runtimes: dict, inputs: tuple, rounds: int, pause: list[int]) -> dict[str, list[float]]:
    """ms of each call: 3 warm-up calls each, then `rounds` rounds of one call each, the order rotated."""
    names = list(runtimes)
    times: dict[str, list[float]] = {k: [] for k in names}
    with torch.no_grad():
        for r in runtimes.values():
            for _ in range(3):
                r(*inputs)
        for pid in pause:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1)
            for i in range(rounds):
                for k in names[i % len(names):] + names[:i % len(names)]:
                    start = time.perf_counter()
                    runtimes[k](*inputs)
                    times[k].append(1e3 * (time.perf_counter() - start))
        finally:
            for pid in pause:
                os.kill(pid, signal.SIGCONT)
    return times


SUITE_ROWS = ("openvino bf16", "openvino int8", "eager-fused bf16")


def _suite(preset: str, rounds: int, pause: list[int]) -> dict:
    """The runtimes suite's own runtimes (bench/bench_runtimes.py: its cached exports, stand-in weights), round-robin
    at each of its batches: the int8-over-bf16 ratio its few timed rounds per row cannot resolve."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_runtimes as suite

    out = {}
    for batch in suite.BATCHES:
        runtimes = {label: suite._runtime(preset, *suite.ROWS[label][:2], batch) for label in SUITE_ROWS}
        inputs = suite._model(preset).example_inputs(batch_size=batch)
        times = _round_robin(runtimes, inputs, rounds, pause)
        med = {k: statistics.median(x) for k, x in times.items()}
        ratio, halves, p10 = _ratio(times), _halves(times), _ratio(times, percentile=10)
        print(f"B{batch}: " + ", ".join(f"{k} {m:.1f} ms" for k, m in med.items())
              + f"; best bf16 / openvino int8 {ratio:.2f}x"
              + f" (first / second half of the rounds: {halves[0]:.2f}x / {halves[1]:.2f}x;"
              + f" of the 10th percentiles: {p10:.2f}x)")
        out[f"B{batch}"] = {"median_ms": med, "best_bf16_over_int8": ratio,
                            "halves_best_bf16_over_int8": halves, "p10_best_bf16_over_int8": p10, "ms": times}
    return out


def _ratio(times: dict[str, list[float]], part: slice = slice(None), percentile: float = 50) -> float:
    """best bf16 row / `openvino int8`, each row's times over the rounds `part` at `percentile` (50: medians).

    The 10th percentile is each row's calls least touched by a shared machine's slow spells (docs/int8.md):
    when it and the median disagree, a slow spell covered much of the run."""
    at = {k: float(np.percentile(x[part], percentile)) for k, x in times.items()}
    return min(m for k, m in at.items() if k.endswith("bf16")) / at["openvino int8"]


def _halves(times: dict[str, list[float]]) -> tuple[float, float]:
    """best bf16 / int8 over the first and the second half of the rounds: a shared machine changes state within
    a run (docs/int8.md), and a ratio that differs between the halves says the run straddled such a change."""
    n = len(next(iter(times.values())))
    if n < 2:
        raise ValueError(f"halves: need at least 2 rounds, got {n}")
    return _ratio(times, slice(0, n // 2)), _ratio(times, slice(n // 2, n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.int8_graphs")
    ap.add_argument("--preset", default="paper-128")
    ap.add_argument("--frames", type=int, default=18)
    ap.add_argument("--audio-length", type=int, default=112)
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--pause", default="", help="comma-separated PIDs to stop while timing")
    ap.add_argument("--work", default=None, help="folder for the exports (default: a temporary one)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--suite", action="store_true", help="time the runtimes suite's own OpenVINO bf16/int8 and eager "
                                                         "bf16 rows (its cached exports) at B1 and B4 instead")
    args = ap.parse_args(argv)
    from bench._limits import run_record

    pause = [int(p) for p in args.pause.split(",") if p]
    if args.suite:
        runs = _suite(args.preset, args.rounds, pause)
        if args.json:
            Path(args.json).write_text(json.dumps({**run_record("bench.int8_graphs", argv), "preset": args.preset,
                                                   "rounds": args.rounds, "rows": SUITE_ROWS, "batches": runs},
                                                  indent=1) + "\n")
        return 0
    import tempfile

    from avfast.models.config import preset

    work = Path(args.work or tempfile.mkdtemp(prefix="avfast-int8-graphs-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = _build(args.preset, work, args.frames, args.audio_length)
    config = preset(args.preset)
    times = _time(rows, args.rounds, pause, args.frames, args.audio_length, config)
    med = {k: statistics.median(x) for k, x in times.items()}
    for k, m in med.items():
        graph = k.split()[0]
        print(f"{k:20s} {m:7.1f} ms  {graph} bf16 / this {med[graph + ' bf16'] / m:.2f}x  "
              f"stock bf16 / this {med['stock bf16'] / m:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({**run_record("bench.int8_graphs", argv), "preset": args.preset,
                                               "rounds": args.rounds, "median_ms": med, "ms": times}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
