"""bench/int8_graphs.py: the halves check that tells a round-robin run which straddled a change of machine state."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not an installed package

from bench import int8_graphs  # noqa: E402


def test_halves_give_each_half_its_own_best_bf16_over_int8():
    # 6 rounds: the machine slows in the second half, int8 more than bf16 (as docs/int8.md measured).
    times = {"openvino bf16": [150, 152, 151, 170, 171, 172], "eager-fused bf16": [280, 281, 282, 300, 301, 302],
             "openvino int8": [100, 101, 102, 140, 141, 142]}
    first, second = int8_graphs._halves(times)
    assert first == pytest.approx(151 / 101) and second == pytest.approx(171 / 141)


def test_halves_take_the_best_bf16_row_in_each_half():
    # The best bf16 row changes between the halves: each half takes its own minimum.
    times = {"openvino bf16": [100, 100, 300, 300], "eager-fused bf16": [200, 200, 200, 200],
             "openvino int8": [50, 50, 100, 100]}
    assert int8_graphs._halves(times) == pytest.approx((2.0, 2.0))


def test_halves_refuse_a_single_round():
    with pytest.raises(ValueError, match="halves: need at least 2 rounds, got 1"):
        int8_graphs._halves({"openvino bf16": [1.0], "openvino int8": [1.0]})


def test_ratio_at_the_10th_percentile_sees_through_a_slow_spell():
    # 10 rounds, the middle six slow for int8 only: the medians mislead, the 10th percentiles do not.
    times = {"openvino bf16": [150.0] * 10, "openvino int8": [100.0] * 2 + [140.0] * 6 + [100.0] * 2}
    assert int8_graphs._ratio(times) == pytest.approx(150 / 140)
    assert int8_graphs._ratio(times, percentile=10) == pytest.approx(1.5)
    assert int8_graphs._ratio(times, slice(0, 2)) == pytest.approx(1.5)
