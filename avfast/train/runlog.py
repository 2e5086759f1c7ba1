"""A run's metrics: `<run>/metrics.jsonl` (one JSON object per logged step) and `<run>/loss.png`.

On (re)start the log is cut back to the rows at or before the step the run starts from, so a resumed
run's log reads as one uninterrupted run (rows written after the checkpoint by the killed process are
dropped, a line half-written by a kill too). The cut is written atomically, as is the plot.
"""
from __future__ import annotations

import json
from pathlib import Path

from .._figures import save_figure
from ..models.weights import atomic_write_bytes

METRICS = "metrics.jsonl"


def read_rows(run: Path) -> list[dict]:
    """The complete rows of the log (a trailing partial line from a killed writer is ignored)."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def cut_log(run: Path, start: int) -> None:
    """Keeps the rows with step <= start (start = 0: a fresh run, an empty log)."""
    path = Path(run) / METRICS
    if not path.exists():
        return
    kept = [r for r in read_rows(run) if r["step"] <= start]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def append_row(run: Path, row: dict) -> None:
    with (Path(run) / METRICS).open("a") as f:
        f.write(json.dumps(row) + "\n")


def plot_loss(run: Path) -> None:
    """loss.png: the training loss against the step (log scale; skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [r for r in read_rows(run) if r.get("loss", 0) > 0]  # log axis: the CMMD loss can dip below 0
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(Path(run).name)
    fig.tight_layout()
    save_figure(fig, Path(run) / "loss.png")
