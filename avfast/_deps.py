"""Optional packages: which avfast extra installs each (the package's one table: media and codecs, runtimes,
kernels), the one install command (`install_hint`), an import that names it when it fails, and a check a
program runs before it starts working (`check_installed`), so a missing package costs one line, not a
traceback after minutes of work. Imports nothing optional itself. The runtimes raise their own error type
(`avfast.runtime.RuntimeUnavailable`) with the same table and hint.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

# The pip extra of avfast that provides each optional package (import name -> extra).
EXTRAS = {"librosa": "media", "cv2": "media", "av": "media", "soundfile": "media", "scipy": "media",
          "matplotlib": "media", "diffusers": "vae",
          "onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "ort", "tensorrt": "tensorrt", "openvino": "openvino",
          "nncf": "int8", "triton": "triton", "xformers": "xformers"}
PIP_NAMES = {"cv2": "opencv-python-headless"}  # import name -> distribution, where they differ


class MissingDependency(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


class RuntimeUnavailable(RuntimeError):
    """A runtime's package or device is missing here; the message says what to install or use instead.
    Defined here, where programs can catch it without importing the runtimes; `avfast.runtime` exports it."""


def installed(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None  # None also when sys.modules[module] is None
    except (ImportError, ValueError):
        return False


def install_hint(modules: Iterable[str] = (), extras: Iterable[str] = ()) -> str:
    """One command that installs every extra the modules need, and the extras named (two commands run
    together on one line would read as one, and fail). Double quotes: the brackets need quoting in every
    shell, and Windows' cmd takes no single quotes."""
    wanted = sorted({EXTRAS.get(m, m) for m in modules} | set(extras))
    return f'pip install "avfast[{",".join(wanted)}]"'


def require(module: str, purpose: str):
    """Import `module` or raise MissingDependency naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependency(f"{purpose} needs the optional package '{PIP_NAMES.get(module, module)}': "
                                f"{install_hint([module])}") from exc


def missing_packages(modules: Iterable[str]) -> str | None:
    """None when every module is installed here (found, not imported), else which are not and the one
    command that installs them all: `the Python packages 'onnx', 'onnxruntime', not installed here:
    pip install "avfast[onnx,ort]"`."""
    missing = [m for m in dict.fromkeys(modules) if not installed(m)]
    if not missing:
        return None
    names = ", ".join(repr(PIP_NAMES.get(m, m)) for m in missing)
    return (f"the Python package{'s' if len(missing) > 1 else ''} {names}, not installed here: "
            f"{install_hint(missing)}")


def check_installed(modules: Iterable[str], purpose: str) -> None:
    """Raises MissingDependency (one line: what is missing, what to install) unless every module is
    installed. Finds the modules without importing them."""
    missing = missing_packages(modules)
    if missing:
        raise MissingDependency(f"{purpose} needs {missing}")
