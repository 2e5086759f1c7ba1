"""The claims table from per-clip scores: mean and bootstrap CI per row, paired tests, markdown and a plot."""
from __future__ import annotations

import json
from pathlib import Path

from .._figures import save_figure
from .evaluate import METRICS
from .finetune import RUNS
from .stats import bootstrap_ci, paired_test

# AV-Align again over the clips with a hit: a flash changes brightness without moving anything, so optical
# flow has no peak in a flash-only clip and AV-Align is 0 there whatever the sound.
MOVING = "av_align_moving"
COLUMNS = (*METRICS, MOVING)
METRIC_NAMES = {"av_align": "AV-Align", "hit_100ms": "beat hit ±100 ms", "hit_500ms": "beat hit ±500 ms",
                MOVING: "AV-Align, clips with a hit"}


def scores(results: dict, key: str, column: str) -> list | None:
    """Per-clip scores of one row and column (None where the row has none)."""
    metric = "av_align" if column == MOVING else column
    values = results["rows"][key]["scores"][metric]
    if column == MOVING:
        if results["rows"][key]["kind"] == "joint":
            return None  # generated from noise: clip i's events say nothing about the video sampled for it
        kinds = results.get("event_kinds") or []  # absent from files written before it was recorded
        values = [v for v, k in zip(values, kinds) if "hit" in k.split("+")]
    return None if not values or None in values else values


def summarize(results: dict) -> dict[str, dict[str, dict | None]]:
    """row key -> column -> Interval dict (None where the row has no such score)."""
    out = {}
    for key in results["rows"]:
        out[key] = {}
        for c in COLUMNS:
            values = scores(results, key, c)
            out[key][c] = None if values is None else bootstrap_ci(values).to_dict()
    return out


def comparisons(results: dict) -> list[tuple[str, str, str]]:
    """(label, row a, row b) pairs scored on the same clips and noise: CMMD vs nCMMD, gamma vs 1."""
    rows = results["rows"]
    pairs = []
    for mode in ("clean", "replace"):
        control = f"v2a/{mode}/ncmmd"
        for name in (n for n in RUNS if RUNS[n].get("eta", 0.0) > 0):
            treated = f"v2a/{mode}/{name}"
            if control in rows and treated in rows:
                pairs.append((f"v2a {mode}: {name} - ncmmd", treated, control))
    joint = sorted((k for k in rows if k.startswith("joint/")), key=lambda k: rows[k]["gamma"])
    unadjusted = [k for k in joint if rows[k]["gamma"] == 1.0]
    for k in joint:
        if unadjusted and k != unadjusted[0]:
            pairs.append((f"joint: gamma {rows[k]['gamma']:g} - gamma 1", k, unadjusted[0]))
    return pairs


def paired(results: dict) -> list[dict]:
    out = []
    for label, a, b in comparisons(results):
        for m in COLUMNS:
            sa, sb = scores(results, a, m), scores(results, b, m)
            if sa is None or sb is None:
                continue
            out.append({"comparison": label, "metric": m, **paired_test(sa, sb).to_dict()})
    return out


def _cell(ci: dict | None) -> str:
    return "—" if ci is None else f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def markdown(results: dict, summary: dict, tests: list[dict]) -> str:
    n = results["settings"]["clips"]
    moving = sum("hit" in k.split("+") for k in results.get("event_kinds") or [])
    names = {**METRIC_NAMES, MOVING: f"{METRIC_NAMES[MOVING]} ({moving})"}
    lines = [f"| row ({n} held-out clips) | " + " | ".join(names[m] for m in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for key, row in results["rows"].items():
        lines.append(f"| {row['label']} | " + " | ".join(_cell(summary[key][m]) for m in COLUMNS) + " |")
    if tests:
        lines += ["", "| paired comparison (same clips, same noise) | metric | mean difference [95 % CI] | "
                      "wins / losses | p (sign-flip) | p (Wilcoxon) |", "|---|---|---|---|---|---|"]
        for t in tests:
            wil = "—" if t["p_wilcoxon"] is None else f"{t['p_wilcoxon']:.3f}"
            lines.append(f"| {t['comparison']} | {METRIC_NAMES[t['metric']]} | {t['mean_difference']:+.3f} "
                         f"[{t['low']:+.3f}, {t['high']:+.3f}] | {t['wins']} / {t['losses']} | "
                         f"{t['p_sign_flip']:.3f} | {wil} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results["rows"])
    labels = [results["rows"][k]["label"] for k in keys]
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.6 * len(COLUMNS), 0.34 * len(keys) + 1.4), dpi=110,
                             sharey=True)
    colors = {"ceiling": "tab:green", "vocoder": "tab:olive", "floor": "tab:gray", "v2a": "tab:blue",
              "joint": "tab:purple"}
    for ax, m in zip(axes, COLUMNS):
        for y, k in enumerate(keys):
            ci = summary[k][m]
            if ci is None:
                continue
            ax.errorbar(ci["mean"], y, xerr=[[ci["mean"] - ci["low"]], [ci["high"] - ci["mean"]]], fmt="o",
                        ms=4, capsize=3, color=colors[results["rows"][k]["kind"]])
        ax.set_title(METRIC_NAMES[m], fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(keys)), labels, fontsize=8)
    axes[0].invert_yaxis()
    s = results["settings"]
    fig.suptitle(f"mean and 95 % bootstrap CI over {s['clips']} held-out clips ({s['sampler']}, {s['steps']} "
                 f"steps, Griffin-Lim)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def collect_curves(runs_dir: Path) -> dict[str, list[dict]]:
    """Each fine-tune's logged metrics (metrics.jsonl: step, loss, positive / negative terms), by run name."""
    curves = {}
    for name in RUNS:
        log = Path(runs_dir) / name / "metrics.jsonl"
        if log.is_file():
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            # a resumed run logs the steps after its checkpoint again: keep the last record per step
            curves[name] = sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])
    return curves


def plot_curves(curves: dict[str, list[dict]], path: Path, window: int = 5) -> None:
    """Positive loss and the mean negative error per run against step (running mean over `window` logs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def smooth(values):
        v = np.asarray(values, dtype=float)
        return np.convolve(v, np.ones(window) / window, mode="valid") if len(v) >= window else v

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        positive = [r.get("positive", r["loss"]) for r in rows]
        line, = axes[0].plot(steps[window - 1:] if len(steps) >= window else steps, smooth(positive), label=name)
        if "negative_video" in rows[0]:
            negative = [(r["negative_video"] + r["negative_audio"]) / 2 for r in rows]
            axes[1].plot(steps[window - 1:] if len(steps) >= window else steps, smooth(negative), label=name,
                         color=line.get_color())
    axes[0].set_title("positive v-loss L (matched pairs)", fontsize=9)
    axes[1].set_title("negative v-loss (L_neg_v + L_neg_a) / 2, CMMD runs", fontsize=9)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("fine-tune step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"claims fine-tunes from the default model (running mean over {window} logged steps)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
