"""One export of the `tiny` model shared by tests/test_export*.py and tests/test_runtime*.py (exports take
~20-40 s on 2 cores, so each test process makes it once): `tiny` with its zero-initialised layers drawn at
random (a fresh U-Net outputs exact zeros, which no parity check could compare), 4 frames, 24 mel steps."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

FRAMES, AUDIO_LENGTH = 4, 24


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


requires_onnx = pytest.mark.skipif(not (have("onnx") and have("onnxscript") and have("onnxruntime")),
                                   reason="onnx, onnxscript and onnxruntime are not installed "
                                          "(pip install \"avfast[onnx,ort]\")")


def tiny_model():
    import avfast.models
    from avfast.export import randomize_zero_layers_

    return randomize_zero_layers_(avfast.models.create("tiny"), seed=0).eval()


@functools.cache
def tiny_export() -> tuple[object, Path]:
    """(model, path of its checked fp32 batch-1 ONNX export with manifest)."""
    from avfast.export.pipeline import export_cached

    folder = Path(tempfile.mkdtemp(prefix="avfast-export-test-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model = tiny_model()
    path = export_cached(model, "onnxruntime", batch_size=1, frames=FRAMES, audio_length=AUDIO_LENGTH,
                         cache_dir=folder, progress=False)
    return model, path
