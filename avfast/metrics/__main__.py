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

AUDIO_EXT = (".wav", ".flac", ".ogg")
VIDEO_EXT = (".mp4",)


def _files(folder: str, exts) -> List[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise SystemExit(f"error: {folder!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in exts)
    if not files:
        raise SystemExit(f"error: no {'/'.join(exts)} files in {folder!r}")
    return files


def _load_audio(path: Path, sample_rate: int) -> torch.Tensor:
    from ..data.video import load_audio, read_video
    if path.suffix.lower() in VIDEO_EXT:
        clip = read_video(path, size=None, sample_rate=sample_rate)
        if clip.audio is None:
            raise SystemExit(f"error: {path} has no audio track")
        return clip.audio
    return load_audio(path, sample_rate, resample=True)


def _progress(items, desc):
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="file", leave=False, disable=len(items) < 2)


def _print_table(rows: List[Dict], columns: List[str]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for k, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def cmd_av_align(args) -> Dict:
    from ..data.video import read_video
    from .av_align import av_align
    rows = []
    for path in _progress(_files(args.folder, VIDEO_EXT), "av-align"):
        clip = read_video(path, fps=args.fps, size=args.size, sample_rate=args.sample_rate)
        if clip.audio is None:
            raise SystemExit(f"error: {path} has no audio track")
        r = av_align(clip.video, clip.audio, args.fps, args.sample_rate, flow_threshold=args.flow_threshold)
        rows.append({"file": path.name, "av_align": r.score, "precision": r.precision, "recall": r.recall,
                     "onsets": len(r.audio_onsets), "peaks": len(r.video_peaks)})
    mean = float(np.mean([r["av_align"] for r in rows]))
    _print_table(rows + [{"file": "MEAN", "av_align": mean}], ["file", "av_align", "precision", "recall",
                                                               "onsets", "peaks"])
    return {"metric": "av_align", "mean": mean, "files": rows}


def cmd_beats(args) -> Dict:
    from .beats import beat_hit_rate
    gen = {p.stem: p for p in _files(args.generated, AUDIO_EXT + VIDEO_EXT)}
    ref = {p.stem: p for p in _files(args.reference, AUDIO_EXT + VIDEO_EXT)}
    stems = sorted(set(gen) & set(ref))
    if not stems:
        raise SystemExit(f"error: no file names in common between {args.generated!r} and {args.reference!r}")
    rows = []
    for stem in _progress(stems, "beats"):
        r = beat_hit_rate(_load_audio(gen[stem], args.sample_rate), _load_audio(ref[stem], args.sample_rate),
                          args.sample_rate, args.tolerances)
        rows.append({"file": stem, **{f"hit@{int(t * 1000)}ms": v for t, v in r.hit_rates.items()}})
    cols = [f"hit@{int(t * 1000)}ms" for t in args.tolerances]
    means = {c: float(np.mean([r[c] for r in rows])) for c in cols}
    _print_table(rows + [{"file": "MEAN", **means}], ["file"] + cols)
    return {"metric": "beat_hit_rate", "mean": means, "files": rows, "unpaired": sorted(set(gen) ^ set(ref))}


def _embeddings(folder: str, args) -> Dict[str, np.ndarray]:
    """name -> [n, D] frame embeddings for every file in folder."""
    npys = sorted(Path(folder).glob("*.npy")) if Path(folder).is_dir() else []
    if npys and args.extractor is None:
        out = {}
        for p in npys:
            arr = np.load(p, allow_pickle=False)  # never unpickle: .npy only holds plain arrays
            out[p.stem] = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(-1, arr.shape[-1])
        return out
    if args.extractor is None:
        raise SystemExit(f"error: {folder!r} holds no .npy embeddings; pass --extractor NAME "
                         f"to embed media files")
    from .embeddings import get_extractor
    from ..data.video import read_video
    options = {"modality": args.modality} if args.extractor == "onnx" else {}
    extractor = get_extractor(args.extractor, args.extractor_path, **options)
    exts = AUDIO_EXT + VIDEO_EXT if extractor.modality == "audio" else VIDEO_EXT
    out = {}
    for p in _progress(_files(folder, exts), f"embed {Path(folder).name}"):
        if extractor.modality == "audio":
            clip = _load_audio(p, args.sample_rate)
        else:
            clip = read_video(p, fps=args.fps, size=args.size).video
        out[p.stem] = extractor(clip).detach().cpu().double().numpy()
    return out


def _set_embeddings(emb: Dict[str, np.ndarray], pool: str) -> np.ndarray:
    arrays = list(emb.values())
    return np.concatenate(arrays) if pool == "frames" else np.stack([a.mean(0) for a in arrays])


def _distance_command(args, name: str) -> Dict:
    from .frechet import (frechet_distance, kernel_distance, per_sample_frechet_distance,
                          per_sample_kernel_distance)
    gen, ref = _embeddings(args.generated, args), _embeddings(args.reference, args)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m avfast.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
        sp.add_argument("--fps", type=float, default=10.0, help="video frame rate to resample to (10)")
        sp.add_argument("--sample-rate", type=int, default=16_000, help="audio rate to resample to (16000)")
        sp.add_argument("--size", type=int, default=128, help="square frame size after centre crop (128)")

    a = sub.add_parser("av-align", help="AV-Align IoU (seed 002, Eq. 14-15) per mp4")
    a.add_argument("folder")
    a.add_argument("--flow-threshold", type=float, default=0.1, help="min mean flow at a video peak (0.1)")
    common(a)
    b = sub.add_parser("beats", help="beat hit rate of generated vs reference audio (seed 000, 3.1)")
    b.add_argument("generated")
    b.add_argument("reference")
    b.add_argument("--tolerances", type=float, nargs="+", default=[0.1, 0.5], help="seconds (0.1 0.5)")
    common(b)
    for name, helptext in (("fd", "Fréchet distance (FAD/FVD maths)"), ("kid", "KID/KVD (unbiased MMD²)")):
        d = sub.add_parser(name, help=helptext)
        d.add_argument("generated")
        d.add_argument("reference")
        d.add_argument("--extractor", help="embed media files with this extractor (logmel, thumbnails, onnx, ...)")
        d.add_argument("--extractor-path", help="local weights for the extractor (e.g. model.onnx)")
        d.add_argument("--modality", choices=["audio", "video"], default="audio", help="for --extractor onnx")
        d.add_argument("--pool", choices=["clips", "frames"], default="clips",
                       help="clips: one embedding per file (mean of its frames, default); frames: every frame")
        d.add_argument("--per-sample", action="store_true", help="also score each generated file against the reference set")
        if name == "kid":
            d.add_argument("--subset-size", type=int, default=1000)
            d.add_argument("--subsets", type=int, default=100)
            d.add_argument("--seed", type=int, default=0)
        common(d)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"av-align": cmd_av_align, "beats": cmd_beats,
                "fd": lambda a: _distance_command(a, "frechet_distance"),
                "kid": lambda a: _distance_command(a, "kernel_distance")}
    try:
        result = commands[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
