"""avfast._state_dict: the one check behind the model and the vocoder loaders."""
from __future__ import annotations

import torch

from avfast._state_dict import state_dict_problems


def test_a_fitting_state_dict_has_no_problems():
    expected = {"w": torch.zeros(2, 3), "n": torch.zeros((), dtype=torch.long)}
    assert state_dict_problems(expected, {"w": torch.ones(2, 3), "n": torch.ones((), dtype=torch.long)}) == []


def test_every_kind_of_problem_is_named():
    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(4), "d": torch.zeros(1)}
    state = {"b": torch.zeros(5), "c": torch.zeros(4, dtype=torch.long), "d": torch.zeros(1), "x": torch.zeros(1)}
    problems = state_dict_problems(expected, state)
    assert problems == ["missing tensors: a", "unexpected tensors: x", "mis-shaped tensors: b file [5] vs module [3]",
                        "tensors of the wrong kind: c file torch.int64 vs module torch.float32"]


def test_long_lists_are_cut_and_counted():
    expected = {f"k{i:02d}": torch.zeros(1) for i in range(11)}
    (problem,) = state_dict_problems(expected, {})
    assert problem.startswith("missing tensors: k00, k01") and problem.endswith("k07 ... (+3 more)")
