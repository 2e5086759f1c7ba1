"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
RUNNABLE = [b for b in BLOCKS if b.startswith("import torch, avfast")]


def test_readme_has_runnable_examples():
    assert RUNNABLE, "README lost its self-contained `import torch, avfast` example"


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_readme_example_runs(code):
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["v_fused"].shape == (2, 256, 18, 16, 16) and scope["a_fused"].shape == (2, 256, 112)
    assert type(scope["fusion"]).__name__ == "EasyFusion"
