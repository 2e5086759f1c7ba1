"""`python -m avfast.train`: train the joint U-Net (nCMMD / CMMD) on synthetic clips or a folder of videos.

Every TrainConfig field is a flag (`--batch-size 8`, `--eta 0`, `--independent-timesteps`, ...);
`--config FILE` (JSON or YAML) gives defaults that flags override. Under `torchrun --nproc_per_node N`
the same command trains with DistributedDataParallel (gloo on CPU, NCCL on GPUs); only rank 0 writes.
Exit status: 0 done, 1 stopped on a non-finite loss, 2 bad options or unusable data.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .._cli import Parser
from .config import TrainConfig
from .folder import DataError
from .loop import NonFiniteLoss, train


def _field_help(cls: type = TrainConfig) -> dict[str, str]:
    """The trailing comment of each field in the config class's source (TrainConfig's), as its --help text."""
    import inspect
    import re

    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): .*?=.*?#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _load_file(path: str) -> dict:
    """The options in a JSON or YAML file (.yaml/.yml); a ValueError says what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config: no file at {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--config: {p} is not a text file (not UTF-8); expected JSON or YAML") from None
    except OSError as e:
        raise ValueError(f"--config: {p} cannot be read ({e.strerror or e})") from None
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"--config: reading YAML ({p}) needs PyYAML (pip install pyyaml), or use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--config: {p} is not valid YAML ({' '.join(str(e).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: {p} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config: {p} must hold a mapping of option names to values, got {type(data).__name__}")
    return data


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of ModelConfig fields, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m avfast.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON or YAML file of options (flags override it)")
    add_config_arguments(ap, TrainConfig)
    ap.add_argument("--allow-option-changes", action="store_true",
                    help="resume even where an option differs from the run's checkpoint (by default a resume "
                         "with a changed option is refused: it would not repeat the uninterrupted run)")
    return ap


def add_config_arguments(ap: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the config dataclass `cls` (TrainConfig, avfast.distill's DistillConfig), default
    None (unset: the file's or the class's value), its help the field's comment."""
    helps = _field_help(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        h = f"{helps.get(f.name, '')} (default: {default!r})"
        if isinstance(default, bool):
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=h)
        elif isinstance(default, dict):
            ap.add_argument(flag, dest=f.name, type=_json_object, default=None,
                            help=h + ' — a JSON object of ModelConfig fields, e.g. \'{"fusion": "cmcpe"}\'')
        elif isinstance(default, tuple):
            kind = type(default[0]) if default and not isinstance(default[0], str) else None
            ap.add_argument(flag, dest=f.name, nargs="+", type=kind, default=None, help=h)
        else:
            ap.add_argument(flag, dest=f.name, type=type(default), default=None, help=h)


# Options a resumed run may change: they do not alter what the steps compute.
RESUMABLE_CHANGES = {"out", "steps", "save_every", "keep", "log_every", "resume", "device", "threads", "progress",
                     "cache_dir"}


def _preflight(cfg: TrainConfig, allow_changes: bool) -> None:
    """Everything that can be checked before the model is built: the device, the run folder, the
    resume's options and the memory the model needs. A ValueError says what is wrong, in one line."""
    import os

    from .checkpoint import latest_checkpoint, readable_state
    from .loop import resolve_device

    device = resolve_device(cfg)
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out: {run} is a file, not a run folder")
    parent = next((p for p in (run, *run.parents) if p.exists()), Path("."))
    try:  # a real probe: os.access says yes to root even where nothing can be made (/proc, read-only mounts)
        import tempfile

        os.rmdir(tempfile.mkdtemp(prefix=".avfast-write-probe-", dir=parent))
    except OSError as e:
        raise ValueError(f"--out: {run} cannot be written ({parent}: {e.strerror or e})") from None
    ck = latest_checkpoint(run) if cfg.resume and run.is_dir() else None
    if ck is not None and not allow_changes:
        old = (readable_state(ck) or {}).get("train_config", {})
        new = cfg.to_dict()
        for name in new:
            if name in RESUMABLE_CHANGES or name not in old:
                continue
            before, now = old[name], new[name]
            if isinstance(now, (tuple, list)):
                before, now = list(before), list(now)
            if before != now:
                raise ValueError(f"--{name.replace('_', '-')} is {now!r} but the run in {run} ({ck.name}) was trained "
                                 f"with {before!r}; resuming would not repeat the uninterrupted run (pass "
                                 f"--allow-option-changes to continue anyway, or --no-resume / another --out to "
                                 f"start afresh)")
    from .._memory import check_fits
    from ..models.memory import model_peak_bytes

    mcfg = cfg.model_config()
    check_fits(f"training the {cfg.preset} model ({mcfg.frames} frames, {mcfg.audio_length} mel steps) at batch "
               f"{cfg.batch_size}", model_peak_bytes(mcfg, cfg.batch_size, training=True), device)


def read_options(args: argparse.Namespace, cls):
    """`cls` (TrainConfig, DistillConfig) from --config's file with the flags given on top of it."""
    options = _load_file(args.config) if args.config else {}
    options |= {k: v for k, v in vars(args).items() if k not in ("config", "allow_option_changes") and v is not None}
    return cls.from_dict(options, source=args.config or "options")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = read_options(args, TrainConfig)
        _preflight(cfg, args.allow_option_changes)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        model = train(cfg)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"trained {model.config.base_channels}-channel model; EMA weights in {Path(cfg.out) / 'final'}")
    return 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
