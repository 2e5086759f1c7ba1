"""The claims table from per-clip scores: mean and bootstrap CI per row, paired tests, markdown and a plot."""
from __future__ import annotations

import os
from pathlib import Path

from .evaluate import METRICS
from .stats import bootstrap_ci, paired_test

METRIC_NAMES = {"av_align": "AV-Align", "hit_100ms": "beat hit ±100 ms", "hit_500ms": "beat hit ±500 ms"}


def summarize(results: dict) -> dict[str, dict[str, dict | None]]:
    """row key -> metric -> Interval dict (None where the row has no such score)."""
    out = {}
    for key, row in results["rows"].items():
        out[key] = {m: (bootstrap_ci(row["scores"][m]).to_dict() if None not in row["scores"][m] else None)
                    for m in METRICS}
    return out


def comparisons(results: dict) -> list[tuple[str, str, str]]:
    """(label, row a, row b) pairs scored on the same clips and noise: CMMD vs nCMMD, gamma vs 1."""
    rows = results["rows"]
    pairs = []
    for mode in ("clean", "replace"):
        control = f"v2a/{mode}/ncmmd"
        for name in ("cmmd-5e-5", "cmmd-1e-2"):
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
        for m in METRICS:
            sa, sb = results["rows"][a]["scores"][m], results["rows"][b]["scores"][m]
            if None in sa or None in sb:
                continue
            out.append({"comparison": label, "metric": m, **paired_test(sa, sb).to_dict()})
    return out


def _cell(ci: dict | None) -> str:
    return "—" if ci is None else f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def markdown(results: dict, summary: dict, tests: list[dict]) -> str:
    n = results["settings"]["clips"]
    lines = [f"| row ({n} held-out clips) | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for key, row in results["rows"].items():
        lines.append(f"| {row['label']} | " + " | ".join(_cell(summary[key][m]) for m in METRICS) + " |")
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
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 0.34 * len(keys) + 1.4), dpi=110,
                             sharey=True)
    colors = {"ceiling": "tab:green", "vocoder": "tab:olive", "floor": "tab:gray", "v2a": "tab:blue",
              "joint": "tab:purple"}
    for ax, m in zip(axes, METRICS):
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
