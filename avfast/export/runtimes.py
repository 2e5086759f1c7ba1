"""Runtimes that export on demand: the convenience that needs both layers lives above both.

    runtime = avfast.export.create_runtime("onnxruntime", model)     # exports (cached), checks, loads
    runtime = avfast.runtime.create("onnxruntime", path="tiny.onnx")  # runtime/ only loads files

`avfast.runtime` knows nothing of exporting (export/ sits above it and imports it, never the reverse);
`create_runtime` is `avfast.runtime.create` with the exporter handed in: `export_cached` writes (or
reuses) a checked export in the cache folder, and the runtime loads it.
"""
from __future__ import annotations

from typing import Any

from ..runtime import create
from .pipeline import export_cached

__all__ = ["create_runtime"]


def create_runtime(name: str, model: Any = None, **options: Any):
    """`avfast.runtime.create(name, model, **options)`; an exported runtime without `path` exports `model`
    first (cached in `cache_dir`, default ~/.cache/avfast/export or $AVFAST_EXPORT_CACHE)."""
    return create(name, model, export=export_cached, **options)
