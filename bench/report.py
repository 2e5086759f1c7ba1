"""Performance tables of README.md and docs/*.md from a results JSON: `python -m bench.report [--check]`.

Every block between `<!-- bench:begin NAME -->` and `<!-- bench:end -->` in the documentation files
(README.md and docs/*.md, `avfast._io.DOC_FILES`, scanned for the markers; or only the files given
with `--docs`) is replaced by the table NAME generated from the results file (bench/results/cpu.json
by default), so the documented numbers cannot drift from the committed results: a test regenerates
the blocks of every page and requires them equal to the page. A block can move to another page (or
appear on two) without any change here. NAME is `machine`, `denoiser_targets` (cross-dtype ratios of
the denoiser rows), `gpu` (every bench/results/gpu-*.json that `python -m bench.gpu_check` wrote,
rendered by render_gpu, the text of its gpu-*.md) or one of SECTIONS; `NAME@STEM` renders NAME from
`bench/results/STEM.json` instead (another machine's run of some suites, kept apart because its figures
are not comparable with the main file's). `--check` changes nothing
and exits 1 when a block of any file differs.

`--merge RUN.json` first folds a run of some suites (a results JSON that `AVFAST_BENCH_SUMMARY=PREFIX pytest
bench/FILE.py --benchmark-only` wrote) into the results file: its rows replace every row of the same bench
files, the rest stay, and the run (time, command, machine threads, state, warnings) is kept under `runs`;
the `machine` block names each merged run, and its rows say which run they come from (`run`).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from avfast._io import doc_files
from bench._summary import describe_limits, describe_machine, describe_state, fmt_mb, fmt_ms, fmt_pct

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "bench" / "results" / "cpu.json"
DEFAULT_README = ROOT / "README.md"  # the front door; the other tables live in docs/ (docs/benchmarks.md)
# NAME@STEM blocks render from STEM.json here; `python -m bench.gpu_check` writes gpu-<name>.json here
RESULTS_DIR = ROOT / "bench" / "results"
BLOCK = re.compile(r"(<!-- bench:begin (\S+) -->\n)(.*?)(<!-- bench:end -->)", flags=re.S)


def _case_prefix(prefix: str) -> Callable[[dict], bool]:
    return lambda row: row["case"].startswith(prefix)


MAX_WIDE_BACKENDS = 3  # more backends than this: one table line per row instead of per case
# README block name -> which rows it tabulates.
SECTIONS: dict[str, Callable[[dict], bool]] = {
    "easy_fusion": _case_prefix("easy_fusion"),
    "attention": _case_prefix("attention"),
    "contrastive_loss": _case_prefix("contrastive_loss"),
    "denoiser": _case_prefix("denoiser"),
    "train_step": _case_prefix("train step"),
    "runtimes": _case_prefix("ms/FE"),
}
PER_CLIP = "per clip "  # bench/bench_per_clip.py: rendered by _per_clip, not _table


def _ms_cell(row: dict | None) -> str:
    if row is None or row["median_ms"] is None:
        return "—"
    return f"{fmt_ms(row['median_ms'])} ±{row['spread']:.0%}{' *' if row.get('busy') else ''}"


def _speedup_cell(row: dict | None) -> str:
    if row is None or row["speedup"] is None or row["speedup_spread"] is None:
        return "—"
    return f"{row['speedup']:.2f} ±{row['speedup_spread']:.0%}"


def _long_table(rows: list[dict]) -> str:
    """One line per row: for sections with many backends (runtimes), where one line per case would not fit."""
    lines = ["| case | backend | dtype | ms | × baseline | GFLOP | % of limit | peak MB |", "|" + "---|" * 8]
    for r in rows:
        limit = "—" if r["limit_fraction"] is None else f"{fmt_pct(r['limit_fraction'])} ({r['limit_kind']})"
        speed = "baseline" if r["baseline"] else _speedup_cell(r)
        gflop = f"{r['flops'] / 1e9:.3g}" if r["flops"] else "—"
        lines.append(f"| {r['case']} | {r['backend']} | {r['dtype']} | {_ms_cell(r)} | {speed} | {gflop} | {limit} | "
                     f"{fmt_mb(r['peak_mb'])} |")
    return "\n".join(lines)


def _table(rows: list[dict]) -> str:
    """One line per case: ms ± spread per backend, speedups over the baseline, fraction of limit, peak memory."""
    cases: dict[str, list[dict]] = {}
    for row in rows:
        cases.setdefault(row["case"], []).append(row)
    baselines = {r["backend"] for r in rows if r["baseline"]}
    backends = list(dict.fromkeys(r["backend"] for r in rows if r["backend"] not in baselines))
    backends += sorted(baselines)
    if len(backends) > MAX_WIDE_BACKENDS:
        return _long_table(rows)
    compared = [b for b in backends if b not in baselines]
    flops = any(r["flops"] for r in rows)
    head = (["case", "dtype"] + [f"{b} ms" for b in backends] + [f"{b} ×" for b in compared]
            + (["GFLOP"] if flops else []) + [f"% of limit ({' / '.join(backends)})", f"peak MB ({' / '.join(backends)})"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, case_rows in cases.items():
        by = {r["backend"]: r for r in case_rows}
        kinds = [r["limit_kind"] for r in case_rows if r["limit_kind"]]
        limit = " / ".join(fmt_pct(by[b]["limit_fraction"]) if b in by else "—" for b in backends)
        cells = ([case, ", ".join(dict.fromkeys(r["dtype"] for r in case_rows))] + [_ms_cell(by.get(b)) for b in backends]
                 + [_speedup_cell(by.get(b)) for b in compared]
                 + ([f"{max(r['flops'] or 0 for r in case_rows) / 1e9:.3g}"] if flops else [])
                 + [f"{limit} ({kinds[0]})" if kinds else limit,
                    " / ".join(fmt_mb(by[b]["peak_mb"]) if b in by else "—" for b in backends)])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine(results: dict) -> str:
    state, machine = results["state"], results["machine"]
    timed = [r for r in results["rows"] if r["median_ms"] is not None]
    noisy = sum(r["noisy"] for r in timed)
    busy = sum(bool(r.get("busy")) for r in timed)
    lines = [f"- Machine: {describe_machine(machine)}{', no GPU used' if machine.get('device') == 'cpu' else ''}.",
             f"- Measured {describe_limits(results['limits'])}.",
             f"- State: {describe_state(state.get('start'), state.get('end'))}.",
             f"- {len(timed)} timed rows, {noisy} with a spread above {results['noise_bound']:.0%}, {busy} run while "
             f"the machine was busy (marked *); "
             f"run {results['created']}: `{results['command']}`."]
    lines += [f"- Warning at the time: {w}." for w in results.get("warnings", [])]
    for run in results.get("runs", []):
        files = ", ".join(f"`{f}`" for f in run["files"])
        lines.append(f"- Rerun {run['created']} of {files} ({run['rows']} rows, merged with `python -m bench.report "
                     f"--merge`; {run['machine'].get('threads')} threads): `{run['command']}`. State: "
                     f"{describe_state((run.get('state') or {}).get('start'), (run.get('state') or {}).get('end'))}.")
        lines += [f"- Warning at the rerun: {w}." for w in run.get("warnings", [])]
    return "\n".join(lines)


def _file(row: dict) -> str:
    return row["nodeid"].split("::", 1)[0]


def merge(results: dict, run: dict) -> dict:
    """`results` with the rows of `run`'s bench files replaced by `run`'s rows (which carry `run`: its time),
    and the run recorded under `runs` (an earlier merge of the same files is dropped)."""
    files = sorted({_file(r) for r in run["rows"]})
    if not files:
        raise ValueError("merge: the run has no rows")
    if run["machine"].get("device") != results["machine"].get("device"):
        raise ValueError(f"merge: the run is on {run['machine'].get('device')}, the results on "
                         f"{results['machine'].get('device')}")
    # Another machine's rows are not comparable: they go to their own file (NAME@STEM). The CPU's family and
    # model are compared where both sides recorded them (files from before have only the name).
    keys = ["cpu", "gpu"] + (["cpu_id"] if run["machine"].get("cpu_id") and results["machine"].get("cpu_id") else [])
    for key in keys:
        if run["machine"].get(key) != results["machine"].get(key):
            raise ValueError(f"merge: the run is on {key} {run['machine'].get(key)!r}, the results on "
                             f"{results['machine'].get(key)!r}; keep another machine's run in its own results "
                             f"file and render it with NAME@STEM blocks")
    merged = dict(results)
    kept = [r for r in results["rows"] if _file(r) not in files]
    merged["rows"] = kept + [{**r, "run": run["created"]} for r in run["rows"]]
    runs = [r for r in results.get("runs", []) if not set(r["files"]) <= set(files)]
    runs.append({"created": run["created"], "command": run["command"], "files": files, "rows": len(run["rows"]),
                 "machine": run["machine"], "limits": run["limits"], "state": run["state"],
                 "warnings": run.get("warnings", [])})
    merged["runs"] = runs
    return merged


def _ratio(slow: dict | None, fast: dict | None) -> str:
    """slow / fast with both spreads in quadrature, `*` when either ran while the machine was busy."""
    if not slow or not fast or not slow["median_ms"] or not fast["median_ms"]:
        return "—"
    spread = (slow["spread"] ** 2 + fast["spread"] ** 2) ** 0.5
    busy = " *" if slow.get("busy") or fast.get("busy") else ""
    return f"{slow['median_ms'] / fast['median_ms']:.2f}× ±{spread:.0%}{busy}"


DENOISER = "denoiser fwd "


def _denoiser_targets(results: dict) -> str:
    """Per model: fused over reference in each dtype, and fused bf16 over reference fp32 (issue 9's targets),
    ratios across the dtype cases of one run that the per-case table cannot show."""
    rows = [r for r in results["rows"] if r["case"].startswith(DENOISER)]
    if not rows:
        return "(no denoiser results in the committed results file)"
    by = {(r["case"], r["backend"]): r for r in rows}
    lines = ["| model | fused × reference, fp32 | fused × reference, bf16 | fused bf16 × reference fp32 |",
             "|---|---|---|---|"]
    for model in dict.fromkeys(r["case"].rsplit(" ", 1)[0] for r in rows):
        fused = {dt: by.get((f"{model} {dt}", "fused")) for dt in ("fp32", "bf16")}
        reference = {dt: by.get((f"{model} {dt}", "reference")) for dt in ("fp32", "bf16")}
        lines.append(f"| {model.removeprefix(DENOISER)} | {_ratio(reference['fp32'], fused['fp32'])} | "
                     f"{_ratio(reference['bf16'], fused['bf16'])} | {_ratio(reference['fp32'], fused['bf16'])} |")
    return "\n".join(lines)


PER_CLIP_BLOCKS = {"per_clip": ("joint", "joint+v2a", "v2a"), "per_clip_joint": ("joint", "joint+v2a")}


def _per_clip(results: dict, tasks: tuple[str, ...]) -> str:
    """Seconds per clip (bench/bench_per_clip.py): the whole Pipeline call and its sampling part, the denoiser
    evaluations, and how many times faster than MM-Diffusion's quoted seconds per clip (not measured here)."""
    rows = [r for r in results["rows"] if r["case"].startswith(PER_CLIP) and r.get("task") in tasks
            and r["median_ms"] is not None]
    if not rows:
        return "(no per-clip results in the committed results file)"
    mm = {(r["mm_diffusion_s"], r["mm_diffusion_steps"]) for r in rows}
    mm_s, mm_steps = sorted(mm)[0]
    # the distilled default against its teacher at 25 steps, same run, same task and dtype (issue 20's >= 5x)
    teacher = {(r["task"], r["dtype"]): r["median_ms"] for r in rows if r["model"] == "tiny-latent teacher"}
    head = ["model", "task", "dtype", "steps", "FEs", "s/clip", "sampling s", "decode s",
            "× faster than the teacher (25 steps, same run)", f"× faster than MM-Diffusion ({mm_s:g} s, quoted)"]
    def vs_teacher(r: dict) -> str:
        t = teacher.get((r["task"].split("+")[0], r["dtype"]))  # a joint clip in passes against the teacher's joint
        return f"{t / r['median_ms']:.1f}×" if t and r["model"] == "tiny-latent" else "—"

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["median_ms"] / 1e3
        busy = " *" if r.get("busy") else ""
        fmt = (lambda x: "—" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}")
        lines.append(f"| {r['model']} | {r['task']} | {r['dtype']} | {r['steps']} {r['sampler'].upper()} | "
                     f"{r.get('evaluations', '—')} | {fmt(s)} ±{r['spread']:.0%}{busy} | {fmt(r.get('sampling_s'))} | "
                     f"{fmt(r.get('decode_s'))} | {vs_teacher(r)} | {f'{mm_s / s:.0f}×' if r['task'].startswith('joint') else '—'} |")
    return "\n".join(lines)


GPU_SECTIONS = {"attention": "Attention", "easy_fusion": "Easy fusion", "contrastive_loss": "Contrastive loss",
                "denoiser": "Denoiser", "runtimes": "ms per function evaluation, per runtime"}


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render_gpu(check: dict, heading: str = "###") -> str:
    """A `python -m bench.gpu_check` results document as markdown: the build, one line per stage, the tables
    of its benchmark rows, and the output tail of each failed stage."""
    gpu, build = check["gpu"], check.get("build") or {}
    kernels = f"built for sm_{build.get('cuda_archs')}" if build.get("cuda_kernels_compiled") else "not loaded"
    lines = [f"{heading} {gpu['name']} (compute capability {gpu['capability']})", "",
             f"- torch {gpu['torch']}, CUDA {gpu['cuda']}; avfast CUDA kernels: "
             f"{kernels}; "
             f"Triton: {build.get('triton_version') or 'not importable'}." if build else
             f"- torch {gpu['torch']}, CUDA {gpu['cuda']} (no build info: the info stage did not finish).",
             f"- Run {check['created']} at commit {check.get('commit') or 'unknown'}: `{check['command']}`, "
             f"{check['wall_s']:.0f} s of a {check['budget_s']:.0f} s budget"
             f"{'' if check.get('finished', True) else ' (interrupted: the stages below are those it finished)'}."]
    for later in check.get("runs", [])[1:]:  # a --stages rerun merged in: its stages are marked with its time
        lines.append(f"- Rerun {later['created']} at commit {later.get('commit') or 'unknown'}: `{later['command']}`; "
                     f"the stages it ran replace the first run's (marked ²).")
    lines += ["", "| stage | status | s | result |", "|---|---|---|---|"]
    first = check.get("runs", [{}])[0].get("created")
    for s in check["stages"]:
        mark = "²" if first and s.get("run", first) != first else ""
        lines.append(f"| {s['name']}{mark} | {s['status']} | {s['seconds']:.0f} | {_one_line(s['reason'])} |")
    bench = check.get("bench")
    if bench and bench.get("rows"):
        lines += ["", _machine(bench)]
        for name, title in GPU_SECTIONS.items():
            rows = [r for r in bench["rows"] if SECTIONS[name](r)]
            if rows:
                lines += ["", f"**{title}**", "", _table(rows)]
    failed = [s for s in check["stages"] if s["status"] == "failed" and s.get("tail")]
    for s in failed:
        tail = "\n".join(s["tail"].rstrip().splitlines()[-25:])
        lines += ["", f"<details><summary>{s['name']}: output tail</summary>", "", "```", tail, "```", "", "</details>"]
    return "\n".join(lines)


def gpu_results(directory: Path = RESULTS_DIR) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(directory).glob("gpu-*.json"))]


