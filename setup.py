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
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


def _stable_pybind11() -> Path:
    """pybind11's CMake config, copied under build/ once per pybind11 version. pip's build isolation
    installs pybind11 into a fresh temporary environment for every build; compiling against that
    path changes every compile command, and the persistent build tree would rebuild everything."""
    import pybind11

    package = Path(pybind11.__file__).resolve().parent
    copy = ROOT / "build" / f"pybind11-{pybind11.__version__}" / "pybind11"
    if not copy.exists():
        tmp = copy.with_name(f"pybind11.tmp{os.getpid()}")
        shutil.copytree(package, tmp, ignore=shutil.ignore_patterns("__pycache__"))
        os.replace(tmp, copy)
    return copy / "share" / "cmake" / "pybind11"


class CMakeBuild(build_ext):
    """Configures and builds the whole CMake project once; it emits _C_cpu (and _C_cuda).

    The CMake build tree is build/cmake-<python ABI>-<generator>, kept between builds: setuptools
    gives every editable build a fresh temporary build_temp, so `pip install -e ".[media]"`
    recompiled every kernel (~60 s) although nothing native had changed. With a persistent tree,
    CMake and ninja rebuild only what changed (nothing, when only Python extras were added).
    """

    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        try:
            import ninja  # noqa: F401

            generator = ["-GNinja", f"-DCMAKE_MAKE_PROGRAM={shutil.which('ninja')}"]
        except ImportError:
            generator = []
        abi = sysconfig.get_config_var("EXT_SUFFIX").strip(".").rsplit(".", 1)[0]
        build_temp = ROOT / "build" / f"cmake-{abi}-{'ninja' if generator else 'make'}"
        build_temp.mkdir(parents=True, exist_ok=True)
        module_dir = build_temp / "modules"  # stable, so an up-to-date build relinks nothing
        cuda = os.environ.get("AVFAST_CUDA", "auto")
        args = [
            f"-DCMAKE_BUILD_TYPE={os.environ.get('AVFAST_BUILD_TYPE', 'Release')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={_stable_pybind11()}",
            f"-DAVFAST_CUDA={cuda}",
            f"-DAVFAST_OUTPUT_DIR={module_dir}",
            *generator,
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
        jobs = os.environ.get("AVFAST_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *args], check=True)
        subprocess.run(["cmake", "--build", str(build_temp), "--parallel", jobs], check=True)
        # The modules this configuration built (a build without CUDA removes a stale _C_cuda there).
        # setuptools copies only the extensions it declared (_C_cpu) into the source tree for an
        # editable install; _C_cuda exists only where nvcc was found, so copy it here too.
        targets = [out_dir]
        if getattr(self, "editable_mode", False) or self.inplace:
            targets.append(ROOT / "avfast")
        suffix = Path(self.get_ext_filename("x")).suffix
        built = {m.name for m in module_dir.glob("_C_*" + suffix)}
        for target in targets[1:]:  # the source tree: no module an earlier build left (stale kernels)
            for stale in target.glob("_C_*" + suffix):
                if stale.name not in built:
                    stale.unlink()
        for module in module_dir.glob("_C_*" + suffix):
            for target in targets:
                target.mkdir(parents=True, exist_ok=True)
                tmp = target / (module.name + ".tmp")
                shutil.copy2(module, tmp)
                os.replace(tmp, target / module.name)  # atomic: never a half-written module


setup(
    ext_modules=[CMakeExtension("avfast._C_cpu")],
    cmdclass={"build_ext": CMakeBuild},
)
