"""The package's import graph, read from the code: no cycles, and imports point down the layers only.

The layer order is written down here, once (docs/architecture.md explains it):

    programs     __main__ modules, demo, sample (the CLI), info, experiments/, checks/
    pipeline     avfast.pipeline: denoiser + codecs + vocoder, clip in -> clip out
    export       avfast/export: ONNX / TensorRT / OpenVINO files from a model (and runtimes made on demand)
    runtime      avfast/runtime: denoisers that load exported files (or wrap the PyTorch model)
    diffusion, train, distill
    models, data, metrics   (data/ and metrics/ are kernel-free)
    nn
    ops
    triton, backends, _ext
    bottom       _io, _deps, _precision, _state_dict, _cli, _memory, _figures, _numba, heap

Every `import` and `from ... import` is read with `ast`, at module level and inside functions alike
(relative imports resolved; `from pkg import name` counts as an import of pkg.name when that is a
module). A module may import its own layer's modules and any lower layer's, never a higher one's; the
module graph and the package graph (avfast.<package>) must both be free of cycles. The root package
`avfast/__init__.py` is a facade (it imports ops eagerly, the rest on first attribute access) and is
not a source here; a module that imports the root counts as importing the "programs" layer.

Deprecated aliases kept for one release are the only exceptions, listed in DEPRECATED_EDGES.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "avfast"

# Top to bottom. Each entry: the layer's name and the avfast.<first component> names in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("programs", ("demo", "sample", "info", "experiments", "checks")),
    ("pipeline", ("pipeline",)),
    ("export", ("export",)),
    ("runtime", ("runtime",)),
    ("diffusion, train", ("diffusion", "train", "distill")),
    ("models, data, metrics", ("models", "data", "metrics")),
    ("nn", ("nn",)),
    ("ops", ("ops",)),
    ("kernels", ("triton", "backends", "_ext")),
    ("bottom", ("_io", "_deps", "_precision", "_state_dict", "_cli", "_memory", "_figures", "_numba", "heap")),
]
KERNEL_FREE = ("data", "metrics")  # beside models, and import no kernel package
KERNEL_PACKAGES = ("nn", "ops", "triton", "backends", "_ext")
# Runtime libraries stay inside runtime/ and export/ (and, lazily, the tools that score with them).
RUNTIME_LIBRARIES = ("onnxruntime", "tensorrt", "openvino")
RUNTIME_LIBRARY_USERS = ("runtime", "export", "metrics.embeddings", "checks")

# (importer, imported): deprecated aliases that forward to a name's new home, removed in the next release.
DEPRECATED_EDGES = {
    ("avfast.triton.aot", "avfast.checks.aot"),            # python -m avfast.triton.aot
    ("avfast.models.weights", "avfast.models.pretrained"),  # avfast.models.weights.from_pretrained
    ("avfast.runtime", "avfast.export.pipeline"),           # avfast.runtime.create(name, model) exporting
}

RANK = {package: rank for rank, (_, packages) in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_graph() -> tuple[set[str], list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """(modules, [(importer, avfast module, line)], [(importer, outside module, line)])."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    internal, external = [], []
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                if target == "avfast" or target.startswith("avfast."):
                    while target not in files and "." in target:
                        target = target.rpartition(".")[0]
                    internal.append((name, target, node.lineno))
                else:
                    external.append((name, target, node.lineno))
    return set(files), internal, external


MODULES, EDGES, EXTERNAL = read_graph()


def component(module: str) -> str:
    """avfast.<first component>, or "avfast" for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "avfast"


def rank(module: str) -> int:
    if module == "avfast" or module.split(".")[-1] == "__main__":
        return 0  # the root facade and every `python -m` program count as programs
    try:
        return RANK[component(module)]
    except KeyError:
        raise AssertionError(f"{module} is in no layer: add avfast.{component(module)} to LAYERS in "
                             f"tests/test_layering.py and to docs/architecture.md") from None


def checked_edges() -> list[tuple[str, str, int]]:
    return [(a, b, line) for a, b, line in EDGES
            if a != b and a != "avfast" and (a, b) not in DEPRECATED_EDGES]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return found


def test_the_graph_is_read():
    assert len(MODULES) > 50 and len(EDGES) > 200
    assert ("avfast.pipeline", "avfast.export.runtimes") in {(a, b) for a, b, _ in EDGES}
    # Function-level imports are read too (the deprecated alias imports inside a function).
    assert ("avfast.models.weights", "avfast.models.pretrained") in {(a, b) for a, b, _ in EDGES}


def test_every_module_has_a_layer():
    for module in MODULES:
        rank(module)


def test_no_module_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in checked_edges():
        graph[a].add(b)
    assert not cycles(graph), f"import cycles between modules: {cycles(graph)}"


def test_no_package_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in checked_edges():
        if component(a) != component(b):
            graph[component(a)].add(component(b))
    assert not cycles(graph), f"import cycles between packages: {cycles(graph)}"


def test_imports_point_down():
    upward = [f"{a}:{line} imports {b} ({LAYERS[rank(a)][0]} -> {LAYERS[rank(b)][0]})"
              for a, b, line in checked_edges() if rank(b) < rank(a)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_data_and_metrics_are_kernel_free():
    bad = [f"{a}:{line} imports {b}" for a, b, line in checked_edges()
           if component(a) in KERNEL_FREE and component(b) in KERNEL_PACKAGES]
    assert not bad, "\n".join(bad)


def test_runtime_libraries_stay_in_runtime_and_export():
    bad = [f"{a}:{line} imports {b}" for a, b, line in EXTERNAL
           if b.split(".")[0] in RUNTIME_LIBRARIES
           and not any(a == f"avfast.{u}" or a.startswith(f"avfast.{u}.") for u in RUNTIME_LIBRARY_USERS)]
    assert not bad, "\n".join(bad)


def test_the_kernel_package_knows_no_model():
    bad = [f"{a}:{line} imports {b}" for a, b, line in EDGES
           if component(a) in ("triton", "ops", "backends", "_ext") and (a, b) not in DEPRECATED_EDGES
           and component(b) in ("models", "train", "diffusion", "nn")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("old,new", [("avfast.models.weights", "from_pretrained")])
def test_deprecated_aliases_warn_and_forward(old, new):
    import importlib

    import avfast.models

    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match="next release"):
        alias = getattr(module, new)
    assert alias is avfast.models.from_pretrained
