"""`python -m avfast.experiments.claims`: do the papers' claims hold on the tiny model?

    python -m avfast.experiments.claims train --runs ncmmd cmmd-5e-5      # fine-tunes from the default model
    python -m avfast.experiments.claims evaluate --clips 50               # per-clip JSON, table, plot
    python -m avfast.experiments.claims report                            # table and plot from the JSON again
    python -m avfast.experiments.claims curves                            # the fine-tunes' loss curves

CMMD ("Contrastive Multi-Modal Diffusion for Video-Audio Conditional Modeling") claims its contrastive
loss improves alignment, most for video->audio; Sony's baseline ("A Simple but Strong Baseline for Sounding
Video Generation": MM-Diffusion with timestep adjustment and CMC-PE) claims timestep adjustment
(gamma = 1.5) raises AV-Align. `train` fine-tunes the runs of `avfast.experiments.finetune.RUNS` from one
base model; `evaluate` scores them on held-out clips
(`avfast.experiments.evaluate`) and writes the mean and 95 % bootstrap CI per row and paired tests.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .._cli import Parser
from .._io import block_targets
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


def doc_targets(readme: str | None, docs: bool, root: str | Path = ".") -> list[Path]:
    """The files the tables go into: `--readme FILE` and, with `--docs`, every file of README.md and docs/*.md
    under `root` that holds the claims markers (avfast._io.block_targets)."""
    return block_targets(README_BLOCK, "<!-- claims:begin --> ... <!-- claims:end -->", readme, docs, root)


DEFAULT_CURVES_PLOT = "docs/claims-finetune.png"


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m avfast.experiments.claims", description=__doc__,
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
        p.add_argument("--docs", action="store_true",
                       help="also put them into every file of README.md and docs/*.md (under the current folder) "
                            "that holds those markers (docs/claims.md)")
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
    """Adds the summary and paired tests to the JSON, writes <json>.md and the plot; returns the markdown.
    Each file is written atomically (a failure leaves no temporary file behind)."""
    from .._io import atomic_write_bytes
    from .report import markdown, paired, plot, summarize

    summary, tests = summarize(results), paired(results)
    results |= {"summary": summary, "paired": tests}
    table = markdown(results, summary, tests)
    plot(results, summary, plot_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(json_path.with_suffix(".md"), table.encode())
    atomic_write_bytes(json_path, (json.dumps(results, indent=1) + "\n").encode())
    return table


def read_results(json_path: Path) -> dict:
    """The claims results `evaluate` wrote; a ValueError naming the file says what is wrong with it."""
    if json_path.is_dir():
        raise ValueError(f"--json: {json_path} is a folder; give the results file evaluate wrote")
    if not json_path.is_file():
        raise FileNotFoundError(f"--json: no results at {json_path}; run `evaluate` first")
    try:
        results = json.loads(json_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"--json: {json_path} is not a text file (not UTF-8 JSON)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--json: {json_path} is not valid JSON ({e})") from None
    rows = results.get("rows") if isinstance(results, dict) else None
    if not isinstance(rows, dict) or not rows or not isinstance(results.get("settings"), dict) or not all(
            isinstance(r, dict) and "scores" in r and "kind" in r and "label" in r for r in rows.values()):
        raise ValueError(f"--json: {json_path} holds no claims results (expected 'settings' and 'rows' of scored "
                         f"rows, as `evaluate` writes them)")
    return results


def _check_outputs(json_path: Path, plot_path: Path) -> None:
    for flag, path in (("--json", json_path), ("--plot", plot_path)):
        if path.is_dir():
            raise ValueError(f"{flag}: {path} is a folder; give a file path")
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise ValueError(f"{flag}: {path} cannot be written ({parent} is a file, not a folder)")


def _check_evaluate(args) -> None:
    """What `evaluate` would refuse or silently drop after minutes of work, refused before any (issue 21):
    the sampler and its numbers, and a model named for the γ or replacement rows that is not trained yet
    (its rows would be missing from the results with exit 0)."""
    import math

    from ..diffusion.solvers import SAMPLERS
    from .evaluate import EvalSettings, model_dirs

    if args.sampler not in SAMPLERS:
        raise ValueError(f"--sampler: {args.sampler!r} is not a sampler; expected one of {', '.join(SAMPLERS)}")
    if not 1 <= args.steps <= 1000:
        raise ValueError(f"--steps must be in 1..1000, got {args.steps}")
    if any(not math.isfinite(g) or g <= 0 for g in args.gammas):
        raise ValueError(f"--gammas must be finite numbers > 0, got {' '.join(map(str, args.gammas))}")
    for name in ("seed", "threads"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.data_seed == 0:
        raise ValueError("--data-seed 0 made the training clips; use a held-out seed (e.g. 2)")
    base = Path(args.base)
    if not (base / "config.json").is_file():
        raise ValueError(f"--base: {args.base!r} is not a model folder (config.json + weights)")
    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        raise ValueError(f"--runs: {args.runs!r} is a file; give the folder of the fine-tunes")
    trained = model_dirs(EvalSettings(base=args.base, runs=args.runs, clips=max(args.clips, 2),
                                      data_seed=args.data_seed or 2))
    for flag, names in (("--joint-model", [args.joint_model]), ("--replace-models", args.replace_models)):
        untrained = [n for n in names if n not in trained]
        if untrained:
            raise ValueError(f"{flag}: {', '.join(map(repr, untrained))} not trained yet (no {args.runs}/<name>/final/"
                             f"config.json); train it first (`python -m avfast.experiments.claims train --runs "
                             f"{' '.join(untrained)}`) or name a trained model ({', '.join(trained)})")


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
        _check_outputs(json_path, plot_path)
        targets = doc_targets(args.readme, args.docs)  # a file without the markers: one line before any work
        if args.command == "evaluate":
            from .evaluate import EvalSettings, run_evaluation

            known = ("base", *RUNS)
            for flag, names in (("--joint-model", [args.joint_model]), ("--replace-models", args.replace_models)):
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise ValueError(f"{flag}: unknown model(s) {', '.join(map(repr, unknown))}; expected names from "
                                     f"{', '.join(known)}")
            _check_evaluate(args)

            settings = EvalSettings(args.base, args.runs, args.clips, args.data_seed, args.steps, args.sampler,
                                    args.seed, args.batch, tuple(args.replace_models), args.joint_model,
                                    tuple(args.gammas), args.threads, not args.no_progress)
            results = run_evaluation(settings, json_path)
        else:
            results = read_results(json_path)
        table = write_report(results, json_path, plot_path)
        print(table, end="")
        for readme in targets:
            readme.write_text(update_readme(readme.read_text(), table))
            print(f"{readme}: claims tables regenerated")
        print(f"per-clip scores: {json_path}; table: {json_path.with_suffix('.md')}; plot: {plot_path}")
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"{build_parser().prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{build_parser().prog}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
