"""Every ```python block of the README runs as written and checks its own claims.

Each block runs alone in a fresh namespace (so it must be complete: imports, inputs, everything) and
must contain at least one `assert`: the README states what its example does, the test holds it to
that. A block can be left out only by the line `<!-- readme-test: skip: REASON -->` right above it,
and the reason is reported as the skip's reason.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: skip: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[int, str, str | None]]:
    text = README.read_text()
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("reason"))
            for m in _BLOCK.finditer(text)]


BLOCKS = _blocks()


def test_readme_has_python_examples():
    assert BLOCKS, "README has no ```python block"


@pytest.mark.parametrize("line,code,skip_reason", BLOCKS, ids=[f"line{line}" for line, _, _ in BLOCKS])
def test_readme_block_runs_and_checks_itself(line, code, skip_reason):
    if skip_reason is not None:
        pytest.skip(f"README.md:{line}: {skip_reason}")
    assert re.search(r"^\s*(assert |torch\.testing\.assert_close\()", code, re.M), (
        f"README.md:{line}: the example checks nothing; add an assert that states what it shows")
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_example"})
