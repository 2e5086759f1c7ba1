"""Figures of the README and docs/ pages that are not benchmark tables, held to the code that produces them
(the benchmark tables are held to bench/results by tests/test_bench_harness.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from _exported import requires_onnx, tiny_export

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXPORT_DOC = (ROOT / "docs" / "export-and-runtimes.md").read_text()  # the export section moved here from the README
GRAPH_DOC = (ROOT / "avfast" / "export" / "graph.py").read_text()
NODES = re.compile(r"`tiny` model \(18 frames\) it gives ([\d,]+) nodes of (\d+) standard operator types")


def _figures(text: str, where: str) -> tuple[int, int]:
    found = NODES.findall(" ".join(text.split()))
    assert len(found) == 1, f"{where}: the sentence with the tiny graph's node count is gone or repeated"
    nodes, types = found[0]
    return int(nodes.replace(",", "")), int(types)


@requires_onnx
@pytest.mark.slow
def test_graph_size_of_tiny_matches_an_export():
    """'1,194 nodes of 17 standard operator types': the manifest of an export of the tiny preset (the
    count does not depend on the frame count: every shape is folded to a constant)."""
    from avfast.runtime.manifest import read_manifest

    _, path = tiny_export()
    m = read_manifest(path)
    actual = (m["nodes"], len(m["operators"]))
    where = "docs/export-and-runtimes.md"
    assert _figures(EXPORT_DOC, where) == actual, f"{where} says {_figures(EXPORT_DOC, where)}, an export gives {actual}"
    assert _figures(GRAPH_DOC, "avfast/export/graph.py") == actual


def test_no_promise_of_a_default_model_that_already_ships():
    import avfast.models

    avfast.models.default()  # it ships: the sentences below would be stale
    export_doc = (ROOT / "avfast" / "export" / "__main__.py").read_text()
    from avfast._io import doc_files

    pages = [(p.relative_to(ROOT).as_posix(), p.read_text()) for p in doc_files(ROOT)]
    for where, text in (*pages, ("avfast/export/__main__.py", export_doc)):
        flat = " ".join(text.split())
        assert "until the trained default ships" not in flat and "once it ships" not in flat, where
