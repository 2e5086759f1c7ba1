"""Deprecated: the AOT check moved to `avfast.checks.aot` (it imports the models, so it lives above the
kernel package). `python -m avfast.triton.aot` and `from avfast.triton.aot import ...` keep working for
one release with a DeprecationWarning."""
from __future__ import annotations

import warnings

warnings.warn("avfast.triton.aot moved to avfast.checks.aot (python -m avfast.checks.aot); the old name is "
              "removed in the next release", DeprecationWarning, stacklevel=2)

from ..checks.aot import *  # noqa: E402,F401,F403  (deprecated alias, one release; see tests/test_layering.py)
from ..checks.aot import main, parse_ptxas_log, run  # noqa: E402,F401

if __name__ == "__main__":
    from .._cli import program

    program(main)
