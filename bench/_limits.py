"""What this machine can do at best, measured in the same run as the benchmarks.

Every benchmark result is reported as a fraction of these limits (a roofline: the larger of
FLOPs / matmul peak and bytes / copy bandwidth, over the measured time), so a reader can tell
how close a kernel is to what the hardware allows here, not only how it compares with PyTorch.

- matmul peak: the best rate of a square GEMM per dtype (fp32 and bf16; fp16 on GPUs only: CPU
  fp16 GEMM has no fast path in torch and takes minutes at these sizes), run both as `torch.mm` and
  as a 1x1 convolution: on AMD CPUs torch's fp32 `mm` goes to MKL, which does not use AVX-512 there
  (216 GFLOP/s on the project's 2-core EPYC), while convolutions go to oneDNN (348 GFLOP/s), and
  the model's convolutions run at the faster rate.
- int8 GEMM peak (CPU): the best rate, in GOP/s (2 per multiply-add), of an n x n x n int8 product as
  `torch._int_mm` and as OpenVINO's int8 FullyConnected (u8 activations x i8 weights: the oneDNN
  brgemm kernels the int8 export runs on, checked to be int8 in the compiled model, fed u8 so that a
  call is the product alone: `openvino_int8_matmul`) where openvino is installed. Reported as
  matmul_gflops["int8"], the limit int8 rows are held to.
- copy bandwidth: the best rate of `dst.copy_(src)` counting read + write bytes, at a cache-sized
  and a DRAM-sized buffer, over torch's threads or one thread (whichever is faster: a loaded
  scheduler can park the threads on one core); a case is held to the probe whose traffic is nearest
  its own (log scale).
Best, not median: noise only ever makes a run slower, so the fastest repeat is the closest to the
hardware's limit.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Square sizes: big enough that one call runs at the BLAS's steady rate (ms on a GPU, ~0.1 s on 2
# CPU cores), small enough that the probe stays a few seconds.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # multiples of 32 (the 1x1 convolution's pixel grid)
MATMUL_DTYPES = {"cpu": (torch.float32, torch.bfloat16), "cuda": (torch.float32, torch.bfloat16, torch.float16)}
# Source buffer sizes of the copy probe: one that stays in L2/L3, one far beyond any cache.
COPY_BYTES = {"cpu": {"cache": 4 << 20, "dram": 256 << 20}, "cuda": {"cache": 16 << 20, "dram": 1 << 30}}


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(
        dtype, str(dtype).removeprefix("torch."))


@dataclasses.dataclass
class Limits:
    device: str                                  # "cpu" or "cuda"
    machine: dict                                # CPU/GPU model, cores, threads, torch, BLAS builds
    matmul_gflops: dict[str, float]              # dtype name -> best GFLOP/s of torch.mm
    copy_gbps: dict[str, float]                  # "cache" / "dram" -> best GB/s (read + write)
    copy_traffic: dict[str, int]                 # bytes moved by one probe copy, per size class

    def flop_limit(self, dtype: str) -> float | None:
        """FLOP/s peak for `dtype` (None when not probed, e.g. fp16 on a CPU)."""
        rate = self.matmul_gflops.get(dtype)
        return rate * 1e9 if rate else None

    def bandwidth_limit(self, traffic_bytes: float) -> tuple[str, float]:
        """(size class, bytes/s) of the copy probe whose traffic is nearest `traffic_bytes` in log scale."""
        cls = min(self.copy_gbps, key=lambda c: abs(math.log(max(traffic_bytes, 1) / self.copy_traffic[c])))
        return cls, self.copy_gbps[cls] * 1e9

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Limits":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def _cpuinfo(field: str) -> str | None:
    """The value of the first `field` line of /proc/cpuinfo (None where there is none or it cannot be read).
    The name must match whole: "model" is not "model name"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# The matrix instructions a CPU row's speed depends on (the model name alone may not say: "Intel(R) Xeon(R)
# Processor" is one name for several generations): recorded with each run.
MATRIX_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_id() -> str | None:
    """The CPU's family and model numbers ("family 25 model 17"), None where /proc/cpuinfo does not give them.
    One model name covers several generations ("AMD EPYC" for Zen 4 and Zen 5, whose AVX-512 units are half and
    full width): the numbers tell them apart."""
    family, model = _cpuinfo("cpu family"), _cpuinfo("model")
    return f"family {family} model {model}" if family and model else None


