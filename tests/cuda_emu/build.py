"""Build avfast's CUDA extension as host C++ under the emulation in include/emu.h.

The result is a real `_C_cuda` pybind11 module (csrc/bindings_cuda.cpp and every csrc/cuda file,
.cu included) whose kernels run on the CPU, one fiber per CUDA thread (include/emu.h). Tests install it in place of the CUDA extension
and drive the ops' own `_forward_cuda`/`_backward_cuda` host functions with CPU tensors: workspace
sizing, stride passing, launch geometry and the kernels are all exercised without a GPU.
"""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMU_INCLUDE = Path(__file__).resolve().parent / "include"
CONTROL = Path(__file__).resolve().parent / "emu_control.cpp"  # set_max_grid / schedule entry points


def sources() -> list[Path]:
    cuda = ROOT / "csrc" / "cuda"
    return [ROOT / "csrc" / "bindings_cuda.cpp", *sorted(cuda.glob("*_bind.cpp")), *sorted(cuda.glob("*.cu")),
            CONTROL]


def _compile_and_link(srcs: list[Path], lib: Path, extra_flags: list[str]) -> None:
    """Compiles `srcs` (.cu as host C++) against the emulation headers and links them into `lib`."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise FileNotFoundError("no host C++ compiler (g++) to build the CUDA emulation")
    flags = ["-std=c++17", "-O1", "-fPIC", f"-I{EMU_INCLUDE}", f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc' / 'include'}",
             *extra_flags]

    def compile_one(src: Path) -> Path:
        obj = lib.parent / (src.name + ".o")
        lang = ["-x", "c++"] if src.suffix == ".cu" else []
        proc = subprocess.run([cxx, *flags, *lang, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"emulated build of {src.name} failed:\n{proc.stderr[-4000:]}")
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(compile_one, srcs))
    proc = subprocess.run([cxx, "-shared", *map(str, objects), "-o", str(lib)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"linking {lib.name} failed:\n{proc.stderr[-4000:]}")


def build(out_dir: Path):
    """Compiles the emulated module into out_dir and imports it; raises with the compiler output on failure."""
    import pybind11

    lib = out_dir / ("_C_cuda" + sysconfig.get_config_var("EXT_SUFFIX"))
    _compile_and_link(sources(), lib, [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
                                       '-DAVFAST_CUDA_ARCHS="emulated"'])
    spec = importlib.util.spec_from_file_location("avfast_cuda_emulated._C_cuda", lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_library(source: Path, out_dir: Path):
    """A stand-alone .cu file with extern "C" entry points, built under the emulation: a ctypes library
    whose `__file__` works with set_max_grid / schedule like the emulated module's."""
    import ctypes

    lib = out_dir / (source.stem + ".so")
    _compile_and_link([source, CONTROL], lib, [])
    library = ctypes.CDLL(str(lib))
    library.__file__ = str(lib)
    return library


def _control(module, name: str):
    import ctypes

    return getattr(ctypes.CDLL(module.__file__), name)


def set_max_grid(module, blocks: int) -> int:
    """Blocks a launch of the emulated `module` really runs from now on; returns the previous value."""
    import ctypes

    fn = _control(module, "avfast_emu_set_max_grid")
    fn.argtypes, fn.restype = [ctypes.c_uint], ctypes.c_uint
    return fn(blocks)


SCHEDULES = ("alternating", "forward", "reverse", "shuffled")  # emu.h's emu::Schedule, in its order


@contextlib.contextmanager
def schedule(module, name: str, seed: int = 0):
    """Within the block, launches of the emulated `module` order threads and blocks by `name` (SCHEDULES)."""
    import ctypes

    fn = _control(module, "avfast_emu_set_schedule")
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_ulonglong], ctypes.c_int
    previous = fn(SCHEDULES.index(name), seed)
    try:
        yield
    finally:
        fn(previous, 0)
