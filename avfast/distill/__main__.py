"""`python -m avfast.distill`: distil a teacher into a few-step student (progressive distillation).

    python -m avfast.distill --teacher DIR --out runs/distill --steps 4 --start-steps 16 --stage-steps 400 400

Every DistillConfig field is a flag; `--config FILE` (JSON or YAML) gives defaults that flags override.
Under `torchrun --nproc_per_node N` the same command runs with DistributedDataParallel. A run resumes
from <out>/checkpoints/latest (exactly: the resumed run takes the uninterrupted run's steps) unless
--no-resume; a changed option is refused unless --allow-option-changes. The student of every stage is
written to <out>/stages/<N>-steps/, the last one also to <out>/final/.
Exit status: 0 done, 1 stopped on a non-finite loss, 2 bad options, teacher or data.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .._cli import Parser
from .config import DistillConfig

PROG = "python -m avfast.distill"
# Options a resumed run may change: they do not alter what the steps compute.
RESUMABLE_CHANGES = {"out", "stop_at", "save_every", "keep", "log_every", "resume", "device", "threads", "progress", "cache_dir"}


def build_parser() -> argparse.ArgumentParser:
    from ..train.__main__ import add_config_arguments

    ap = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON or YAML file of options (flags override it)")
    add_config_arguments(ap, DistillConfig)
    ap.add_argument("--allow-option-changes", action="store_true",
                    help="resume even where an option differs from the run's checkpoint")
    return ap


def preflight(dcfg: DistillConfig, allow_changes: bool) -> None:
    """The device, the run folder, a resume's options, the teacher and the memory, before any work."""
    from .. import models
    from .._memory import check_fits
    from ..models.memory import model_peak_bytes
    from ..train.checkpoint import latest_checkpoint, readable_state
    from ..train.loop import resolve_device
    from .run import autoencoder_for, check_teacher, teacher_folder, train_config

    folder = teacher_folder(dcfg.teacher)
    config = models.ModelConfig.from_json(folder / "config.json")
    check_teacher(dcfg, config)
    tcfg = train_config(dcfg, autoencoder_for(dcfg, config, folder))
    device = resolve_device(tcfg)
    run = Path(dcfg.out)
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out: {run} is a file, not a run folder")
    parent = next((p for p in (run, *run.parents) if p.exists()), Path("."))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".avfast-write-probe-", dir=parent))
    except OSError as e:
        raise ValueError(f"--out: {run} cannot be written ({parent}: {e.strerror or e})") from None
    ck = latest_checkpoint(run) if dcfg.resume and run.is_dir() else None
    if ck is not None and not allow_changes:
        old = (readable_state(ck) or {}).get("distill_config")
        if old is None:
            raise ValueError(f"--out: {run} holds a run that is not a distillation ({ck.name}); use another --out")
        new = dcfg.to_dict()
        for name in new:
            if name in RESUMABLE_CHANGES or name not in old or old[name] == new[name]:
                continue
            raise ValueError(f"--{name.replace('_', '-')} is {new[name]!r} but the run in {run} ({ck.name}) was "
                             f"distilled with {old[name]!r}; resuming would not repeat the uninterrupted run (pass "
                             f"--allow-option-changes to continue anyway, or --no-resume / another --out)")
    # student (training) + teacher (two no-grad calls on the same batch)
    need = model_peak_bytes(config, dcfg.batch_size, training=True) + model_peak_bytes(config, dcfg.batch_size)
    check_fits(f"distilling the teacher ({config.frames} frames, {config.audio_length} mel steps) at batch "
               f"{dcfg.batch_size}", need, device)


def main(argv=None) -> int:
    from ..train.__main__ import read_options

    args = build_parser().parse_args(argv)
    try:
        dcfg = read_options(args, DistillConfig)
        preflight(dcfg, args.allow_option_changes)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    from ..train.folder import DataError
    from ..train.loop import NonFiniteLoss
    from .run import distill

    try:
        model = distill(dcfg)
    except NonFiniteLoss as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    c = model.config
    print(f"distilled a {c.distilled_steps}-step {c.distilled_sampler} student (gamma {c.distilled_gamma:g}) into "
          f"{Path(dcfg.out) / 'final'}")
    return 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
