"""Rows, the summary table and the results JSON, from the cases' records and the machine's limits.

A row: case, backend, dtype, median ms, spread, rounds, speedup over the case's baseline row
with its spread, FLOPs and bytes, the fraction of the machine's limit (roofline: the larger of
FLOPs / matmul peak and bytes / copy bandwidth, over the median time) and peak memory.
"""
from __future__ import annotations

import datetime
import os
import statistics
import sys

from bench._fixture import CaseRecord
from bench._limits import Limits
from bench._noise import BUSY_FACTOR, NOISE_BOUND, MachineState, drift, ratio_spread, spread

SCHEMA = 1


def _limit(rec: CaseRecord, median_s: float, limits: Limits) -> tuple[float | None, str | None]:
    """(fraction of the roofline limit, what bounds it) for one timed case."""
    bounds = []
    flop_rate = limits.flop_limit(rec.dtype)
    if rec.flops and flop_rate:
        bounds.append((rec.flops / flop_rate, f"{rec.dtype} mm"))
    if rec.bytes:
        cls, bandwidth = limits.bandwidth_limit(rec.bytes)
        bounds.append((rec.bytes / bandwidth, f"{cls} bw"))
    if not bounds:
        return None, None
    best_time, kind = max(bounds)
    return best_time / median_s, kind


def build_rows(records: list[CaseRecord], limits: Limits | None, calibrations_ms: list[float] = ()) -> list[dict]:
    """One row per record; a case's rows sorted fastest first, cases in the order they ran.

    A row is `busy` when the calibration loop around it (extra "calibration_ms") took BUSY_FACTOR
    times the best calibration of the run (those of `calibrations_ms` and of every case)."""
    seen = list(calibrations_ms) + [ms for r in records for ms in r.extra.get("calibration_ms", [])]
    busy_ms = BUSY_FACTOR * min(seen) if seen else None
    cases: dict[str, list[CaseRecord]] = {}
    for rec in records:
        cases.setdefault(rec.case, []).append(rec)
    rows = []
    for case, recs in cases.items():
        base = next((r for r in recs if r.baseline), None) or next((r for r in recs if r.backend == "reference"), None)
        med = {id(r): statistics.median(r.times) if r.times else None for r in recs}
        spr = {id(r): spread(r.times) if r.times else None for r in recs}
        for rec in sorted(recs, key=lambda r: med[id(r)] if med[id(r)] is not None else 0.0):
            m, s = med[id(rec)], spr[id(rec)]
            row = {"case": case, "backend": rec.backend, "dtype": rec.dtype,
                   "median_ms": m * 1e3 if m is not None else None, "spread": s,
                   "rounds": len(rec.times) if rec.times else 0,
                   "min_ms": min(rec.times) * 1e3 if rec.times else None,
                   "noisy": s is not None and s > NOISE_BOUND,
                   "busy": busy_ms is not None and max(rec.extra.get("calibration_ms", [0.0])) > busy_ms,
                   "baseline": base is not None and rec is base,
                   "baseline_backend": base.backend if base is not None else None,
                   "speedup": None, "speedup_spread": None,
                   "flops": rec.flops, "bytes": rec.bytes,
                   "gflop_per_s": rec.flops / m / 1e9 if rec.flops and m else None,
                   "gb_per_s": rec.bytes / m / 1e9 if rec.bytes and m else None,
                   "limit_fraction": None, "limit_kind": None,
                   "peak_mb": rec.peak_bytes / 2**20 if rec.peak_bytes is not None else None,
                   "nodeid": rec.nodeid, **rec.extra}
            bm = med[id(base)] if base is not None else None
            if base is not None and rec is not base and m and bm:
                row["speedup"] = bm / m
                row["speedup_spread"] = ratio_spread(spr[id(base)], s)
            if m and limits is not None:
                row["limit_fraction"], row["limit_kind"] = _limit(rec, m, limits)
            rows.append(row)
    return rows


# ------------------------------------------------------------------ formatting shared with report.py
def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}" if x >= 0.01 else f"{x:.1%}"


def fmt_speedup(row: dict) -> str:
    """`4.16× ±5%`; the baseline row says so; a ratio never appears without its spread."""
    if row["baseline"]:
        return "baseline"
    if row["speedup"] is None or row["speedup_spread"] is None:
        return "—"
    return f"{row['speedup']:.2f}× ±{row['speedup_spread']:.0%}"


def fmt_limit(row: dict) -> str:
    return "—" if row["limit_fraction"] is None else f"{fmt_pct(row['limit_fraction'])} {row['limit_kind']}"


def fmt_mb(mb: float | None) -> str:
    return "—" if mb is None else f"{mb:.1f}" if mb < 100 else f"{mb:.0f}"


def describe_machine(machine: dict) -> str:
    """The machine in one line."""
    if not machine:
        return "a machine not probed (benchmarks disabled: nothing was timed)"
    hw = machine.get("gpu") or machine.get("cpu", "?")
    about = [] if machine.get("gpu") else [machine.get("cpu_id"), " ".join(machine.get("cpu_flags") or [])]
    about = [a for a in about if a]
    flags = f" ({'; '.join(about)})" if about else ""
    return (f"{hw}{flags}, {machine.get('cores')} cores, {machine.get('threads')} threads, "
            f"torch {machine.get('torch')} ({machine.get('torch_blas')})")


