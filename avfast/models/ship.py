"""`python -m avfast.models.ship --student DIR --teacher DIR`: write the package's default model folder.

    avfast/models/default/            the student (config.json records its distilled step count) + autoencoder/
    avfast/models/default/teacher/    the model it was distilled from + autoencoder/

Weights are stored as fp16 (loaded as fp32: `from_pretrained`), the frame codec as trained. Each model
folder carries its own autoencoder/ (a latent model's Pipeline loads it from there). `--out` writes
elsewhere (the default is the package's own folder, which `make default-model` rewrites).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .._cli import Parser
from . import DEFAULT_DIR
from .config import REFINE_PASSES
from .pretrained import from_pretrained
from .weights import save_pretrained


def ship(student: Path, teacher: Path, out: Path = DEFAULT_DIR, joint_refine: tuple[str, ...] = (),
         sampling_gamma: float | None = None, long_window: int = 0) -> list[Path]:
    """Writes the student (its config's `joint_refine` set to `joint_refine`: how its joint clips are sampled
    by default, `sampling_gamma`: the γ its calls sample at by default, and `long_window`: the frames per
    window of its long clips, 0 its own) and the teacher as the default model folder `out`."""
    for name, folder in (("student", student), ("teacher", teacher)):
        if not (Path(folder) / "config.json").is_file() or not (Path(folder) / "autoencoder").is_dir():
            raise ValueError(f"--{name}: {folder} is not a latent model folder (config.json, model.safetensors, "
                             f"autoencoder/)")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    written = []
    for src, dst in ((Path(student), out), (Path(teacher), out / "teacher")):
        m = from_pretrained(src)
        if dst == out:
            m.config = m.config.replace(joint_refine=tuple(joint_refine), sampling_gamma=sampling_gamma,
                                        long_window=long_window)
        save_pretrained(m, dst, state_dict={k: v.half() if v.is_floating_point() else v
                                            for k, v in m.state_dict().items()})
        shutil.copytree(src / "autoencoder", dst / "autoencoder", dirs_exist_ok=True)
        written.append(dst)
    return written


def main(argv=None) -> int:
    ap = Parser(prog="python -m avfast.models.ship", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="the distilled student's folder (e.g. runs/distill/stages/4-steps)")
    ap.add_argument("--teacher", required=True, help="the teacher's folder")
    ap.add_argument("--out", default=str(DEFAULT_DIR), help="default: the package's default model folder")
    ap.add_argument("--joint-refine", nargs="*", default=[], choices=REFINE_PASSES, metavar="TASK",
                    help="the student's joint clips in passes by default: after the joint pass, these conditional "
                         "passes (config joint_refine; the shipped default: v2a)")
    ap.add_argument("--sampling-gamma", type=float, default=None, metavar="GAMMA",
                    help="the timestep adjustment γ the student samples at when a call gives none (config "
                         "sampling_gamma; the shipped default: 0.05, chosen on validation clips, docs/sampling.md)")
    ap.add_argument("--long-window", type=int, default=0, metavar="FRAMES",
                    help="video frames per window of the student's long clips when a call gives none (config "
                         "long_window; 0: its own frames; the shipped default: 36, docs/long-clips.md)")
    args = ap.parse_args(argv)
    try:
        for d in ship(Path(args.student), Path(args.teacher), Path(args.out), tuple(args.joint_refine),
                      args.sampling_gamma, args.long_window):
            print(f"wrote {d}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
