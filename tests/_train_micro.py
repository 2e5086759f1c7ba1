"""A micro joint U-Net for training tests: a few ms per step on one CPU thread."""
from __future__ import annotations

import os
import sys

# 8 frames (room for one synthetic event), 16x16 pixels entering as 2x2 patches, 32 mel frames.
MICRO = {"base_channels": 16, "channel_mult": [1, 2], "frames": 8, "height": 16, "width": 16, "audio_length": 32,
         "head_dim": 16, "norm_groups": 8, "attention_levels": [1], "patch_size": 2}


def micro_config(out, **overrides):
    from avfast.train.config import TrainConfig

    options = dict(out=str(out), preset="tiny", model=dict(MICRO), steps=4, batch_size=4, lr=1e-3, eta=0.0,
                   save_every=2, log_every=1, num_clips=16, progress=False, device="cpu")
    return TrainConfig(**(options | overrides))


def cli_env() -> dict:
    """Environment for a training subprocess: one thread, the checkout importable."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                         "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


PYTHON = sys.executable
