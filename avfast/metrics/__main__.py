"""python -m avfast.metrics {av-align,beats,fd,kid} ... : metrics over folders of media files.

  av-align DIR                  AV-Align of every .mp4 in DIR (video peaks vs its own audio track)
  beats GEN_DIR REF_DIR         beat hit rate, files paired by name stem (.wav or .mp4 audio)
  fd GEN REF                    Fréchet distance between two folders of .npy embeddings ([D] or
                                [n, D] each) or media files with --extractor
  kid GEN REF                   unbiased polynomial-kernel MMD² (KID/KVD), same inputs as fd
Every command prints a table and, with --json PATH, writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

EXIT_STATUS = """exit status:
  0  every file was scored
  1  some files could not be read or scored: each is named on stderr (one line each), the rest
     are scored and reported, and the JSON lists them under "failed"
  2  bad arguments or inputs (a missing folder, no files to score, none readable, an unwritable
     --json path): one line on stderr, nothing scored"""

AUDIO_EXT = (".wav", ".flac", ".ogg")
VIDEO_EXT = (".mp4",)


class CliError(Exception):
    """Bad arguments or inputs: reported as one line, exit status 2."""


class FileFailures:
    """Files that could not be scored: each reported as one line on stderr as it happens."""

    def __init__(self) -> None:
        self.failed: List[Dict] = []

    def run(self, items, desc: str, name, fn) -> List:
        """fn(item) for every item; an item whose fn raises is reported and left out."""
        out = []
        for item in _progress(items, desc):
            try:
                out.append(fn(item))
            except Exception as exc:  # noqa: BLE001  one unreadable file must not lose the others' results
                message = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
                _report(f"error: {name(item)}: {message} (skipped)")
                self.failed.append({"file": name(item), "error": message})
        if not out:
            raise CliError(f"none of the {len(items)} files could be scored")
        return out


def _report(line: str) -> None:
    from tqdm.auto import tqdm
    tqdm.write(line, file=sys.stderr)  # on its own line, below a progress bar if one is drawn


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


def cmd_beats(args, failures: FileFailures) -> Dict:
    from .beats import beat_hit_rate
    gen = {p.stem: p for p in _files(args.generated, AUDIO_EXT + VIDEO_EXT, "generated")}
    ref = {p.stem: p for p in _files(args.reference, AUDIO_EXT + VIDEO_EXT, "reference")}
    stems = sorted(set(gen) & set(ref))
    if not stems:
        raise CliError(f"no file names in common between {args.generated!r} and {args.reference!r}")

    def score(stem: str) -> Dict:
        r = beat_hit_rate(_load_audio(gen[stem], args.sample_rate), _load_audio(ref[stem], args.sample_rate),
                          args.sample_rate, args.tolerances)
        return {"file": stem, **{f"hit@{int(t * 1000)}ms": v for t, v in r.hit_rates.items()}}

    rows = failures.run(stems, "beats", lambda stem: stem, score)
    cols = [f"hit@{int(t * 1000)}ms" for t in args.tolerances]
    means = {c: float(np.mean([r[c] for r in rows])) for c in cols}
    _print_table(rows + [{"file": "MEAN", **means}], ["file"] + cols)
    return {"metric": "beat_hit_rate", "mean": means, "files": rows, "unpaired": sorted(set(gen) ^ set(ref))}


def _load_npy(p: Path) -> np.ndarray:
    arr = np.load(p, allow_pickle=False)  # never unpickle: .npy only holds plain arrays
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"expected a numeric [D] or [n, D] embedding array, got {arr.dtype} {list(arr.shape)}")
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def _embeddings(folder: str, what: str, args, extractor, failures: FileFailures) -> Dict[str, np.ndarray]:
    """name -> [n, D] frame embeddings for every file in folder."""
    if extractor is None:
        npys = sorted(_folder(folder, what).glob("*.npy"))
        if not npys:
            raise CliError(f"{what} folder {folder!r} holds no .npy embeddings; pass --extractor NAME to "
                           f"embed media files")
        return dict(failures.run(npys, f"load {what}", lambda p: p.name, lambda p: (p.stem, _load_npy(p))))
    from ..data.video import read_video
    exts = AUDIO_EXT + VIDEO_EXT if extractor.modality == "audio" else VIDEO_EXT

    def embed(p: Path):
        clip = _load_audio(p, args.sample_rate) if extractor.modality == "audio" else \
            read_video(p, fps=args.fps, size=args.size).video
        return p.stem, extractor(clip).detach().cpu().double().numpy()

    return dict(failures.run(_files(folder, exts, what), f"embed {what}", lambda p: p.name, embed))


def _set_embeddings(emb: Dict[str, np.ndarray], pool: str) -> np.ndarray:
    arrays = list(emb.values())
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
    g, r = _set_embeddings(gen, args.pool), _set_embeddings(ref, args.pool)
    result: Dict = {"metric": name, "pool": args.pool, "n_generated": len(g), "n_reference": len(r)}
    if name == "frechet_distance":
        result["value"] = frechet_distance(g, r)
    else:
        kd = kernel_distance(g, r, subset_size=args.subset_size, n_subsets=args.subsets, seed=args.seed)
        result.update(value=kd.mean, std=kd.std, subsets=kd.n_subsets, subset_size=kd.subset_size)
    rows = [{"set": "ALL", name: result["value"]}]
    if args.per_sample:
        fn = per_sample_frechet_distance if name == "frechet_distance" else per_sample_kernel_distance
        values = fn(list(gen.values()), r)
        result["per_sample"] = dict(zip(gen.keys(), values))
        rows = [{"set": k, name: v} for k, v in result["per_sample"].items()] + rows
    _print_table(rows, ["set", name])
    return result


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog.split()[-1]}: {message} (see --help)\n")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


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
            d.add_argument("--subset-size", type=_positive(int), default=1000)
            d.add_argument("--subsets", type=_positive(int), default=100)
            d.add_argument("--seed", type=int, default=0)
        common(d)
    return p


def _check_json_target(path: str | None) -> None:
    if path is None:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise CliError(f"--json: folder {str(parent)!r} does not exist")
    if Path(path).is_dir():
        raise CliError(f"--json: {path!r} is a folder; give a file name")


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
    except (CliError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # unknown extractor name: str(KeyError) would quote the message
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    return 1 if failures.failed else 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
