"""Compare two benchmark results files: `python -m bench.compare OLD.json NEW.json`.

Rows are matched by (case, backend, dtype). A row regressed when its median grew by more than its
noise: the old and new spreads (IQR/median) in quadrature, and at least --min-change (5%); it
improved when it shrank by as much. Exit status 1 when any row regressed, else 0. Results from
different machines are compared with a warning: their times are not comparable.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bench._noise import ratio_spread

MACHINE_KEYS = ("cpu", "gpu", "cores", "threads", "torch")


@dataclasses.dataclass
class Change:
    case: str
    backend: str
    dtype: str
    old_ms: float
    new_ms: float
    change: float       # new / old - 1
    threshold: float    # noise bound the change is held to

    @property
    def verdict(self) -> str:
        if self.change > self.threshold:
            return "REGRESSION"
        if self.change < -self.threshold:
            return "improvement"
        return "within noise"


def _timed_rows(results: dict) -> dict[tuple[str, str, str], dict]:
    return {(r["case"], r["backend"], r["dtype"]): r for r in results["rows"] if r.get("median_ms")}


def compare(old: dict, new: dict, min_change: float = 0.05) -> tuple[list[Change], list[tuple], list[tuple]]:
    """(changes of the rows in both, keys only in old, keys only in new)."""
    if min_change < 0:
        raise ValueError(f"compare: `min_change` must be >= 0, got {min_change}")
    a, b = _timed_rows(old), _timed_rows(new)
    changes = []
    for key in a.keys() & b.keys():
        o, n = a[key], b[key]
        noise = ratio_spread(o.get("spread") or 0.0, n.get("spread") or 0.0)
        changes.append(Change(*key, o["median_ms"], n["median_ms"], n["median_ms"] / o["median_ms"] - 1,
                              max(min_change, noise)))
    changes.sort(key=lambda c: -c.change)
    return changes, sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())


def machine_mismatch(old: dict, new: dict) -> list[str]:
    om, nm = old.get("machine", {}), new.get("machine", {})
    return [f"{k}: {om.get(k)!r} -> {nm.get(k)!r}" for k in MACHINE_KEYS if om.get(k) != nm.get(k)]


def _load(path: str) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "rows" not in data:
        raise SystemExit(f"{path}: not a bench results file (expected a JSON object with 'rows'; "
                         f"write one with AVFAST_BENCH_SUMMARY=prefix pytest bench --benchmark-only)")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--min-change", type=float, default=0.05,
                        help="smallest relative change ever flagged, whatever the noise (default 0.05)")
    parser.add_argument("--all", action="store_true", help="list the rows within noise too")
    args = parser.parse_args(argv)
    old, new = _load(args.old), _load(args.new)
    for diff in machine_mismatch(old, new):
        print(f"WARNING: different machines ({diff}): times are not comparable")
    changes, gone, added = compare(old, new, args.min_change)
    print(f"{'case':<58} {'backend':<10} {'dtype':<5} {'old ms':>9} {'new ms':>9} {'change':>8} {'noise':>6}  verdict")
    for c in changes:
        if args.all or c.verdict != "within noise":
            print(f"{c.case[:58]:<58} {c.backend[:10]:<10} {c.dtype:<5} {c.old_ms:9.3f} {c.new_ms:9.3f} "
                  f"{c.change:+8.1%} {c.threshold:6.0%}  {c.verdict}")
    for label, keys in (("only in old", gone), ("only in new", added)):
        for key in keys:
            print(f"{label}: {' / '.join(key)}")
    regressions = sum(c.verdict == "REGRESSION" for c in changes)
    improvements = sum(c.verdict == "improvement" for c in changes)
    print(f"{len(changes)} rows compared: {regressions} regressed, {improvements} improved, "
          f"{len(changes) - regressions - improvements} within noise")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
