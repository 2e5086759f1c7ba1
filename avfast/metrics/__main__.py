"""python -m avfast.metrics {av-align,beats,fd,kid} ... : metrics over folders of media files.

  av-align DIR                  AV-Align of every .mp4 in DIR (video peaks vs its own audio track)
  beats GEN_DIR REF_DIR         beat hit rate, files paired by name stem (.wav or .mp4 audio); a file
                                with no partner of its name is named on stderr, not scored (exit 1)
  fd GEN REF                    Fréchet distance between two folders of .npy embeddings ([D] or
                                [n, D] each) or media files with --extractor
  kid GEN REF                   unbiased polynomial-kernel MMD² (KID/KVD), same inputs as fd
Every command prints a table and, with --json PATH, writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .._deps import RuntimeUnavailable

PROG = "python -m avfast.metrics"

EXIT_STATUS = """exit status:
  0  every file was scored
  1  some files could not be read or scored: each is named on stderr (one line each), the rest
     are scored and reported, and the JSON lists them under "failed". beats: files with no
     partner of the same name in the other folder are named on stderr (one line for all of
     them), the pairs are scored, and the JSON lists them under "unpaired"
  2  bad arguments or inputs (a missing folder, no files to score, none readable, no pairs,
     .npy files of different embedding sizes, an unwritable --json path): one line on stderr,
     nothing scored"""

AUDIO_EXT = (".wav", ".flac", ".ogg")
VIDEO_EXT = (".mp4",)


class CliError(Exception):
    """Bad arguments or inputs: reported as one line, exit status 2."""


class FileFailures:
    """Files that could not be scored: each reported as one line on stderr as it happens."""

    def __init__(self) -> None:
        self.failed: List[Dict] = []
        self.unpaired: List[str] = []  # beats: files with no partner of their name, not scored

    def run(self, items, desc: str, name, fn) -> List:
        """fn(item) for every item; an item whose fn raises is reported and left out."""
        out = []
        for item in _progress(items, desc):
            try:
                out.append(fn(item))
            except Exception as exc:  # noqa: BLE001  one unreadable file must not lose the others' results
                message = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
                _report(f"{name(item)}: {message} (skipped)")
                self.failed.append({"file": name(item), "error": message})
        if not out:
            raise CliError(f"none of the {len(items)} files could be scored")
        return out


def _report(message: str, kind: str = "error") -> None:
    """`python -m avfast.metrics: <kind>: <message>` on stderr, the form of every line this program reports."""
    from tqdm.auto import tqdm
    text = " ".join(str(message).split()) or kind
    tqdm.write(f"{PROG}: {kind}: {text}", file=sys.stderr)  # on its own line, below a progress bar if one is drawn


def _folder(folder: str, what: str) -> Path:
    path = Path(folder)
    if not path.exists():
        raise CliError(f"{what} folder {folder!r} does not exist")
    if not path.is_dir():
        raise CliError(f"{what} {folder!r} is not a folder")
    return path


def _files(folder: str, exts, what: str = "input") -> List[Path]:
    files = sorted(p for p in _folder(folder, what).iterdir() if p.suffix.lower() in exts)
    if not files:
        raise CliError(f"no {'/'.join(exts)} files in {what} folder {folder!r}")
    return files


def _load_audio(path: Path, sample_rate: int) -> torch.Tensor:
    from ..data.video import load_audio, read_video
    if path.suffix.lower() in VIDEO_EXT:
        clip = read_video(path, size=None, sample_rate=sample_rate)
        if clip.audio is None:
            raise ValueError("has no audio track")
        return clip.audio
    return load_audio(path, sample_rate, resample=True)


def _progress(items, desc):
    from tqdm.auto import tqdm
    # None: no bar when stderr is not a terminal (pipes, logs), where it would garble the error lines
    return tqdm(items, desc=desc, unit="file", leave=False, disable=True if len(items) < 2 else None)


def _print_table(rows: List[Dict], columns: List[str]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for k, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def cmd_av_align(args, failures: FileFailures) -> Dict:
    from ..data.video import read_video
    from .av_align import av_align

    def score(path: Path) -> Dict:
        clip = read_video(path, fps=args.fps, size=args.size, sample_rate=args.sample_rate)
        if clip.audio is None:
            raise ValueError("has no audio track")
        r = av_align(clip.video, clip.audio, args.fps, args.sample_rate, flow_threshold=args.flow_threshold)
        return {"file": path.name, "av_align": r.score, "precision": r.precision, "recall": r.recall,
                "onsets": len(r.audio_onsets), "peaks": len(r.video_peaks)}

    rows = failures.run(_files(args.folder, VIDEO_EXT, "clips"), "av-align", lambda p: p.name, score)
    mean = float(np.mean([r["av_align"] for r in rows]))
    _print_table(rows + [{"file": "MEAN", "av_align": mean}], ["file", "av_align", "precision", "recall",
                                                               "onsets", "peaks"])
    return {"metric": "av_align", "mean": mean, "files": rows}


def _by_stem(folder: str, exts, what: str) -> Dict[str, Path]:
    """name stem -> file, for pairing by name; two files of one stem (x.wav, x.mp4) would make the pair a guess."""
    by_stem: Dict[str, List[Path]] = {}
    for path in _files(folder, exts, what):
        by_stem.setdefault(path.stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            raise CliError(f"{what} folder {folder!r} holds {len(paths)} files named {stem!r} "
                           f"({', '.join(p.name for p in paths)}); files are paired by name stem, so keep one")
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _names(paths: Sequence[Path], most: int = 10) -> str:
    shown = ", ".join(repr(str(p)) for p in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _unpaired(gen: Dict[str, Path], ref: Dict[str, Path], args) -> str:
    """One sentence naming the files of either folder that have no partner of their name in the other."""
    parts = []
    for what, mine, other, folder in (("generated", gen, ref, args.reference),
                                      ("reference", ref, gen, args.generated)):
        lonely = [mine[stem] for stem in sorted(set(mine) - set(other))]
        if lonely:
            parts.append(f"{len(lonely)} {what} file{'s' if len(lonely) > 1 else ''} with no file of the same name "
                         f"in {folder!r}, not scored: {_names(lonely)}")
    return "; ".join(parts)


def cmd_beats(args, failures: FileFailures) -> Dict:
    from .beats import beat_hit_rate
    gen = _by_stem(args.generated, AUDIO_EXT + VIDEO_EXT, "generated")
    ref = _by_stem(args.reference, AUDIO_EXT + VIDEO_EXT, "reference")
    stems = sorted(set(gen) & set(ref))
    if not stems:
        raise CliError(f"no file names in common between {args.generated!r} and {args.reference!r} (files are "
                       f"paired by name stem): {_unpaired(gen, ref, args)}")
    unpaired = _unpaired(gen, ref, args)
    if unpaired:  # scored without them, but not silently: exit status 1 says not everything was scored
        _report(unpaired)
        failures.unpaired = [str(gen[s]) for s in sorted(set(gen) - set(ref))] + \
                            [str(ref[s]) for s in sorted(set(ref) - set(gen))]

    def score(stem: str) -> Dict:
        r = beat_hit_rate(_load_audio(gen[stem], args.sample_rate), _load_audio(ref[stem], args.sample_rate),
                          args.sample_rate, args.tolerances)
        return {"file": stem, **{f"hit@{int(t * 1000)}ms": v for t, v in r.hit_rates.items()}}

    rows = failures.run(stems, "beats", lambda stem: stem, score)
    cols = [f"hit@{int(t * 1000)}ms" for t in args.tolerances]
    means = {c: float(np.mean([r[c] for r in rows])) for c in cols}
    _print_table(rows + [{"file": "MEAN", **means}], ["file"] + cols)
    return {"metric": "beat_hit_rate", "mean": means, "files": rows, "unpaired": failures.unpaired}


NPY_MAGIC = b"\x93NUMPY"


def _load_npy(p: Path) -> np.ndarray:
    """A [D] or [n, D] array of real numbers from a .npy file, as saved; anything else is a ValueError that
    says what the file holds (never numpy's advice to unpickle: this program reads plain arrays only)."""
    with open(p, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise ValueError("is not a numeric .npy array: " + ("the file is empty" if not head else
                                                            "it has no .npy header (numpy.save writes one)"))
    try:
        arr = np.load(p, allow_pickle=False)  # never unpickle: .npy only holds plain arrays
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise ValueError("is not a numeric .npy array: it holds Python objects (an object array)") from None
        raise ValueError(f"is not a readable .npy array: {exc}") from None
    except EOFError as exc:
        raise ValueError(f"is not a readable .npy array: it is cut short ({exc or 'no data'})") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"is not a numeric .npy array: it holds {arr.dtype} values of shape {list(arr.shape)}; "
                         f"expected real numbers")
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise ValueError(f"holds an array of shape {list(arr.shape)}; expected embeddings [D] or [n, D]")
    return _finite(arr)


def _rows(arr: np.ndarray) -> np.ndarray:
    """[D] or [n, D] -> [n, D]."""
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def _finite(arr: np.ndarray) -> np.ndarray:
    bad = int(np.size(arr) - np.isfinite(arr).sum())
    if bad:
        raise ValueError(f"holds {bad} NaN or infinite value{'s' if bad > 1 else ''} (of {arr.size}, shape "
                         f"{list(arr.shape)}); every embedding value must be a finite number")
    return arr


Embedded = Dict[str, Tuple[Path, np.ndarray]]  # name stem -> (file, its [D] or [n, D] embeddings)


def _embeddings(folder: str, what: str, args, extractor, failures: FileFailures) -> Embedded:
    """name -> (file, [D] or [n, D] frame embeddings) for every file in folder."""
    if extractor is None:
        npys = sorted(_folder(folder, what).glob("*.npy"))
        if not npys:
            raise CliError(f"{what} folder {folder!r} holds no .npy embeddings; pass --extractor NAME to "
                           f"embed media files")
        return dict(failures.run(npys, f"load {what}", str, lambda p: (p.stem, (p, _load_npy(p)))))
    from ..data.video import read_video
    exts = AUDIO_EXT + VIDEO_EXT if extractor.modality == "audio" else VIDEO_EXT

    def embed(p: Path):
        clip = _load_audio(p, args.sample_rate) if extractor.modality == "audio" else \
            read_video(p, fps=args.fps, size=args.size).video
        emb = extractor(clip).detach().cpu().double().numpy()
        if emb.ndim not in (1, 2) or emb.size == 0:
            raise ValueError(f"the {args.extractor} extractor gave embeddings of shape {list(emb.shape)}; "
                             f"expected [D] or [n >= 1, D] (is the file too short?)")
        return p.stem, (p, _finite(emb))

    return dict(failures.run(_files(folder, exts, what), f"embed {what}", str, embed))


def _check_sizes(sets: Sequence[Tuple[str, Embedded]], source: str) -> int:
    """The one embedding size D of every file of both sets, or one line naming files of each size."""
    by_size: Dict[int, List[Tuple[Path, Tuple[int, ...]]]] = {}
    for _, emb in sets:
        for path, arr in emb.values():
            by_size.setdefault(arr.shape[-1], []).append((path, arr.shape))
    if len(by_size) == 1:
        return next(iter(by_size))
    parts = []
    for size, files in sorted(by_size.items(), key=lambda kv: -len(kv[1])):
        path, shape = files[0]
        count = f"{len(files)} files, e.g." if len(files) > 1 else "1 file:"
        parts.append(f"D={size} in {count} {str(path)!r} (shape {list(shape)})")
    raise CliError(f"{source} of different embedding sizes: {'; '.join(parts)}; every file must be [D] or [n, D] "
                   f"with the same D")


def _check_rows(label: str, folder: str, rows: int, files: int, pool: str) -> None:
    if rows < 2:
        held = f"{files} readable file{'s' if files != 1 else ''}" if pool == "clips" else \
            f"{rows} embedding row{'s' if rows != 1 else ''} in all"
        raise CliError(f"{label} folder {folder!r} gives {held}: the statistics need at least 2 embeddings per set "
                       f"(--pool clips: one per file; --pool frames: every row of every file)")


def _set_embeddings(emb: Embedded, pool: str) -> np.ndarray:
    arrays = [_rows(arr) for _, arr in emb.values()]
    return np.concatenate(arrays) if pool == "frames" else np.stack([a.mean(0) for a in arrays])


def _distance_command(args, failures: FileFailures, name: str) -> Dict:
    from .frechet import (frechet_distance, kernel_distance, per_sample_frechet_distance,
                          per_sample_kernel_distance)
    extractor = None
    if args.extractor is not None:
        from .embeddings import get_extractor
        options = {"modality": args.modality} if args.extractor == "onnx" else {}
        extractor = get_extractor(args.extractor, args.extractor_path, **options)
    gen = _embeddings(args.generated, "generated", args, extractor, failures)
    ref = _embeddings(args.reference, "reference", args, extractor, failures)
    _check_sizes([("generated", gen), ("reference", ref)],
                 ".npy files" if extractor is None else f"the {args.extractor} extractor gave embeddings")
    g, r = _set_embeddings(gen, args.pool), _set_embeddings(ref, args.pool)
    _check_rows("generated", args.generated, len(g), len(gen), args.pool)
    _check_rows("reference", args.reference, len(r), len(ref), args.pool)
    if args.per_sample:
        short = [(path, arr.shape) for path, arr in gen.values() if _rows(arr).shape[0] < 2]
        if short:
            raise CliError(f"--per-sample: {len(short)} of {len(gen)} generated files hold fewer than 2 embedding "
                           f"rows (e.g. {str(short[0][0])!r}, shape {list(short[0][1])}); a per-sample score needs "
                           f"each file's frames, [n >= 2, D]")
    result: Dict = {"metric": name, "pool": args.pool, "n_generated": len(g), "n_reference": len(r)}
    if name == "frechet_distance":
        result["value"] = frechet_distance(g, r)
    else:
        kd = kernel_distance(g, r, subset_size=args.subset_size, n_subsets=args.subsets, seed=args.seed)
        result.update(value=kd.mean, std=kd.std, subsets=kd.n_subsets, subset_size=kd.subset_size)
    rows = [{"set": "ALL", name: result["value"]}]
    if args.per_sample:
        fn = per_sample_frechet_distance if name == "frechet_distance" else per_sample_kernel_distance
        values = fn([_rows(arr) for _, arr in gen.values()], r)
        result["per_sample"] = dict(zip(gen.keys(), values))
        rows = [{"set": k, name: v} for k, v in result["per_sample"].items()] + rows
    _print_table(rows, ["set", name])
    return result


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like the program's other errors (no usage dump), exit status 2:
    `python -m avfast.metrics: error: argument --seed: ... (see python -m avfast.metrics kid --help)`."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"{PROG}: error: {text} (see {self.prog} --help)\n")


def _number(kind, minimum, inclusive: bool = True):
    """argparse type: a finite `kind` >= minimum (> minimum unless inclusive). It raises ArgumentTypeError, so
    argparse names the option: `argument --seed: must be >= 0, got -1`."""
    bound = f"{'>=' if inclusive else '>'} {minimum}"
    what = {int: "an integer", float: "a number"}[kind]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        if not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} {bound}"
    return parse


