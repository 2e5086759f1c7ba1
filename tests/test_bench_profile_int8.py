"""bench/profile_int8.py: how it sorts OpenVINO's layers into kinds and the int8 ceiling it computes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not an installed package

from bench import profile_int8  # noqa: E402


def _profile(rows: list[tuple[str, str, float]]) -> dict:
    return {"total_ms": sum(ms for _, _, ms in rows),
            "rows": [{"type": t, "kernel": k, "ms": ms, "count": 1} for t, k, ms in rows]}


# Layer times shaped like a paper-128 profile: int8 convolutions at twice bf16's speed, a remainder that int8
# makes a little larger (quantise steps in the elementwise kernels, i8 reorders).
BF16 = _profile([("Convolution", "brgconv_avx512_bf16", 100.0), ("FullyConnected", "brgemm_avx512_bf16", 4.0),
                 ("MatMul", "brgemm_avx512_bf16", 6.0), ("Reorder", "jit_uni_bf16", 12.0),
                 ("Subgraph", "jit_avx512_bf16", 8.0), ("MVN", "jit_avx512_bf16", 4.0)])
INT8 = _profile([("Convolution", "brgconv_avx512_I8", 50.0),
                 ("FullyConnectedQuantizedLegacy", "brgemm_avx512_i8", 2.0), ("MatMul", "brgemm_avx512_i8", 3.0),
                 ("Reorder", "jit_uni_I8", 14.0), ("Subgraph", "jit_avx512_bf16", 12.0),
                 ("MVN", "jit_avx512_bf16", 4.0)])


def test_ceiling_splits_compute_from_the_remainder():
    c = profile_int8.ceiling(INT8, BF16)
    assert (c["int8_compute_ms"], c["int8_remainder_ms"]) == (55.0, 30.0)
    assert (c["bf16_compute_ms"], c["bf16_remainder_ms"]) == (110.0, 24.0)
    assert c["measured"] == pytest.approx(134 / 85, abs=1e-3)
    assert c["same_remainder"] == pytest.approx(134 / (55 + 24), abs=1e-3)
    assert c["compute_only"] == pytest.approx(2.0, abs=1e-3)
    # The order the target depends on: any remainder keeps the FE below the compute ratio.
    assert c["measured"] < c["same_remainder"] < c["compute_only"]


def test_int8_fully_connected_layers_count_as_compute():
    """OpenVINO 2026 names them FullyConnectedQuantizedLegacy: counted as 'other', they would hide in the
    remainder and understate the int8 compute."""
    assert profile_int8.is_compute("FullyConnectedQuantizedLegacy")
    assert not profile_int8.is_compute("Reorder") and not profile_int8.is_compute("Subgraph")
    kinds = profile_int8.summarize(INT8)
    assert kinds["int8 conv/matmul"] == 55.0 and "other" not in kinds


def test_ceiling_refuses_a_profile_without_compute():
    with pytest.raises(ValueError, match="ceiling: both profiles need compute layers; got int8 0.000 ms"):
        profile_int8.ceiling(_profile([("Reorder", "jit_uni_I8", 3.0)]), BF16)
