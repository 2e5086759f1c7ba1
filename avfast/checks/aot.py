"""Ahead-of-time check of the Triton kernels as the model launches them, for the GPUs we ship to.

The interpreter (how the kernels are tested without a GPU) cannot see register pressure or shared
memory, so this compiles them for sm_80/86/89/90 (no GPU needed) and checks shared memory within
the architecture's per-block limit and no register spills in `ptxas -v`.

What is compiled is derived, not declared: each preset model (avfast.models PRESETS) is traced with
`torch.export` to find every avfast op call and its tensors' shapes and strides; each call (and
its backward) is replayed in fp32, fp16 and bf16 on meta tensors through the op layer's Triton
host functions while the launchers record their launches (avfast.triton._common.launch); and each
distinct launch is bound by Triton's own JIT binder, so the signature (i32 or i64), the
specialisation of integers equal to 1 or divisible by 16 and of 16-byte-aligned pointers, and the
launch options (num_warps, num_stages, defaults included) are what a GPU run of the model compiles.

    python -m avfast.checks.aot [--json] [--arch 86 ...] [--preset tiny ...]

Must run without TRITON_INTERPRET=1 (under the interpreter `triton.jit` builds no compiler IR).

A tool that checks kernels against models, so it sits above both (avfast/checks, not avfast/triton:
the kernel package knows no model). It reads each op's public kernel declarations
(`avfast.ops.<op>.KERNELS["triton"]`), not private tables.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch

from .._cli import Parser, program
from ..models import PRESETS, JointUNet
from ..models import preset as get_preset
from ..ops.attention import KERNELS as ATTENTION_KERNELS
from ..ops.contrastive_loss import KERNELS as CONTRASTIVE_LOSS_KERNELS
from ..ops.easy_fusion import KERNELS as EASY_FUSION_KERNELS
from ..train.negatives import NegativeConfig

# Per-block opt-in shared memory limits (bytes), CUDA programming guide, compute capabilities table.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
DTYPES = ("float32", "float16", "bfloat16")
# The contrastive loss is not part of the model's forward: it sees [G, B, ...] predictions of the
# model's data layout, G = 1 + the default negatives; B = 1 (one clip) and 8 (the training default)
# give both specialisations of B (== 1 or not).
LOSS_BATCH_SIZES = (1, 8)


@dataclass
class AotResult:
    kernel: str        # kernel[dtype; constexprs; specialised arguments; warps/stages]
    origin: str        # the first model op call that launches it
    cc: int
    shared_bytes: int
    shared_limit: int
    registers: int
    spill_stores: int
    spill_loads: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return (not self.error and self.shared_bytes <= self.shared_limit and self.spill_stores == 0
                and self.spill_loads == 0)


# ------------------------------------------------------------------ the model's op calls
@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def meta(self, dtype):
        return torch.empty_strided(self.shape, self.stride, dtype=dtype, device="meta")


@dataclass(frozen=True)
class OpCall:
    op: str          # "easy_fusion", "temporal_spatial_attention", "contrastive_loss"
    args: tuple      # TensorSpec for tensors, plain values otherwise
    origin: str

    def describe(self) -> str:
        return f"{self.origin} {self.op}(" + ", ".join(
            "x".join(map(str, a.shape)) if isinstance(a, TensorSpec) else repr(a) for a in self.args) + ")"


def model_op_calls(preset: str) -> list[OpCall]:
    """The avfast op calls of one JointUNet forward (batch 2) of a preset, from torch.export."""
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = JointUNet(cfg)
    model = model.to_empty(device="cpu")  # uninitialised: export only needs shapes
    v, a = torch.empty(2, *cfg.video_shape), torch.empty(2, *cfg.audio_shape)
    t = torch.full((2,), cfg.num_train_steps / 2)
    graph = torch.export.export(model, (v, a, t, t), strict=False).graph
    calls = []
    for node in graph.nodes:
        if node.op == "call_function" and getattr(node.target, "namespace", None) == "avfast":
            args = tuple(TensorSpec(tuple(x.meta["val"].shape), tuple(x.meta["val"].stride()))
                         if isinstance(x, torch.fx.Node) else x for x in node.args)
            calls.append(OpCall(node.target._opname, args, preset))
    if not calls:
        raise RuntimeError(f"the {preset} model called no avfast op: nothing to check")
    return calls


def loss_op_calls(preset: str) -> list[OpCall]:
    cfg, neg = get_preset(preset), NegativeConfig()
    G = 1 + neg.num_video + neg.num_audio

    def contiguous(*shape: int) -> TensorSpec:
        strides = [1]
        for n in reversed(shape[1:]):
            strides.insert(0, strides[0] * n)
        return TensorSpec(shape, tuple(strides))

    return [OpCall("contrastive_loss", (contiguous(G, B, *cfg.video_shape), contiguous(G, B, *cfg.audio_shape),
                                        contiguous(B, *cfg.video_shape), contiguous(B, *cfg.audio_shape),
                                        neg.num_video, 5e-5, 1.0, 1.0), f"{preset} loss")
            for B in LOSS_BATCH_SIZES]


def _replay(call: OpCall, dtype) -> list:
    """The launches the op layer's Triton forward and backward make for `call` in `dtype`."""
    from ..triton._common import recording_launches  # lazy: triton is optional (and imports triton)

    args = [a.meta(dtype) if isinstance(a, TensorSpec) else a for a in call.args]
    grad = lambda t: torch.empty(t.shape, dtype=t.dtype, device="meta")  # noqa: E731  autograd's fresh gradients
    with recording_launches() as launches:
        if call.op == "easy_fusion":
            vf, af = EASY_FUSION_KERNELS["triton"].forward(*args)
            EASY_FUSION_KERNELS["triton"].backward(grad(vf), grad(af), args[0].shape[1], args[1].shape[1])
        elif call.op == "temporal_spatial_attention":
            out, lse = ATTENTION_KERNELS["triton"].forward(*args)
            ATTENTION_KERNELS["triton"].backward(grad(out), args[0], out, lse, *args[1:])
        elif call.op == "contrastive_loss":
            rows = CONTRASTIVE_LOSS_KERNELS["triton"].forward(*args)
            CONTRASTIVE_LOSS_KERNELS["triton"].backward(grad(rows), *args, targets=False)
            CONTRASTIVE_LOSS_KERNELS["triton"].backward(grad(rows), *args, targets=True)
        else:
            raise RuntimeError(f"avfast.checks.aot does not know how to replay avfast::{call.op}; add it to _replay")
    if not launches:
        raise RuntimeError(f"{call.describe()} launched no Triton kernel")
    return launches


