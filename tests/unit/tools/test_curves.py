"""The curve tracker behind `crowdpulse calibrate`: the quarter hour before the last, P(15)."""

from __future__ import annotations

import numpy as np

from streams.core.settings import Settings
from streams.estimate.visibility import CURVE_LENGTH, N15, P15
from streams.tools.calibrate import Run, collect


def test_the_quarter_before_is_what_n15_counted_fifteen_minutes_earlier() -> None:
    # P(15) (minutes 30..15 ago) is a span of its own for the worker; the tracker must count the
    # same phones, HyperLogLog and exact, as N(15) did at the window end 15 minutes earlier, and
    # nothing before the first 15 minutes.
    data = collect(Run("match-day", 6_000, 1.5, 101), Settings().areas_path)
    for curves in (data["curves"], data["exact_curves"]):
        assert curves.shape[2] == CURVE_LENGTH
        np.testing.assert_array_equal(curves[15:, :, P15], curves[:-15, :, N15])
        assert not curves[:15, :, P15].any() and curves[15:, :, P15].sum() > 0
