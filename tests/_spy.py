"""What a call really dispatched: the aten / avfast ops seen by a TorchDispatchMode."""
from __future__ import annotations

from typing import Any, Callable

from torch.utils._python_dispatch import TorchDispatchMode


def dispatched_ops(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """(fn(), the names of the ops it dispatched, in order, e.g. "avfast.easy_fusion.default")."""
    seen: list[str] = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy():
        result = fn()
    return result, seen
