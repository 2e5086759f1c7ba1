"""`python -m avfast.experiments.compare`: quality reports of several settings side by side, one row each.

    python -m avfast.experiments.compare --out bench/results/distill/compare.md \\
        "teacher, 25 steps=bench/results/distill/teacher-25" "student, 4 steps=bench/results/distill/student-4"

Each argument is LABEL=FOLDER, a folder written by `python -m avfast.experiments.quality` (its
quality.json). Every row must score the same held-out clips (same --clips and --data-seed), so the rows
are paired clip by clip; the comparison refuses reports of different clips. Columns: a2v and joint
residual ratio, AV-Align over the real clips' for v2a / a2v / joint, v2a beat hit ±100 / ±500 ms, a2v and
joint FD over the real-vs-real floor, seconds per clip (the three tasks' mean) and its speed-up over
the first row. 95 % bootstrap CIs as in the reports. `--readme FILE` puts the table between FILE's
`<!-- compare:NAME:begin -->` / `<!-- compare:NAME:end -->` markers (NAME from --name).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .._cli import Parser
from .._io import atomic_write_bytes
from .quality import JSON_NAME as RESULTS_NAME, summarize

TASKS = ("v2a", "a2v", "joint")


def _cell(ci: dict | None, fmt: str = ".2f") -> str:
    return "—" if ci is None else f"{ci['mean']:{fmt}} [{ci['low']:{fmt}}, {ci['high']:{fmt}}]"


def _fd_over_floor(fd: dict | None, floor: dict) -> str:
    return "—" if fd is None else f"{fd['mean'] / max(floor['mean'], 1e-12):.1f}x"


def load(folder: Path) -> dict:
    path = Path(folder) / RESULTS_NAME
    if not path.is_file():
        raise ValueError(f"{folder}: no {RESULTS_NAME} (run python -m avfast.experiments.quality --out {folder})")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a quality report ({e})") from None


def table(rows: list[tuple[str, dict]]) -> str:
    """The markdown table of `rows` = [(label, quality results)], the first row the speed reference."""
    if not rows:
        raise ValueError("compare: no rows")
    keys = {(r["settings"]["clips"], r["settings"]["data_seed"]) for _, r in rows}
    if len(keys) > 1:
        raise ValueError(f"compare: the reports score different held-out clips (clips, data seed): {sorted(keys)}")
    head = ("| setting | steps | residual ratio a2v / joint | AV-Align / real: v2a | a2v | joint | "
            "beat hit ±100 / ±500 ms (v2a) | FD / floor a2v / joint | s/clip | speed-up |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    base = None
    for label, r in rows:
        s = summarize(r)
        floor = s["real"]["fd"]
        sec = sum(s[t]["seconds_per_clip"] for t in TASKS) / len(TASKS)
        base = base or sec
        st = r["settings"]
        lines.append(
            f"| {label} | {st['sampler']} {st['steps']}{''.join(' + ' + p for p in st.get('refine') or ())} | "
            f"{_cell(s['a2v']['residual_ratio'])} / "
            f"{_cell(s['joint']['residual_ratio'])} | {_cell(s['v2a']['av_align_ratio'])} | "
            f"{_cell(s['a2v']['av_align_ratio'])} | {_cell(s['joint']['av_align_ratio'])} | "
            f"{_cell(s['v2a']['hit_100ms'])} / {_cell(s['v2a']['hit_500ms'])} | "
            f"{_fd_over_floor(s['a2v']['fd'], floor)} / {_fd_over_floor(s['joint']['fd'], floor)} | "
            f"{sec:.3f} | {base / sec:.1f}x |")
    n, seed = next(iter(keys))
    lines += ["", f"{n} held-out clips (seed {seed}), the same clips and noise in every row; 95 % bootstrap CIs; "
                  f"s/clip is the mean over the three tasks (sampling and decoding), speed-up over the first row."]
    return "\n".join(lines) + "\n"


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- compare:{re.escape(name)}:begin -->\n)(.*?)(<!-- compare:{re.escape(name)}:end -->)",
                      re.S)


def update_file(path: Path, name: str, text: str) -> None:
    content = Path(path).read_text()
    block = _block(name)
    if not block.search(content):
        raise ValueError(f"--readme: {path} has no <!-- compare:{name}:begin --> ... <!-- compare:{name}:end --> block")
    atomic_write_bytes(Path(path), block.sub(lambda m: m.group(1) + text + m.group(3), content).encode())


def block_text(path: Path, name: str) -> str | None:
    m = _block(name).search(Path(path).read_text())
    return None if m is None else m.group(2)


def main(argv=None) -> int:
    ap = Parser(prog="python -m avfast.experiments.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", metavar="LABEL=FOLDER")
    ap.add_argument("--out", help="write the table here (markdown) and LABEL=FOLDER pairs beside it (.json)")
    ap.add_argument("--readme", help="a markdown file with a compare block to fill")
    ap.add_argument("--name", default="distill", help="the compare block's name (default: distill)")
    args = ap.parse_args(argv)
    try:
        pairs = []
        for item in args.rows:
            label, sep, folder = item.rpartition("=")
            if not sep or not label or not folder:
                raise ValueError(f"rows: expected LABEL=FOLDER, got {item!r}")
            pairs.append((label, folder))
        text = table([(label, load(Path(folder))) for label, folder in pairs])
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out, text.encode())
            atomic_write_bytes(out.with_suffix(".json"), (json.dumps({"rows": pairs}, indent=1) + "\n").encode())
        if args.readme:
            update_file(Path(args.readme), args.name, text)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
