"""File I/O shared by every layer: atomic writes and safetensors in and out. Never pickle.

An atomic write goes to a temporary file in the target folder, is fsynced and renamed over the real
name, so an interrupted save never leaves a half-written file under that name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a saved model is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def state_dict_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in state.items()}, metadata=metadata)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"weights: no file at {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"weights: {path} is not a readable safetensors file ({e})") from None


# The repository's markdown files that may hold generated blocks (`<!-- NAME:begin -->` ... `<!-- NAME:end -->`,
# or bench's `<!-- bench:begin NAME -->`): the front-door README and the pages under docs/. Generators
# (`python -m bench.report`, `avfast.experiments.claims report --docs`, `avfast.experiments.quality --docs`)
# scan these for their markers and write into every file that holds them; tests hold each block equal to its
# source the same way, so a table can move between pages without touching a generator.
DOC_FILES = ("README.md", "docs/*.md")


def doc_files(root: str | Path = ".") -> list[Path]:
    """README.md and docs/*.md under `root` (a checkout of the repository) that exist, in that order."""
    root = Path(root)
    found: list[Path] = []
    for pattern in DOC_FILES:
        found += sorted(p for p in root.glob(pattern) if p.is_file())
    return found


def files_with_block(block, root: str | Path = ".") -> list[Path]:
    """The doc files under `root` where the compiled regex `block` finds a generated block."""
    return [p for p in doc_files(root) if block.search(p.read_text())]


def block_targets(block, markers: str, readme: str | Path | None = None, docs: bool = False,
                  root: str | Path = ".") -> list[Path]:
    """Where a generator writes its block: the file `readme` (`--readme FILE`) and, with `docs` (`--docs`),
    every doc file under `root` that holds it. `markers` names the block in errors. Raises ValueError when
    the named file has no block or `docs` finds none, so a command fails before its work, not after it."""
    targets: list[Path] = []
    if readme:
        if not block.search(Path(readme).read_text()):
            raise ValueError(f"--readme: the file has no {markers} block")
        targets.append(Path(readme))
    if docs:
        found = files_with_block(block, root)
        if not found:
            raise ValueError(f"--docs: no {markers} block in README.md or docs/*.md under {Path(root).resolve()}")
        targets += [p for p in found if not any(p.resolve() == q.resolve() for q in targets)]
    return targets