def _gpu_block() -> str:
    checks = gpu_results()
    if not checks:
        return ("(no GPU results committed yet: `make gpu-check` on a machine with an NVIDIA GPU writes "
                "bench/results/gpu-<name>.json, then `python -m bench.report`)")
    return "\n\n".join(render_gpu(c, heading="####") for c in checks)


def render_block(name: str, results: dict) -> str:
    if name == "gpu":
        return _gpu_block()
    if name == "machine":
        return _machine(results)
    if name == "denoiser_targets":
        return _denoiser_targets(results)
    if name in PER_CLIP_BLOCKS:
        return _per_clip(results, PER_CLIP_BLOCKS[name])
    if name not in SECTIONS:
        raise ValueError(f"render_block: unknown README block {name!r}; expected 'machine', 'denoiser_targets', 'gpu', "
                     f"{', '.join(PER_CLIP_BLOCKS)} "
                         f"or one of "
                         f"{', '.join(SECTIONS)}")
    rows = [r for r in results["rows"] if SECTIONS[name](r)]
    return _table(rows) if rows else "(no results for this section in the committed results file)"


def other_results(stem: str) -> dict:
    """The results file `bench/results/<stem>.json` that a `NAME@<stem>` block renders from: a second
    machine's suite, kept apart from the main results because its figures are not comparable with them."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stem):
        raise ValueError(f"bench block: expected NAME@<results file stem> (letters, digits, . _ -), got @{stem!r}")
    path = RESULTS_DIR / f"{stem}.json"
    if not path.is_file():
        raise ValueError(f"bench block @{stem}: no results file {path}; `AVFAST_BENCH_SUMMARY=bench/results/{stem} "
                         f"pytest bench/FILE.py --benchmark-only` writes one")
    return json.loads(path.read_text())


def update_readme(text: str, results: dict) -> str:
    """`text` with every bench block regenerated from `results`; a block named `NAME@STEM` from
    `bench/results/STEM.json` instead (another machine's run)."""
    def block(m: re.Match) -> str:
        name, _, stem = m.group(2).partition("@")
        return f"{m.group(1)}{render_block(name, other_results(stem) if stem else results)}\n{m.group(4)}"

    return BLOCK.sub(block, text)


def block_names(text: str) -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(text)]


