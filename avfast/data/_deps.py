"""Lazy imports of optional dependencies, with an error that says which extra to install."""
from __future__ import annotations

import importlib

_EXTRA = {"librosa": "media", "cv2": "media", "av": "media", "soundfile": "media", "scipy": "media",
          "diffusers": "vae"}
_PIP = {"cv2": "opencv-python-headless"}


def require(module: str, purpose: str):
    """Import `module` or raise ImportError naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        extra = _EXTRA.get(module, "media")
        raise ImportError(f"{purpose} needs the optional package '{_PIP.get(module, module)}': "
                          f"pip install \"avfast[{extra}]\"") from exc