def cpu_matrix_flags() -> list[str]:
    """The MATRIX_FLAGS /proc/cpuinfo lists for this CPU (empty where it cannot be read)."""
    flags = set((_cpuinfo("flags") or "").split())
    return [f for f in MATRIX_FLAGS if f in flags]


def _torch_blas() -> str:
    """The BLAS torch was built with, from torch.__config__.show() (e.g. "mkl (oneMKL 2024.2), oneDNN v3.12")."""
    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", cfg)
    parts = [blas.group(1) if blas else "unknown"]
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", cfg)
    if mkl:
        parts.append(f"oneMKL {mkl.group(1)}")
    dnn = re.search(r"MKL-DNN (v[\d.]+)", cfg)
    if dnn:
        parts.append(f"oneDNN {dnn.group(1)}")
    cap = re.search(r"CPU capability usage: (\w+)", cfg)
    if cap:
        parts.append(f"{cap.group(1)} kernels")
    return ", ".join(parts)


def _numpy_blas() -> str:
    try:
        import numpy

        info = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception as exc:  # numpy missing or an older show_config without mode=: say so, do not guess
        return f"unknown ({type(exc).__name__})"


def machine_description(device: str) -> dict:
    desc = {"device": device, "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "torch_blas": _torch_blas(), "numpy_blas": _numpy_blas(),
            "python": platform.python_version(), "platform": platform.platform(), "cpu_flags": cpu_matrix_flags(),
            "cpu_id": cpu_id()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        desc.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                    cuda=torch.version.cuda, sm=f"{props.major}{props.minor}")
    return desc


def run_record(prog: str, argv: list[str] | None) -> dict:
    """When, how and where a script's results were made: `created` (UTC), `command` (`prog` and its arguments:
    `argv`, or the process's own when None) and `machine` (machine_description of the CPU), for its JSON."""
    import datetime
    import sys

    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([f"python -m {prog}", *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine_description("cpu")}


def prime_threads(seconds: float = 0.1) -> None:
    """Keep every thread of torch's pool busy for a moment. On a loaded machine the scheduler may park
    the pool's threads on one core; each parallel region then waits a time slice for its second
    thread, and a 40 us cache-sized copy took 9 ms until a burst of parallel work spread them out."""
    a = torch.full((512, 512), 0.01)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        torch.mm(a, a)


def best_seconds(fn: Callable[[], object], sync: Callable[[], None], min_time: float, min_calls: int = 3,
                 series: int = 1) -> float:
    """Fastest of repeated synchronised calls: `series` times, threads primed, then calls for at least
    `min_time` seconds and `min_calls` calls."""
    fn()
    sync()  # warm-up: first-call costs (thread pools, kernel selection, page faults)
    best = math.inf
    for _ in range(series):
        prime_threads()
        calls, start = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
            calls += 1
    return best


def matmul_gflops(dtype: torch.dtype, device: str, n: int, min_time: float = 0.3) -> float:
    """Best rate of an n x n x n GEMM, as `torch.mm` and as a 1x1 convolution (the same product)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    x = a.t().reshape(1, n, n // 32, 32)  # n channels x n pixels
    w = b.reshape(n, n, 1, 1)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = min(best_seconds(lambda: torch.mm(a, b), sync, min_time),
               best_seconds(lambda: torch.nn.functional.conv2d(x, w), sync, min_time))
    return 2 * n ** 3 / best / 1e9


def openvino_int8_matmul(n: int):
    """OpenVINO's u8 x i8 FullyConnected for an n x n x n product, as (compiled model, u8 input, i8 weight,
    scale of the product); None without openvino or when the compiled layer is not int8.

    The input is u8 and passes an identity FakeQuantize (0..255, 256 levels), the weight is i8 dequantised
    by Convert + Multiply: the low-precision transformations fold both and feed the u8 input straight to
    the int8 FullyConnected, so a call times nothing but the product. (With an f32 input and a real
    FakeQuantize, as this probe had before, a call also quantised n x n floats and copied the four times
    larger f32 input: 7-30 % of it on an AMX Xeon, whose int8 tiles then seemed to reach only 1.3-1.5x
    bf16. With the u8 input dequantised by Convert + Multiply instead, the plugin takes the pattern for a
    weight-compressed layer: a Subgraph converts the input to f32 and the FullyConnected requantises it
    dynamically to i8, off by up to 0.5 %.)"""
    try:
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    g = np.random.default_rng(0)
    x_u8 = g.integers(0, 256, (n, n), dtype=np.uint8)
    w_i8 = g.integers(-127, 128, (n, n), dtype=np.int8)
    w_scale = 0.01

    def c(v: float):
        return ops.constant(np.float32(v))

    x = ops.parameter([n, n], ov.Type.u8, name="x")
    x_q = ops.fake_quantize(ops.convert(x, ov.Type.f32), c(0), c(255), c(0), c(255), 256)
    y = ops.matmul(x_q, ops.multiply(ops.convert(ops.constant(w_i8), ov.Type.f32), c(w_scale)), False, True)
    compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    from avfast.runtime.ov import openvino_int8_layers

    if not openvino_int8_layers(compiled)["int8_layers"]:  # the graph's one compute layer did not run in int8
        return None
    return compiled, x_u8, w_i8, w_scale


def _openvino_int8_seconds(n: int, min_time: float) -> float | None:
    """Best seconds of `openvino_int8_matmul(n)`, over three primed series: the rate is noisy on a shared
    machine (2.8-3.7 TOP/s between single runs on the AMX Xeon)."""
    matmul = openvino_int8_matmul(n)
    if matmul is None:
        return None
    compiled, x_u8, _, _ = matmul
    request = compiled.create_infer_request()
    return best_seconds(lambda: request.infer({0: x_u8}), lambda: None, min_time, series=3)


def int8_gops(n: int, min_time: float = 0.3) -> float | None:
    """Best int8 GEMM rate on the CPU (GOP/s): torch._int_mm and OpenVINO's int8 FullyConnected."""
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    times = []
    try:
        times.append(best_seconds(lambda: torch._int_mm(a, b), lambda: None, min_time))
    except RuntimeError:  # a torch build without the CPU int8 GEMM
        pass
    ov_seconds = _openvino_int8_seconds(n, min_time)
    if ov_seconds is not None:
        times.append(ov_seconds)
    return 2 * n ** 3 / min(times) / 1e9 if times else None