def describe_limits(limits: dict) -> str:
    """The measured limits in one line."""
    if not limits.get("matmul_gflops"):
        return "limits: not probed"
    flops = ", ".join(f"{k} mm {v:.3g} GFLOP/s" for k, v in limits["matmul_gflops"].items())
    bw = ", ".join(f"copy {v:.3g} GB/s ({k})" for k, v in limits["copy_gbps"].items())
    return f"limits: {flops}, {bw}"


def describe_state(start: dict | None, end: dict | None) -> str:
    if not start:
        return "machine state not recorded"
    load = "?" if start.get("load_1min") is None else f"{start['load_1min']:.1f}"
    text = f"load average {load} on {start['cores']} cores at the start; calibration loop {start['calibration_ms']:.2f} ms"
    if end:
        change = end["calibration_ms"] / start["calibration_ms"] - 1
        text += f" -> {end['calibration_ms']:.2f} ms at the end ({change:+.0%})"
    return text


LEGEND = (f"ms: median of the rounds. spread: IQR/median (range/median under 5 rounds), ! above {NOISE_BOUND:.0%}; "
          f"* the machine was busy around the case (calibration loop over {BUSY_FACTOR:g}x its best).\n"
          "x baseline: the case's baseline median / this median, ± both spreads in quadrature.\n"
          "limit: roofline fraction, the larger of FLOPs / matmul peak and bytes / copy bandwidth, over the median.\n"
          "peak MB: memory above what the process held before one call.")


def render_table(rows: list[dict]) -> str:
    head = f"{'case / backend':<22} {'dtype':<5} {'ms':>9} {'spread':>8} {'rounds':>6} {'x baseline':>13} {'limit':>16} {'peak MB':>8}"
    lines = [head, "-" * len(head)]
    case = None
    for r in rows:
        if r["case"] != case:
            case = r["case"]
            lines.append(case)
        spr = "—" if r["spread"] is None else f"{r['spread']:.0%}{'!' if r['noisy'] else ' '}{'*' if r['busy'] else ' '}"
        lines.append(f"  {r['backend'][:20]:<20} {r['dtype']:<5} {fmt_ms(r['median_ms']):>9} {spr:>8} "
                     f"{r['rounds']:>6} {fmt_speedup(r):>13} {fmt_limit(r):>16} {fmt_mb(r['peak_mb']):>8}")
    return "\n".join(lines)


def render_summary(results: dict) -> str:
    rows = results["rows"]
    lines = [f"avfast benchmarks on {describe_machine(results['machine'])}", describe_limits(results["limits"]),
             describe_state(results["state"].get("start"), results["state"].get("end")), LEGEND, ""]
    if not rows:
        return "\n".join(lines + ["no benchmark cases ran"])
    lines.append(render_table(rows))
    timed = [r for r in rows if r["median_ms"] is not None]
    if not timed:
        lines.append(f"\nbenchmarks disabled: {len(rows)} cases ran once, untimed and unmeasured")
    above = [r for r in timed if (r["limit_fraction"] or 0) > 1]
    if above:
        lines.append(f"\n{len(above)} rows run above the probed limit (limit > 100%): the probe is torch's best GEMM "
                     "and copy, not the hardware's peak, so a kernel can beat it (or its data sat in a faster cache "
                     "level than the probe's, or the probe ran slow on a busy machine)")
    busy = [r for r in timed if r["busy"]]
    if busy:
        lines.append(f"\n{len(busy)} of {len(timed)} timed rows ran while the machine was busy (marked *): their "
                     "times are not the ops' own, whatever their spread")
    noisy = [r for r in timed if r["noisy"]]
    if noisy:
        lines.append(f"\n{len(noisy)} of {len(timed)} timed cases have a spread above {NOISE_BOUND:.0%} (marked !): "
                     "their ratios are uncertain by at least that much")
    for warning in results.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def _command() -> str:
    """How this run was started, as a person would type it."""
    env = os.environ.get("AVFAST_BENCH_SUMMARY")
    return " ".join(([f"AVFAST_BENCH_SUMMARY={env}"] if env else []) + ["pytest", *sys.argv[1:]])


def results_document(rows: list[dict], limits: Limits | None, start: MachineState | None,
                     end: MachineState | None, memory_method: str, warnings: list[str]) -> dict:
    """The results JSON: machine, limits, machine state, method notes and rows."""
    lim = limits.to_json() if limits is not None else {"machine": {}, "matmul_gflops": {}, "copy_gbps": {},
                                                       "copy_traffic": {}}
    state = {"start": start.__dict__ if start else None, "end": end.__dict__ if end else None,
             "calibration_drift": drift(start, end) if start and end else None}
    return {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": _command(), "machine": lim.pop("machine"), "limits": lim, "state": state,
            "noise_bound": NOISE_BOUND, "memory_method": memory_method, "warnings": warnings, "rows": rows}
