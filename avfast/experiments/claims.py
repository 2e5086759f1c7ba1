"""`python -m avfast.experiments.claims`: do the papers' claims hold on the tiny model?

    python -m avfast.experiments.claims train --runs ncmmd cmmd-5e-5      # fine-tunes from the default model
    python -m avfast.experiments.claims evaluate --clips 50               # per-clip JSON, table, plot
    python -m avfast.experiments.claims report                            # table and plot from the JSON again
    python -m avfast.experiments.claims curves                            # the fine-tunes' loss curves

CMMD (seed 000) claims its contrastive loss improves alignment, most for video->audio; Sony (seed 002)
claims timestep adjustment (gamma = 1.5) raises AV-Align. `train` fine-tunes the runs of
`avfast.experiments.finetune.RUNS` from one base model; `evaluate` scores them on held-out clips
(`avfast.experiments.evaluate`) and writes the mean and 95 % bootstrap CI per row and paired tests.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .finetune import RUNS, FinetuneSettings, finetune

DEFAULT_JSON = "bench/results/claims/claims.json"
DEFAULT_PLOT = "docs/claims.png"
DEFAULT_CURVES = "bench/results/claims/finetune.json"
README_BLOCK = re.compile(r"(<!-- claims:begin -->\n)(.*?)(<!-- claims:end -->)", flags=re.S)


def readme_tables(text: str) -> str | None:
    """The tables between the README's claims markers, or None without markers."""
    m = README_BLOCK.search(text)
    return None if m is None else m.group(2)


def update_readme(text: str, table: str) -> str:
    if readme_tables(text) is None:
        raise ValueError("--readme: the file has no <!-- claims:begin --> ... <!-- claims:end --> block")
    return README_BLOCK.sub(lambda m: m.group(1) + table + m.group(3), text)
DEFAULT_CURVES_PLOT = "docs/claims-finetune.png"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m avfast.experiments.claims", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune runs from the base model into <out>/<run>")
    t.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which runs, one after another")
    f = FinetuneSettings()
    for name in ("base", "out", "steps", "batch_size", "lr", "warmup", "num_clips", "seed", "threads", "save_every"):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=type(getattr(f, name)),
                       default=getattr(f, name), help=f"(default: {getattr(f, name)!r})")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("evaluate", help="score every model on held-out clips; JSON, markdown table and plot")
    from .evaluate import EvalSettings

    s = EvalSettings()
    for name in ("base", "runs", "clips", "data_seed", "steps", "sampler", "seed", "batch", "joint_model", "threads"):
        e.add_argument("--" + name.replace("_", "-"), dest=name, type=type(getattr(s, name)),
                       default=getattr(s, name), help=f"(default: {getattr(s, name)!r})")
    e.add_argument("--replace-models", nargs="*", default=list(s.replace_models),
                   help="models also scored with condition_mode='replace'")
    e.add_argument("--gammas", nargs="+", type=float, default=list(s.gammas))
    e.add_argument("--no-progress", action="store_true")
    for p in (e, sub.add_parser("report", help="the table and plot again from an existing JSON")):
        p.add_argument("--json", default=DEFAULT_JSON, help=f"per-clip scores (default: {DEFAULT_JSON})")
        p.add_argument("--plot", default=DEFAULT_PLOT, help=f"figure (default: {DEFAULT_PLOT})")
        p.add_argument("--readme", default=None,
                       help="also put the tables between this file's <!-- claims:begin --> / <!-- claims:end -->")
    c = sub.add_parser("curves", help="the fine-tunes' logged losses: a JSON copy and a plot")
    c.add_argument("--runs", default=FinetuneSettings().out, help="folder of the fine-tunes (default: %(default)s)")
    c.add_argument("--json", default=DEFAULT_CURVES, help="copy of the logs (default: %(default)s)")
    c.add_argument("--plot", default=DEFAULT_CURVES_PLOT, help="figure (default: %(default)s)")
    return ap


def write_curves(runs: Path, json_path: Path, plot_path: Path) -> dict:
    from .evaluate import _write_json
    from .report import collect_curves, plot_curves

    curves = collect_curves(runs)
    if not curves:
        raise FileNotFoundError(f"--runs: no fine-tune logs (<run>/metrics.jsonl) in {runs}")
    _write_json(json_path, curves)
    plot_curves(curves, plot_path)
    return curves


def write_report(results: dict, json_path: Path, plot_path: Path) -> str:
    """Adds the summary and paired tests to the JSON, writes <json>.md and the plot; returns the markdown."""
    from .evaluate import _write_json
    from .report import markdown, paired, plot, summarize

    summary, tests = summarize(results), paired(results)
    results |= {"summary": summary, "paired": tests}
    _write_json(json_path, results)
    table = markdown(results, summary, tests)
    json_path.with_suffix(".md").write_text(table)
    plot(results, summary, plot_path)
    return table


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            settings = FinetuneSettings(args.base, args.out, args.steps, args.batch_size, args.lr, args.warmup,
                                        args.num_clips, args.seed, args.threads, args.save_every,
                                        not args.no_progress)
            for name in args.runs:
                finetune(name, settings)
                print(f"{name}: EMA weights in {Path(settings.out) / name / 'final'}")
            return 0
        json_path, plot_path = Path(args.json), Path(args.plot)
        if args.command == "curves":
            curves = write_curves(Path(args.runs), json_path, plot_path)
            print(f"{', '.join(curves)}: logs in {json_path}, plot {plot_path}")
            return 0
        if args.command == "evaluate":
            from .evaluate import EvalSettings, run_evaluation

            settings = EvalSettings(args.base, args.runs, args.clips, args.data_seed, args.steps, args.sampler,
                                    args.seed, args.batch, tuple(args.replace_models), args.joint_model,
                                    tuple(args.gammas), args.threads, not args.no_progress)
            results = run_evaluation(settings, json_path)
        else:
            if not json_path.is_file():
                raise FileNotFoundError(f"--json: no results at {json_path}; run `evaluate` first")
            results = json.loads(json_path.read_text())
        table = write_report(results, json_path, plot_path)
        print(table, end="")
        if args.readme:
            readme = Path(args.readme)
            readme.write_text(update_readme(readme.read_text(), table))
            print(f"{readme}: claims tables regenerated")
        print(f"per-clip scores: {json_path}; table: {json_path.with_suffix('.md')}; plot: {plot_path}")
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"{build_parser().prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from avfast.heap import keep_large_allocations_on_the_heap

    keep_large_allocations_on_the_heap()  # a program, not a library call: see avfast/heap.py
    sys.exit(main())