def _positive(kind):
    return _number(kind, 0, inclusive=False)


_non_negative_float = _number(float, 0)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m avfast.metrics", description=__doc__, epilog=EXIT_STATUS,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp, size_help: str = "square frame size after centre crop (128)", size: int | None = 128):
        sp.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
        sp.add_argument("--fps", type=_positive(float), default=10.0, help="video frame rate to resample to (10)")
        sp.add_argument("--sample-rate", type=_positive(int), default=16_000,
                        help="audio rate to resample to (16000)")
        sp.add_argument("--size", type=_positive(int), default=size, help=size_help)

    def add(name: str, helptext: str):
        return sub.add_parser(name, help=helptext, epilog=EXIT_STATUS,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    a = add("av-align", "AV-Align IoU (Sony baseline, Eq. 14-15) per mp4")
    a.add_argument("folder")
    a.add_argument("--flow-threshold", type=_non_negative_float, default=0.1,
                   help="min mean flow at a video peak, in pixels per frame (0.1)")
    # Each file at its own size by default, as the demo and Clip.av_align score it: the flow threshold is in
    # pixels, so a resize scales the flow and moves which peaks count (32x32 clips at 128: other scores).
    common(a, "centre-crop to a square and resize to this many pixels (default: each file's own frames, no crop "
              "or resize). AV-Align's flow threshold is in pixels, so resizing changes the scores", None)
    b = add("beats", "beat hit rate of generated vs reference audio (CMMD, 3.1)")
    b.add_argument("generated")
    b.add_argument("reference")
    b.add_argument("--tolerances", type=_positive(float), nargs="+", default=[0.1, 0.5], help="seconds (0.1 0.5)")
    common(b)
    for name, helptext in (("fd", "Fréchet distance (FAD/FVD maths)"), ("kid", "KID/KVD (unbiased MMD²)")):
        d = add(name, helptext)
        d.add_argument("generated")
        d.add_argument("reference")
        d.add_argument("--extractor", help="embed media files with this extractor (logmel, thumbnails, onnx, ...)")
        d.add_argument("--extractor-path", help="local weights for the extractor (e.g. model.onnx)")
        d.add_argument("--modality", choices=["audio", "video"], default="audio", help="for --extractor onnx")
        d.add_argument("--pool", choices=["clips", "frames"], default="clips",
                       help="clips: one embedding per file (mean of its frames, default); frames: every frame")
        d.add_argument("--per-sample", action="store_true", help="also score each generated file against the reference set")
        if name == "kid":
            d.add_argument("--subset-size", type=_number(int, 2), default=1000,
                           help="embeddings per random subset, at least 2 (1000; min(1000, N, M) as the standard)")
            d.add_argument("--subsets", type=_positive(int), default=100, help="random subsets averaged (100)")
            d.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the subset draws, >= 0 (0)")
        common(d)
    return p


def _check_json_target(path: str | None) -> None:
    """--json can be written, checked before any scoring: a folder that exists, a target that is not a folder,
    and a real probe (open the file for append, or make it and remove it again): os.access says yes to root
    where nothing can be made, as in /proc or on read-only mounts. Leaves an existing file as it was."""
    if path is None:
        return
    target = Path(path)
    parent = target.resolve().parent
    if not parent.is_dir():
        raise CliError(f"--json: folder {str(parent)!r} does not exist")
    if target.is_dir():
        raise CliError(f"--json: {path!r} is a folder; give a file name")
    existed = target.exists()
    try:
        with open(target, "ab" if existed else "xb"):
            pass
        if not existed:
            os.unlink(target)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENOENT:  # the folder exists (checked above): its file system makes no new files (/proc)
            why = f"its file system accepts no new files ({why})"
        raise CliError(f"--json: cannot write {path!r}: {why}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"av-align": cmd_av_align, "beats": cmd_beats,
                "fd": lambda a, f: _distance_command(a, f, "frechet_distance"),
                "kid": lambda a, f: _distance_command(a, f, "kernel_distance")}
    failures = FileFailures()
    try:
        _check_json_target(args.json)  # before the work, not after it
        result = commands[args.command](args, failures)
        if args.json:
            result["failed"] = failures.failed
            try:
                Path(args.json).write_text(json.dumps(result, indent=2))
            except OSError as exc:
                raise CliError(f"--json: cannot write {args.json!r}: {exc.strerror or exc}") from None
    except (CliError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            ImportError, RuntimeUnavailable) as exc:  # not every OSError: a closed stdout (| head) is program()'s
        _report(exc)
        return 2
    except KeyError as exc:  # unknown extractor name: str(KeyError) would quote the message
        _report(exc.args[0])
        return 2
    return 1 if failures.failed or failures.unpaired else 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