def copy_gbps(nbytes: int, device: str, min_time: float = 0.2) -> float:
    """Best read + write rate of `dst.copy_(src)` for an `nbytes` source, over the pool's threads and,
    on CPU, over one thread too (see below)."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # 3 primed series, of many calls for a cache-sized copy (microseconds each): on a shared machine
    # whole series of them can lose a thread (see prime_threads).
    calls = 50 if nbytes <= 64 << 20 else 5
    best = best_seconds(lambda: dst.copy_(src), sync, min_time, calls, series=3)
    if device == "cpu" and torch.get_num_threads() > 1:
        # The scheduler can keep the pool's threads parked on one core for seconds (a 4 MiB copy then
        # measured 1 GB/s instead of ~200 GB/s through every primed series); one thread is not slowed
        # by that, so the limit is never taken below what a single thread moves.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            best = min(best, best_seconds(lambda: dst.copy_(src), sync, min_time, calls))
        finally:
            torch.set_num_threads(threads)
    return 2 * src.numel() * 4 / best / 1e9


def probe(device: str = "cpu", scale: float = 1.0) -> Limits:
    """Measure the limits on `device`; `scale` < 1 shrinks the problem sizes (tests)."""
    if device not in MATMUL_SIZE:
        raise ValueError(f"probe: `device` must be 'cpu' or 'cuda', got {device!r}")
    n = max(64, int(MATMUL_SIZE[device] * scale) // 32 * 32)
    flops = {dtype_name(dt): matmul_gflops(dt, device, n, 0.3 * scale) for dt in MATMUL_DTYPES[device]}
    if device == "cpu":
        rate = int8_gops(n, 0.3 * scale)
        if rate is not None:
            flops["int8"] = rate
    sizes = {cls: max(1 << 16, int(b * scale)) for cls, b in COPY_BYTES[device].items()}
    bandwidth = {cls: copy_gbps(b, device, 0.2 * scale) for cls, b in sizes.items()}
    machine = machine_description(device)
    machine["matmul_size"] = n
    return Limits(device, machine, flops, bandwidth, {cls: 2 * b for cls, b in sizes.items()})