# ------------------------------------------------------------------ Triton's JIT binding, per target
@functools.lru_cache(maxsize=None)
def _backend(cc: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    return make_backend(GPUTarget("cuda", cc, 32))


def _bind(launch, cc: int):
    """(signature, constexprs, attrs, options, specialisation) exactly as JITFunction.run would
    compute them for this launch on an sm_`cc` GPU (triton/runtime/jit.py, Triton 3.9)."""
    from triton import knobs
    from triton.runtime.jit import create_function_from_signature

    kernel, backend = launch.kernel, _backend(cc)
    kwargs = dict(launch.meta)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return signature, constexprs, attrs, options, specialization


def _describe(launch, signature: dict, specialization: list, options) -> str:
    """kernel[*dtype; constexprs; i64 args; args == 1; args % 16 == 0; w/s]: readable and unique per compile."""
    names = list(signature)
    ptrs = sorted({t for t in signature.values() if t.startswith("*")})
    consts = ",".join(f"{k}={v}" for k, v in launch.meta.items() if k in signature)
    wide = [n for n, t in signature.items() if t == "i64"]
    ones = [n for n, (t, _) in zip(names, specialization) if t == "constexpr" and n not in launch.meta]
    div16 = [n for n, (t, k) in zip(names, specialization) if t != "constexpr" and k == "D"
             and not t.startswith("*")]
    parts = [",".join(ptrs), consts, "i64:" + ",".join(wide) if wide else "", "=1:" + ",".join(ones) if ones else "",
             "%16:" + ",".join(div16) if div16 else "", f"w{options.num_warps}s{options.num_stages}"]
    return f"{launch.kernel.fn.__name__}[" + ";".join(p for p in parts if p) + "]"


# ------------------------------------------------------------------ compiling and checking
def _ptxas_flags(options) -> list[str]:
    """The flags Triton's own cubin step passes to ptxas besides -v and the file names
    (triton/backends/nvidia/compiler.py::make_cubin, Triton 3.9), so the registers and spills checked
    here are those of the cubin a GPU run loads."""
    from triton import knobs

    if knobs.compilation.disable_line_info:
        debug = ["-lineinfo", "-suppress-debug-info"]
    elif knobs.nvidia.disable_ptxas_opt:
        debug = ["-g"]
    else:
        debug = ["-lineinfo"]
    fmad = [] if options.enable_fp_fusion else ["--fmad=false"]
    no_opt = ["--opt-level", "0"] if knobs.nvidia.disable_ptxas_opt else []
    extra = options.ptx_options.split(" ") if options.ptx_options else []
    # --regAllocOptLevel=2 works around a ptxas 13 bug (Triton passes it too).
    return [*debug, *fmad, *no_opt, "--regAllocOptLevel=2", *extra]


def _ptxas_stats(ptx: str, cc: int, options) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from `ptxas -v` on the PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE).group(1).split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([get_ptxas(cc).path, "-v", *_ptxas_flags(options), f"--gpu-name={target}", src,
                               "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True)
    return parse_ptxas_log(proc.stdout + proc.stderr)


def parse_ptxas_log(log: str) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes); raises when the log has no such lines, so a
    changed ptxas format fails the check instead of passing as "0 spills"."""
    regs = [int(m) for m in re.findall(r"Used (\d+) registers", log)]
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not regs or not spills:
        raise RuntimeError(f"could not parse `ptxas -v` output (no register or spill line):\n{log[-2000:]}")
    return max(regs), sum(int(s) for s, _ in spills), sum(int(l_) for _, l_ in spills)


def _compile(launch, origin: str, cc: int) -> AotResult:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs, options, specialization = _bind(launch, cc)
    name = _describe(launch, signature, specialization, options)
    try:
        src = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=options.__dict__)
        regs, stores, loads = _ptxas_stats(compiled.asm["ptx"], cc, options)
        return AotResult(name, origin, cc, compiled.metadata.shared, SHARED_LIMIT[cc], regs, stores, loads)
    except Exception as exc:  # report every failing configuration, not just the first
        return AotResult(name, origin, cc, 0, SHARED_LIMIT[cc], 0, 0, 0, f"{type(exc).__name__}: {exc}"[:500])


def recorded_launches(presets) -> list[tuple[object, str]]:
    """(launch, origin) for every launch the presets' op calls make, in every dtype."""
    calls = [c for p in presets for c in (*model_op_calls(p), *loss_op_calls(p))]
    return [(launch, f"{call.describe()} {dtype}") for call in calls for dtype in DTYPES
            for launch in _replay(call, getattr(torch, dtype))]


def distinct(launches: list[tuple[object, str]], cc: int) -> list[tuple[object, str]]:
    """One (launch, origin) per distinct compile on sm_`cc`: same kernel, specialisation and options."""
    seen: dict[str, tuple[object, str]] = {}
    for launch, origin in launches:
        _, _, _, options, specialization = _bind(launch, cc)
        key = repr((launch.kernel.fn.__qualname__, specialization, sorted(options.__dict__.items())))
        seen.setdefault(key, (launch, origin))
    return list(seen.values())


def run(archs=tuple(SHARED_LIMIT), presets=None, jobs: int | None = None) -> list[AotResult]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("avfast.checks.aot must run without TRITON_INTERPRET=1 (the interpreter does not compile)")
    launches = recorded_launches(tuple(presets or PRESETS))
    work = [(launch, origin, cc) for cc in archs for launch, origin in distinct(launches, cc)]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        return list(pool.map(lambda item: _compile(*item), work))


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m avfast.checks.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                        help="compute capability to check (repeatable; default all)")
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS),
                        help="model preset whose shapes to check (repeatable; default all)")
    args = parser.parse_args(argv)
    results = run(tuple(args.arch or SHARED_LIMIT), args.preset)
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=1))
    else:
        print(f"{'kernel configuration':<100} {'sm':>3} {'smem':>7} {'limit':>7} {'regs':>4} {'spill':>5}  ok")
        for r in results:
            print(f"{r.kernel[:100]:<100} {r.cc:>3} {r.shared_bytes:>7} {r.shared_limit:>7} {r.registers:>4} "
                  f"{r.spill_stores + r.spill_loads:>5}  {'yes' if r.ok else 'NO ' + r.error}")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    program(main)