def files_with_blocks(files: list[Path] | None = None) -> list[Path]:
    """The files (README.md and docs/*.md by default) that hold at least one bench block."""
    return [p for p in (doc_files(ROOT) if files is None else files) if block_names(p.read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(DEFAULT_RESULTS))
    parser.add_argument("--docs", "--readme", dest="docs", nargs="+", default=None, metavar="FILE",
                        help="only these markdown files (default: every one of README.md and docs/*.md with "
                             "bench blocks)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a file is out of date")
    parser.add_argument("--merge", metavar="RUN.json", default=None,
                        help="first replace the rows of RUN.json's bench files in the results file by its rows")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    if args.merge:
        if args.check:
            parser.error("--merge writes the results file; it cannot go with --check")
        results = merge(results, json.loads(Path(args.merge).read_text()))
        Path(args.results).write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"{args.results}: merged the rows of {', '.join(results['runs'][-1]['files'])} from {args.merge}")
    given = None if args.docs is None else [Path(f) for f in args.docs]
    files = files_with_blocks(given)
    if given is not None:
        for path in given:
            if path not in files:
                print(f"{path}: no <!-- bench:begin NAME --> blocks", file=sys.stderr)
                return 1
    if not files:
        print(f"{ROOT}: no <!-- bench:begin NAME --> blocks in README.md or docs/*.md", file=sys.stderr)
        return 1
    stale = []
    for path in files:
        text = path.read_text()
        new = update_readme(text, results)
        if args.check:
            if new != text:
                stale.append(path)
            continue
        path.write_text(new)
        print(f"{path}: regenerated {', '.join(block_names(text))} from {args.results}")
    if stale:
        for path in stale:
            print(f"{path}: performance tables differ from {args.results}; run python -m bench.report",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
