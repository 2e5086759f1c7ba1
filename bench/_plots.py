"""PNG charts of a results document: speedups over the baseline, and ms per function evaluation
(FE) of the denoiser per runtime. Needs matplotlib (the `media` extra); without it nothing is drawn."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _log_whiskers(values: list[float], spreads: list[float | None]) -> list[list[float]]:
    """x / (1 + spread) .. x * (1 + spread): symmetric on the log axes, never below zero."""
    rel = [s or 0.0 for s in spreads]
    return [[v - v / (1 + r) for v, r in zip(values, rel)], [v * r for v, r in zip(values, rel)]]


def _title(results: dict) -> str:
    m = results["machine"]
    return f"{m.get('gpu') or m.get('cpu', '?')}, {m.get('threads')} threads, torch {m.get('torch')}"


def plot_speedups(results: dict, path: Path) -> bool:
    """Bars from 1x (right: faster than the baseline, left: slower), log scale, with each ratio's spread."""
    plt = _pyplot()
    shown = [r for r in results["rows"] if r["speedup"] is not None]
    if plt is None or not shown:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.26 * len(shown) + 1.6))
    speed = [r["speedup"] for r in shown]
    y = range(len(shown))
    ax.barh(y, [abs(s - 1.0) for s in speed], left=[min(s, 1.0) for s in speed],
            color=["tab:green" if s >= 1 else "tab:red" for s in speed])
    ax.errorbar(speed, y, xerr=_log_whiskers(speed, [r["speedup_spread"] for r in shown]), fmt="none",
                ecolor="black", elinewidth=0.7, capsize=2)
    ax.set_yticks(list(y), [f"{r['case']}  [{r['backend']} {r['dtype']} vs {r['baseline_backend']}]" for r in shown],
                  fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup over the case's baseline (medians of one run; whiskers: x/(1+spread) to x(1+spread))")
    ax.set_title(_title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_ms_per_fe(results: dict, path: Path) -> bool:
    """ms per denoiser call (rows with extra_info["model"]), one bar per runtime/backend/dtype."""
    plt = _pyplot()
    shown = [r for r in results["rows"] if r.get("model") and r.get("fe") and r["median_ms"] is not None]
    if plt is None or not shown:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(shown) + 1.6))
    y = range(len(shown))
    ms = [r["median_ms"] for r in shown]
    ax.barh(y, ms, xerr=_log_whiskers(ms, [r["spread"] for r in shown]), color="tab:blue",
            error_kw={"elinewidth": 0.7, "capsize": 2})
    labels = [f"{r['case']}  [{r.get('runtime', 'eager')} {r['backend']} {r['dtype']}]" for r in shown]
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per function evaluation (median; whiskers: x/(1+spread) to x(1+spread))")
    ax.set_title(_title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def write_plots(results: dict, prefix: str) -> list[str]:
    """<prefix>.png (speedups) and <prefix>-ms-per-fe.png; the paths written."""
    written = []
    if plot_speedups(results, Path(prefix + ".png")):
        written.append(prefix + ".png")
    if plot_ms_per_fe(results, Path(prefix + "-ms-per-fe.png")):
        written.append(prefix + "-ms-per-fe.png")
    return written

