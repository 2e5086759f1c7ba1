"""Optional packages: which avfast extra installs each, an import that names it when it fails, and a
check a program runs before it starts working (`check_installed`), so a missing package costs one line,
not a traceback after minutes of work. Imports nothing optional itself.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

# The pip extra of avfast that provides each optional package (import name -> extra).
EXTRAS = {"librosa": "media", "cv2": "media", "av": "media", "soundfile": "media", "scipy": "media",
          "matplotlib": "media", "diffusers": "vae"}
PIP_NAMES = {"cv2": "opencv-python-headless"}


class MissingDependency(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None  # None also when sys.modules[module] is None
    except (ImportError, ValueError):
        return False


def _install_hint(modules: list[str]) -> str:
    """One command that installs every extra the modules need (two commands run together on one line
    would read as one, and fail)."""
    extras = sorted({EXTRAS.get(m, "media") for m in modules})
    return f'pip install "avfast[{",".join(extras)}]"'


def require(module: str, purpose: str):
    """Import `module` or raise MissingDependency naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependency(f"{purpose} needs the optional package '{PIP_NAMES.get(module, module)}': "
                                f"{_install_hint([module])}") from exc


def check_installed(modules: Iterable[str], purpose: str) -> None:
    """Raises MissingDependency (one line: what is missing, what to install) unless every module is
    installed. Finds the modules without importing them."""
    missing = [m for m in modules if not _installed(m)]
    if missing:
        names = ", ".join(f"'{PIP_NAMES.get(m, m)}'" for m in missing)
        raise MissingDependency(f"{purpose} needs the optional package{'s' if len(missing) > 1 else ''} {names}, "
                                f"not installed here: {_install_hint(missing)}")
