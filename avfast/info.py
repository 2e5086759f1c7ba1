"""`python -m avfast.info [--json]`: versions, built extensions, usable backends, optional parts."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import re
import sys

from ._cli import Parser, reader_may_close_stdout
from ._deps import EXTRAS, PIP_NAMES

# Every package of avfast's extras (pyproject.toml's optional-dependencies but `test`, its developer tools)
# by distribution name -> the extra that installs it, from avfast._deps' table (by import name) and the GPU
# build of ONNX Runtime (the same import name as the CPU one); tests/test_cli_newcomer.py holds it to pyproject.
OPTIONAL = {PIP_NAMES.get(module, module): extra for module, extra in EXTRAS.items()} | {"onnxruntime-gpu": "ort-gpu"}
# Other distributions of the same module (cv2): any of them does the extra's job.
ALTERNATIVES = {"opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")}


def _runtime_dependencies() -> tuple[str, ...]:
    """avfast's runtime requirements from its installed metadata: no extras, and nothing only the
    build needs (pybind11 is a build requirement; the built modules do not import it)."""
    try:
        requirements = importlib.metadata.requires("avfast") or []
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never pip-installed
        return ()
    return tuple(re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requirements if "extra ==" not in r)


def _version(dist: str) -> str | None:
    for name in (dist, *ALTERNATIVES.get(dist, ())):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def collect() -> dict:
    import torch

    import avfast
    from avfast import _ext, backends

    extensions = {name: _ext.load(name) is not None for name in _ext.EXTENSIONS}
    usable = backends.available()
    if backends.triton_importable() and backends.triton_interpreter():
        usable.append("triton-interpreter")
    info = {
        "version": avfast.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dependencies": {d: _version(d) for d in _runtime_dependencies()},
        "extensions": extensions,
        "extension_errors": {n: _ext.error(n) for n in _ext.EXTENSIONS if not extensions[n]},
        "cuda_kernels_compiled": _ext.cuda_kernels_compiled(),
        "cuda_archs": getattr(_ext.load("cuda"), "cuda_archs", None),
        "openmp_threads": _ext.load("cpu").openmp_threads() if extensions["cpu"] else None,
        "torch_cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "backends": usable,
        "optional": {name: _version(name) for name in OPTIONAL},
    }
    return info


def render(info: dict) -> str:
    def yes(x: bool) -> str:
        return "yes" if x else "no"

    lines = [f"avfast {info['version']}  (Python {info['python']}, {info['platform']})", "", "dependencies:"]
    lines += [f"  {k:<12} {v or 'not installed'}" for k, v in info["dependencies"].items()]
    lines += ["", "extensions:"]
    for name, ok in info["extensions"].items():
        extra = "" if ok else f"  ({info['extension_errors'].get(name)})"
        lines.append(f"  {name:<12} {'loaded' if ok else 'missing'}{extra}")
    lines.append(f"  cuda kernels compiled: {yes(info['cuda_kernels_compiled'])}"
                 + (f" for sm_{info['cuda_archs']}" if info["cuda_archs"] else ""))
    lines.append(f"  CUDA device: {', '.join(info['devices']) or 'none'}")
    lines += ["", f"backends usable here: {', '.join(info['backends'])}", "",
              'optional components (pip install "avfast[EXTRA]"):']
    lines += [f"  {k:<24} {v or 'not installed':<16} [{OPTIONAL.get(k, '?')}]" for k, v in info["optional"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m avfast.info", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    def report() -> int:
        info = collect()
        print(json.dumps(info, indent=2) if args.json else render(info))
        return 0

    # `avfast-info` (pyproject's script) calls main() without _cli.program: `avfast-info | head` must end
    # quietly here too
    return reader_may_close_stdout(report)


if __name__ == "__main__":
    from ._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
