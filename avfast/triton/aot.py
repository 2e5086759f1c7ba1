"""Ahead-of-time check of every Triton kernel configuration for the GPUs we ship to.

The interpreter (how the kernels are tested without a GPU) cannot see register pressure or
shared memory, so every `AotSpec` a kernel file declares in `aot_specs()` is compiled here with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))` for sm_80/86/89/90 — no GPU
needed — and checked: shared memory within the architecture's per-block limit and no register
spills in `ptxas -v` on the generated PTX.

    python -m avfast.triton.aot [--json] [--arch 86 ...]

Must run without TRITON_INTERPRET=1 (under the interpreter `triton.jit` builds no compiler IR).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

# Kernel files to check: avfast/triton/<name>.py, each with an aot_specs() function.
KERNEL_MODULES = ("easy_fusion", "contrastive_loss", "attention")

# Per-block opt-in shared memory limits (bytes), CUDA programming guide, compute capabilities table.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
MAX_REGISTERS = 255


@dataclass
class AotResult:
    kernel: str
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


def _ptxas_stats(ptx: str, cc: int) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from `ptxas -v` on the PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE).group(1).split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        # Same flags Triton's own cubin step uses (--regAllocOptLevel=2 works around a ptxas 13 bug).
        proc = subprocess.run([get_ptxas(cc).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={target}", src,
                               "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True)
    log = proc.stdout + proc.stderr
    regs = max((int(m) for m in re.findall(r"Used (\d+) registers", log)), default=0)
    stores = sum(int(m) for m in re.findall(r"(\d+) bytes spill stores", log))
    loads = sum(int(m) for m in re.findall(r"(\d+) bytes spill loads", log))
    return regs, stores, loads


def check_spec(spec, cc: int) -> AotResult:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        src = ASTSource(fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                  options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
        regs, stores, loads = _ptxas_stats(compiled.asm["ptx"], cc)
        return AotResult(spec.name, cc, compiled.metadata.shared, SHARED_LIMIT[cc], regs, stores, loads)
    except Exception as exc:  # report every failing configuration, not just the first
        return AotResult(spec.name, cc, 0, SHARED_LIMIT[cc], 0, 0, 0, f"{type(exc).__name__}: {exc}"[:500])


def all_specs(modules=KERNEL_MODULES) -> list:
    specs = []
    for name in modules:
        specs.extend(importlib.import_module(f"avfast.triton.{name}").aot_specs())
    return specs


def run(archs=tuple(SHARED_LIMIT), modules=KERNEL_MODULES, jobs: int | None = None) -> list[AotResult]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("avfast.triton.aot must run without TRITON_INTERPRET=1 (the interpreter does not compile)")
    specs = all_specs(modules)
    work = [(spec, cc) for spec in specs for cc in archs]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        return list(pool.map(lambda item: check_spec(*item), work))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avfast.triton.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                        help="compute capability to check (repeatable; default all)")
    parser.add_argument("--module", action="append", choices=KERNEL_MODULES, help="kernel file (default all)")
    args = parser.parse_args(argv)
    results = run(tuple(args.arch or SHARED_LIMIT), tuple(args.module or KERNEL_MODULES))
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=1))
    else:
        print(f"{'kernel configuration':<78} {'sm':>3} {'smem':>7} {'limit':>7} {'regs':>4} {'spill':>5}  ok")
        for r in results:
            print(f"{r.kernel[:78]:<78} {r.cc:>3} {r.shared_bytes:>7} {r.shared_limit:>7} {r.registers:>4} "
                  f"{r.spill_stores + r.spill_loads:>5}  {'yes' if r.ok else 'NO ' + r.error}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
