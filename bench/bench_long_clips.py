"""Long clips (overlapping windows, issue 24): seconds per clip and peak memory against duration.

The `tiny` model (random weights: cost does not depend on them; 1.8-s windows of 18 frames at 32x32
and 112 mel columns) through `avfast.Pipeline` with `seconds=` 1.8, 7.2 and 30: sampling time per
clip (Clip.seconds, the sampler loop; decoding excluded) and the whole call's (with Griffin-Lim on the
long mel), windows per step, the largest model-call batch, and the peak memory of the sampling (the
windowed sampler over the long state, `bench/_memory.py`: CUDA allocator peak, or the CPU resident-set
high-water) at `window_batch` 1 and 4. Expected: time linear in duration at about (1 + overlap / stride)
x a window's cost per window-length; peak memory flat in duration once a clip has `window_batch`
windows or more (the windows in flight are the same; only the full-length state, a few MB, grows).

    python bench/bench_long_clips.py                 # table (steps 4)
    python bench/bench_long_clips.py --steps 2 --seconds 1.8 7.2
    pytest bench/bench_long_clips.py                 # asserts: model-call batch and memory flat in duration
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from avfast import models
from avfast.diffusion import sample
from avfast.diffusion.windowed import windowed
from avfast.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` importable when run as a script
from bench._memory import method, peak_extra_bytes, why_unavailable  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SECONDS = (1.8, 7.2, 30.0)
WINDOW_BATCHES = (1, 4)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def tiny_pipeline() -> Pipeline:
    torch.manual_seed(0)
    return Pipeline(models.create("tiny").to(DEVICE).eval(), progress=False)


def clip_cost(pipe: Pipeline, seconds: float, steps: int, window_batch: int) -> dict:
    """Seconds per clip (sampling; the whole call) and the windows bookkeeping of one long clip."""
    _sync()
    t0 = time.perf_counter()
    clip = pipe("joint", seconds=seconds, steps=steps, seed=0, window_batch=window_batch)
    _sync()
    return {"seconds": seconds, "window_batch": window_batch, "steps": steps, "sampling_s": clip.seconds,
            "call_s": time.perf_counter() - t0, "windows": clip.windows, "peak_batch": clip.peak_batch}


def sampling_peak_bytes(model, seconds: float, steps: int, window_batch: int) -> int:
    """Peak memory of sampling one clip of `seconds` over windows (bench/_memory.py), after a warm-up."""
    def run():
        with torch.no_grad():
            den = windowed(model, seconds=seconds, max_batch=window_batch)
            sample(den, steps=steps, seed=0, progress=False, device=DEVICE)

    run()
    return peak_extra_bytes(run, DEVICE)


def table(steps: int = 4, seconds: tuple[float, ...] = SECONDS, window_batches=WINDOW_BATCHES) -> list[dict]:
    pipe = tiny_pipeline()
    pipe("joint", seconds=1.8, steps=1)  # warm-up
    rows = []
    for wb in window_batches:
        for s in seconds:
            row = clip_cost(pipe, s, steps, wb)
            row["peak_mb"] = sampling_peak_bytes(pipe.model, s, steps, wb) / 2**20
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"device {DEVICE} ({torch.get_num_threads()} threads), torch {torch.__version__}; tiny, joint, "
          f"dpmpp2m; peak memory: {method(DEVICE)}")
    print(f"{'seconds':>8} {'win/call':>8} {'steps':>5} {'windows':>7} {'peak batch':>10} {'sampling s':>10} "
          f"{'s per 1.8 s':>11} {'call s':>7} {'peak MB':>8}")
    for r in rows:
        per_window_length = r["sampling_s"] / (r["seconds"] / 1.8)
        print(f"{r['seconds']:8.1f} {r['window_batch']:8d} {r['steps']:5d} {r['windows']:7d} {r['peak_batch']:10d} "
              f"{r['sampling_s']:10.2f} {per_window_length:11.2f} {r['call_s']:7.2f} {r['peak_mb']:8.1f}")


def test_model_call_batch_and_memory_are_flat_in_duration():
    """Windows in flight do not grow with the duration; nor does peak memory, beyond the long state."""
    pipe = tiny_pipeline()
    rows = [clip_cost(pipe, s, 1, 2) for s in (3.6, 7.2, 30.0)]
    assert [r["peak_batch"] for r in rows] == [2, 2, 2] and rows[0]["windows"] < rows[2]["windows"]
    if why_unavailable(DEVICE) is None:
        small, large = (sampling_peak_bytes(pipe.model, s, 1, 2) for s in (3.6, 30.0))
        state = 10 * 4 * (3 * 300 * 32 * 32 + 80 * 1875)        # 10 full-length fp32 copies of the 30-s state
        assert large <= small + state + 8 * 2**20, (small, large)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seconds", type=float, nargs="+", default=list(SECONDS))
    ap.add_argument("--window-batch", type=int, nargs="+", default=list(WINDOW_BATCHES))
    args = ap.parse_args()
    print_table(table(args.steps, tuple(args.seconds), tuple(args.window_batch)))


if __name__ == "__main__":
    main()
