"""Every ```python block of the README and of the pages in docs/ runs as written and checks its own claims.

Each block runs alone in a fresh namespace (so it must be complete: imports, inputs, everything) and
must contain at least one `assert`: the documentation states what its example does, the test holds it to
that. A block can be left out only by the line `<!-- readme-test: skip: REASON -->` right above it,
and the reason is reported as the skip's reason. The files are avfast._io.doc_files: README.md and
docs/*.md.

The README is also the front door: it keeps the two commands a fresh machine runs (`make demo`, and
`make test`, which CI's .ci/run calls) and links every page of docs/.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from avfast._io import doc_files

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: skip: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[str, int, str, str | None]]:
    found = []
    for path in doc_files(ROOT):
        text = path.read_text()
        where = path.relative_to(ROOT).as_posix()
        found += [(where, text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("reason"))
                  for m in _BLOCK.finditer(text)]
    return found


BLOCKS = _blocks()


def test_readme_has_python_examples():
    assert any(where == "README.md" for where, _, _, _ in BLOCKS), "README has no ```python block"


def test_docs_pages_are_scanned():
    pages = {p.name for p in doc_files(ROOT)}
    assert {"README.md", "model.md", "sampling.md", "training.md", "export-and-runtimes.md", "kernels.md",
            "benchmarks.md", "claims.md", "architecture.md"} <= pages


@pytest.mark.parametrize("where,line,code,skip_reason", BLOCKS,
                         ids=[f"{where}:{line}" for where, line, _, _ in BLOCKS])
def test_readme_block_runs_and_checks_itself(where, line, code, skip_reason):
    if skip_reason is not None:
        pytest.skip(f"{where}:{line}: {skip_reason}")
    assert re.search(r"^\s*(assert |torch\.testing\.assert_close\()", code, re.M), (
        f"{where}:{line}: the example checks nothing; add an assert that states what it shows")
    exec(compile(code, f"{where}:{line}", "exec"), {"__name__": "readme_example"})


def test_readme_is_a_front_door():
    """Short; the two commands of a fresh machine, the first of them CI's (.ci/run: `make test`); every page
    of docs/ linked."""
    text = README.read_text()
    assert text.count("\n") <= 320, f"README.md has {text.count(chr(10))} lines; move detail into docs/"
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # the command the README gives is the one CI runs
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in text, f"README.md does not link docs/{page.name}"


def test_relative_links_of_the_docs_resolve():
    link = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)(?:#[^)]*)?\)")
    for path in doc_files(ROOT):
        for target in link.findall(path.read_text()):
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)}: broken link {target}"
