"""Build avfast's native kernels with CMake (pybind11 modules, no libtorch dependency).

`pip install -e .` (ordinary build isolation) runs CMake from here. Environment knobs:
  AVFAST_CUDA=auto|0|1      build the CUDA kernels when nvcc is found / never / always (error without nvcc)
  AVFAST_CUDA_ARCHS="80;86;89;90"   CUDA architectures
  AVFAST_NATIVE=1|0         tune the CPU kernels for this machine (-march=native, default) or build portably
  AVFAST_BUILD_JOBS=N       parallel compile jobs (default: CPU count)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the whole CMake project once; it emits _C_cpu (and _C_cuda)."""

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("AVFAST_CUDA", "auto")
        args = [
            f"-DCMAKE_BUILD_TYPE={os.environ.get('AVFAST_BUILD_TYPE', 'Release')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DAVFAST_CUDA={cuda}",
            f"-DAVFAST_OUTPUT_DIR={out_dir}",
        ]
        if "AVFAST_NATIVE" in os.environ:
            args.append(f"-DAVFAST_NATIVE={'ON' if os.environ['AVFAST_NATIVE'] not in ('0', 'OFF') else 'OFF'}")
        if "AVFAST_CUDA_ARCHS" in os.environ:
            args.append(f"-DAVFAST_CUDA_ARCHS={os.environ['AVFAST_CUDA_ARCHS']}")
        if cuda == "auto" and "CUDACXX" not in os.environ:
            for nvcc in ("/usr/local/cuda/bin/nvcc",):
                if Path(nvcc).exists():
                    args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
                    break
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        jobs = os.environ.get("AVFAST_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *args], check=True)
        subprocess.run(["cmake", "--build", str(build_temp), "--parallel", jobs], check=True)
        if getattr(self, "editable_mode", False) or self.inplace:
            # setuptools copies only the extensions it declared (_C_cpu) into the source tree for
            # an editable install; _C_cuda exists only where nvcc was found, so copy it here.
            for module in out_dir.glob("_C_*" + Path(self.get_ext_filename("x")).suffix):
                if module.parent.resolve() != (ROOT / "avfast").resolve():
                    tmp = ROOT / "avfast" / (module.name + ".tmp")
                    shutil.copy2(module, tmp)
                    os.replace(tmp, ROOT / "avfast" / module.name)  # atomic: never a half-written module


setup(
    ext_modules=[CMakeExtension("avfast._C_cpu")],
    cmdclass={"build_ext": CMakeBuild},
)
