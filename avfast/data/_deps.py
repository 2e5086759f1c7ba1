"""Lazy imports of optional dependencies, with an error that says which extra to install (avfast/_deps.py)."""
from __future__ import annotations

from .._deps import EXTRAS, MissingDependency, check_installed, require

__all__ = ["EXTRAS", "MissingDependency", "check_installed", "require"]
