"""What is wrong with a state dict against the module it is meant for: one list, every problem named.

Shared by the model loader (avfast.models.weights) and the vocoder loader (avfast.data.vocoder), which
sit on different layers of the package; each wraps the list in its own error.
"""
from __future__ import annotations

import torch

SHOWN = 8  # names listed per kind of problem; the rest are counted


def _head(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" ... (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def state_dict_problems(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected, mis-shaped and wrong-kind (float vs integer) tensors; empty when `state` fits."""
    common = sorted(set(state) & set(expected))
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{k} file {list(state[k].shape)} vs module {list(expected[k].shape)}"
              for k in common if state[k].shape != expected[k].shape]
    kinds = [f"{k} file {state[k].dtype} vs module {expected[k].dtype}"
             for k in common if state[k].is_floating_point() != expected[k].is_floating_point()]
    labelled = (("missing tensors", missing), ("unexpected tensors", extra), ("mis-shaped tensors", shapes),
                ("tensors of the wrong kind", kinds))
    return [f"{label}: {_head(items)}" for label, items in labelled if items]
