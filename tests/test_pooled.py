"""Event-pooled AV-Align intervals (avfast.experiments.pooled): the quality report's and the long clips'."""
import math

import numpy as np
import pytest

from avfast.experiments.pooled import pooled_ci, pooled_of, pooled_ratio_ci
from avfast.metrics.av_align import score_from_counts


def test_pooled_weighs_clips_by_their_events_not_alike():
    # clip 0: 1 event, matched (score 1); clip 1: 9 onsets and 9 peaks, 3 matched each way (score 0.2)
    counts = [[1, 1, 1, 1], [3, 9, 3, 9]]
    per_clip_mean = np.mean([score_from_counts(c)[0] for c in counts])
    pooled = pooled_ci(counts, resamples=50)["mean"]
    assert pooled == pytest.approx(score_from_counts([4, 10, 4, 10])[0])   # p = r = 0.4: 0.25
    assert pooled == pytest.approx(0.25) and per_clip_mean == pytest.approx(0.6)


def test_pooled_ratio_is_over_the_reference_and_resamples_pairs():
    reference = [[2, 2, 2, 2]] * 6                        # every event matched: 1.0
    generated = [[1, 2, 1, 1]] * 6                        # p = 0.5, r = 1: 0.5
    out = pooled_ratio_ci(generated, reference, resamples=100)
    assert out["mean"] == pytest.approx(0.5) and out["low"] == pytest.approx(0.5) and out["high"] == pytest.approx(0.5)
    assert math.isnan(pooled_of(np.asarray(generated), np.zeros((6, 4), dtype=np.int64), np.arange(6)))


@pytest.mark.parametrize("bad", [[[1, 2, 3]], [], [[[1, 1, 1, 1]]]])
def test_counts_of_the_wrong_shape_are_refused(bad):
    with pytest.raises(ValueError, match="4 event counts per clip"):
        pooled_ci(bad)


def test_unpaired_sets_are_refused():
    with pytest.raises(ValueError, match="same clips"):
        pooled_ratio_ci([[1, 1, 1, 1]] * 3, [[1, 1, 1, 1]] * 2)
