"""Training checkpoints without pickle, written so that no crash can leave a broken one.

    <run>/checkpoints/step_00001000/  model.safetensors  ema.safetensors  optimizer.safetensors
                                      config.json (the model's)  state.json (step, train config, lr, ...)
    <run>/checkpoints/latest          the name of the newest complete checkpoint

A save writes the files into `step_N.tmp-<pid>/` (each fsynced), renames the folder to `step_N/`
(atomic on POSIX), fsyncs the parent and only then replaces `latest` through a temporary file and
a rename. A process killed at any point leaves `latest` naming a complete checkpoint; leftover
`.tmp-*` folders are removed by the next save. Optimizer state goes into safetensors as
`<param index>.<name>` tensors plus its hyper-parameters in state.json.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from ..models.weights import atomic_write_bytes, check_state_dict, load_state_file, state_dict_bytes

LATEST = "latest"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> tuple[dict, list]:
    """(tensors for safetensors, param_groups without the parameter objects) of `opt`."""
    index = {id(p): i for i, p in enumerate(params)}
    tensors = {}
    for p, st in opt.state.items():
        for name, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index[id(p)]}.{name}"] = t.detach().clone().cpu().reshape(t.shape)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [index[id(p)] for p in g["params"]]}
              for g in opt.param_groups]
    return tensors, groups


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, ema: dict[str, torch.Tensor],
                    opt: torch.optim.Optimizer, state: dict[str, Any], keep: int = 2) -> Path:
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    for stale in ckdir.glob("*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{step:08d}"
    tmp = ckdir / f"{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    opt_tensors, groups = optimizer_tensors(opt, list(model.parameters()))
    atomic_write_bytes(tmp / "model.safetensors", state_dict_bytes(model.state_dict()))
    atomic_write_bytes(tmp / "ema.safetensors", state_dict_bytes(ema))
    atomic_write_bytes(tmp / "optimizer.safetensors", state_dict_bytes(opt_tensors))
    atomic_write_bytes(tmp / "config.json", model.config.to_json().encode())
    atomic_write_bytes(tmp / "state.json", json.dumps(state | {"step": step, "optimizer_groups": groups},
                                                      indent=2).encode())
    final = ckdir / name
    if final.exists():  # a re-save of the same step (e.g. after resume): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckdir)
    atomic_write_bytes(ckdir / LATEST, name.encode())
    # Prune only earlier steps: folders past this step belong to an older run in the same folder
    # (--no-resume) and must not push out the checkpoint `latest` names.
    earlier = [p for p in complete_checkpoints(ckdir) if _step_of(p) < step]
    for old in earlier[:max(0, len(earlier) - (keep - 1))] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _step_of(path: Path) -> int:
    return int(path.name.split("_", 1)[1])


def complete_checkpoints(ckdir: Path) -> list[Path]:
    """The step_N folders (renamed into place only when complete), oldest first."""
    found = [p for p in Path(ckdir).glob("step_*") if p.is_dir() and ".tmp-" not in p.name
             and p.name.split("_", 1)[1].isdigit() and (p / "state.json").is_file()]
    return sorted(found, key=_step_of)


def readable_state(path: Path) -> dict | None:
    """The checkpoint's state.json when the checkpoint reads whole (state and config parse, each
    safetensors file's header matches its size), else None. Reads headers only, not the tensors."""
    from safetensors import safe_open

    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        json.loads((path / "config.json").read_text())
        for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
            with safe_open(str(path / name), framework="pt") as f:
                f.keys()
    except Exception:  # noqa: BLE001  (any damage: truncated, not JSON, bad header, missing file)
        return None
    return state if isinstance(state, dict) and isinstance(state.get("step"), int) else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names; if that one is missing or damaged, the newest complete one that
    reads whole (with a warning)."""
    ckdir = Path(run_dir) / "checkpoints"
    pointer = ckdir / LATEST
    if not pointer.is_file():
        return None
    path = ckdir / pointer.read_text(errors="replace").strip()
    if (path / "state.json").is_file() and readable_state(path) is not None:
        return path
    complete = [p for p in complete_checkpoints(ckdir) if p != path and readable_state(p) is not None]
    if not complete:
        raise FileNotFoundError(f"checkpoint pointer {pointer} names {path.name}, which is incomplete, damaged or "
                                f"missing, and {ckdir} holds no other complete checkpoint (start afresh with "
                                f"--no-resume or another --out)")
    print(f"warning: checkpoint pointer {pointer} names {path.name}, which is missing or damaged; using the "
          f"newest complete checkpoint, {complete[-1].name}", file=sys.stderr)
    return complete[-1]


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Loads model and optimizer in place; returns (ema tensors, state dict). Checks before loading."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    weights = load_state_file(path / "model.safetensors")
    check_state_dict(model, weights, str(path / "model.safetensors"))
    ema = load_state_file(path / "ema.safetensors")
    check_state_dict(model, ema, str(path / "ema.safetensors"))
    opt_tensors = load_state_file(path / "optimizer.safetensors")
    model.load_state_dict(weights)
    load_optimizer(opt, opt_tensors, state["optimizer_groups"])
    return ema, state
