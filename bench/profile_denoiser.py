"""Where one function evaluation's time goes: the denoiser's forward under torch.profiler, by kind of op.

    python bench/profile_denoiser.py --preset paper-128 --dtype bf16 [--backend reference] [--threads 2]

Prints self CPU time per group (convolutions, avfast's fused ops, normalisation and activations,
everything else) for one profiled forward at batch 1 under no_grad, after two warm-up calls. The
denoiser benchmark's fused and reference rows differ only in the avfast ops; convolutions are the same
oneDNN calls in both, so their share bounds what any fused op can gain: with the avfast ops and
everything else taking no time at all, an FE would still take the convolution time.
"""
from __future__ import annotations

import argparse
import contextlib
import sys

import torch

GROUPS = {  # first matching group wins; names are aten / avfast op names as the profiler reports them
    "convolution": ("convolution", "conv"),
    "avfast ops (dispatched)": ("avfast::", "attention", "easy_fusion"),
    "normalisation and activations": ("group_norm", "silu", "layer_norm", "softmax"),
}
# No-grad eager calls on CPU tensors run avfast's kernels without the op dispatch (avfast/ops), so the
# profiler records no event for them: their time is in the profiled call's wall time minus its events.
UNATTRIBUTED = "no op event (avfast fast path, Python)"


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS.items():
        if any(k in low for k in keys):
            return group
    return "other"


def profile(preset: str, dtype: str, backend: str | None, frames: int | None = None) -> dict[str, float]:
    """Milliseconds of self CPU time per group for one forward, plus "total" (wall time of that forward)."""
    import time

    import avfast
    from avfast import models

    torch.manual_seed(0)
    overrides = {} if frames is None else {"frames": frames, "audio_length": frames * 112 // 18}
    model = models.create(preset, **overrides).eval()
    inputs = model.example_inputs(batch_size=1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    chosen = avfast.backend(backend) if backend else contextlib.nullcontext()
    with torch.no_grad(), autocast, chosen:
        for _ in range(2):
            model(*inputs)
        start = time.perf_counter()
        model(*inputs)
        wall = time.perf_counter() - start
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            model(*inputs)
            profiled = time.perf_counter() - start
    out = dict.fromkeys([*GROUPS, "other"], 0.0)
    for event in prof.key_averages():
        out[group_of(event.key)] += event.self_cpu_time_total / 1e3
    out[UNATTRIBUTED] = max(0.0, profiled * 1e3 - sum(out.values()))
    out["total"], out["profiled"] = wall * 1e3, profiled * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/profile_denoiser.py", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper-128")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--backend", default=None, help="avfast backend to force (default: the fused default)")
    parser.add_argument("--frames", type=int, default=None, help="frames (mel length scales with it)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    times = profile(args.preset, args.dtype, args.backend, args.frames)
    profiled = times["profiled"]
    print(f"{args.preset} {args.dtype} backend={args.backend or 'default'}: one FE {times['total']:.1f} ms, "
          f"{profiled:.1f} ms under the profiler ({torch.get_num_threads()} threads); self time per group:")
    for group in [*GROUPS, "other", UNATTRIBUTED]:
        print(f"  {group:<40} {times[group]:8.1f} ms  {times[group] / profiled:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
