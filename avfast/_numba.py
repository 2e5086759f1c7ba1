"""Numba's on-disk cache in a folder of the user's own, set before librosa (which JIT-compiles with
numba's cache=True) is imported.

Left alone, numba caches librosa's compiled functions beside librosa's sources in site-packages (an
`__pycache__` shared by every user and process of the environment). A corrupted entry there made
librosa's beat tracker die with SIGSEGV, no message (issue 21: seen in this project's own venv); a
fresh NUMBA_CACHE_DIR fixed it. So avfast points numba at ~/.cache/avfast/numba ($XDG_CACHE_HOME
honoured), unless the user set NUMBA_CACHE_DIR themselves. Only librosa's beat tracker
(avfast.metrics.beats) still uses numba: AV-Align's onsets are numpy (avfast.metrics.onsets).
"""
from __future__ import annotations

import os
import sys

__all__ = ["use_user_cache"]


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "avfast", "numba")


def use_user_cache() -> str:
    """Sets NUMBA_CACHE_DIR to avfast's per-user folder unless it is set already, and returns the folder
    numba will use. Cheap (no numba import); also updates numba's config where numba is already imported,
    which counts for functions numba has not yet compiled (librosa's, when librosa is imported later)."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = user_cache_dir()
        config = getattr(sys.modules.get("numba.core.config"), "CACHE_DIR", None)
        if "numba.core.config" in sys.modules and not config:
            sys.modules["numba.core.config"].CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    return os.environ["NUMBA_CACHE_DIR"]
