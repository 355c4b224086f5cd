"""The evaluation's privacy checks against known answers: which window points span a pseudonym-key
rotation, the minute-to-minute jump statistic, the rotation check (a faithful pipeline shows HLL
error only, a double count shows +100%), the schedule an evaluation runs with, and the cost of
differential-privacy noise against the same run without it."""

from __future__ import annotations

import numpy as np
import pytest

from producers.truth import TruthTable
from streams.core.clock import clock_seconds
from streams.core.rotation import NO_ROTATION, Rotation
from streams.tools.evaluate.options import DP_RELEASES_PER_POINT
from streams.tools.evaluate.report import format_table
from streams.tools.evaluate.run import dp_env
from streams.tools.evaluate.score import (
    dp_cost,
    evaluation_rotation,
    max_minute_change,
    rotation_check,
    rotations_between,
    spans_rotation,
)

MIN = 60_000
DAY = 86_400_000
ROT = Rotation(period_s=86_400, offset_s=15 * 3600, overlap_s=3600)  # 15:00 UTC
BOUNDARY = ROT.boundary_ms(20_000)
START = BOUNDARY - 90 * MIN  # a 180-minute run with the rotation in its middle
T = 180


def test_a_window_spans_a_rotation_when_the_rotation_lies_strictly_inside_it() -> None:
    as_of = np.array([BOUNDARY, BOUNDARY + MIN, BOUNDARY + 4 * MIN, BOUNDARY + 5 * MIN, BOUNDARY + 59 * MIN])
    assert spans_rotation(as_of, 300, ROT).tolist() == [False, True, True, False, False]
    assert spans_rotation(as_of, 3600, ROT).tolist() == [False, True, True, True, True]
    assert not spans_rotation(as_of, 3600, NO_ROTATION).any()


def test_max_minute_change_skips_gaps_zeros_and_unselected_minutes() -> None:
    values = np.array([100.0, 110.0, np.nan, 120.0, 60.0, 0.0, 50.0])
    every = np.ones(len(values), dtype=bool)
    assert max_minute_change(values, every) == pytest.approx(1.0)  # 60 -> 0; 0 -> 50 has no base
    assert max_minute_change(values, np.arange(len(values)) == 1) == pytest.approx(0.1)
    assert max_minute_change(values, np.arange(len(values)) == 3) is None  # from a missing value
    assert max_minute_change(values, ~every) is None


def test_an_evaluation_rotates_at_the_middle_of_its_run_unless_told() -> None:
    start, end = BOUNDARY - 150 * MIN, BOUNDARY + 150 * MIN
    assert evaluation_rotation(Rotation(), start, end, None, 60) == ROT
    assert evaluation_rotation(Rotation(), start, end, 4 * 3600, 60) == Rotation()
    # Rounded down to a whole bucket, as the schedule check demands.
    assert evaluation_rotation(Rotation(), BOUNDARY, BOUNDARY + 90_000, None, 60).offset_s == 15 * 3600
    assert evaluation_rotation(NO_ROTATION, start, end, None, 60) == NO_ROTATION
    assert rotations_between(ROT, start, end) == [BOUNDARY]
    assert rotations_between(ROT, BOUNDARY, BOUNDARY + DAY) == []  # the ends are not inside
    assert rotations_between(ROT, start, end + DAY) == [BOUNDARY, BOUNDARY + DAY]
    assert rotations_between(NO_ROTATION, start, end) == []


def truth_table() -> TruthTable:
    """A city of 2,000 devices all heard every minute, and a corner of 10 (below k = 15)."""
    minutes = np.arange(T)
    people = np.column_stack([np.full(T, 2000), np.full(T, 10)]).astype(np.int64)
    distinct = np.stack([people, people], axis=2)  # (T, A, W): windows 300 s and 3600 s
    return TruthTable(["city", "corner"], (300, 3600), START + (minutes + 1) * MIN, people, people, people, distinct)


def estimates(truth: TruthTable, factor) -> dict:
    out = {}
    for t, as_of in enumerate(truth.as_of.tolist()):
        for a, area in enumerate(truth.area_ids):
            for i, w in enumerate(truth.windows_s):
                devices = int(round(truth.distinct[t, a, i] * factor(as_of, w)))
                out[(area, w, as_of)] = {"area": area, "window_s": w, "as_of": as_of, "devices": devices,
                                         "suppressed": devices < 15}
    return out


def test_a_faithful_pipeline_shows_hll_error_across_the_rotation() -> None:
    truth = truth_table()
    check = rotation_check(truth, estimates(truth, lambda as_of, w: 1.005), ROT, "city", START)
    assert check["rotation_points"] == 4 + 59  # the city's spanning 300 s and 3600 s windows
    assert check["other_points"] == 2 * T - 63  # the corner is below k and not scored
    assert check["rotation_hll_p95_rel_error"] == pytest.approx(0.005) == check["other_hll_p95_rel_error"]
    assert check["rotation_hll_bias"] == pytest.approx(0.005)
    assert check["rotation_max_minute_change"] == 0.0 == check["other_max_minute_change"]
    assert [j["window_s"] for j in check["rotation_jumps"]] == [300, 3600]


def test_a_double_count_across_the_rotation_shows_as_plus_100_percent_and_a_jump() -> None:
    truth = truth_table()
    naive = estimates(truth, lambda as_of, w: 2.0 if as_of - w * 1000 < BOUNDARY < as_of else 1.0)
    check = rotation_check(truth, naive, ROT, "city", START)
    assert check["rotation_hll_p95_rel_error"] == pytest.approx(1.0) and check["rotation_hll_bias"] == pytest.approx(1.0)
    assert check["other_hll_p95_rel_error"] == 0.0
    assert check["rotation_max_minute_change"] == pytest.approx(1.0) and check["other_max_minute_change"] == 0.0
    # Without a rotation in the schedule every point is an "other" one.
    assert rotation_check(truth, naive, NO_ROTATION, "city", START)["rotation_points"] == 0


def test_the_jumps_leave_out_windows_that_fill_from_the_start_of_the_run() -> None:
    truth = truth_table()
    truth.distinct[:60, 0, 1] = np.arange(1, 61) * 2000 // 60  # the hourly window fills up first
    check = rotation_check(truth, estimates(truth, lambda as_of, w: 1.0), ROT, "city", START)
    hourly = check["rotation_jumps"][1]
    assert hourly["other_max_change"] == 0.0 == hourly["exact_other_max_change"]


def test_dp_cost_sets_the_noisy_error_beside_the_error_without_noise() -> None:
    truth = truth_table()
    plain = estimates(truth, lambda as_of, w: 1.0)
    noisy = {key: dict(est, devices=est["devices"] + 20) for key, est in plain.items()}
    withheld = ("city", 300, int(truth.as_of[5]))
    noisy[withheld] = dict(noisy[withheld], devices=None, suppressed=True, suppressed_reason="privacy_budget")
    cost = dp_cost(truth, noisy, plain, 15, large=1000)
    assert cost["points"] == 2 * T - 1 and cost["withheld_points"] == 1
    assert cost["dp_p50_rel_error"] == pytest.approx(0.01) and cost["hll_p95_rel_error"] == 0.0
    assert cost["large_points"] == 2 * T - 1 and cost["large_dp_p95_rel_error"] == pytest.approx(0.01)
    assert dp_cost(truth, noisy, {}, 15)["points"] == 0  # no run without noise: nothing to compare


def test_dp_settings_of_an_evaluation() -> None:
    env = dp_env(0.1, (300, 900, 3600), {})
    assert float(env["CROWDPULSE_DP_DAILY_BUDGET"]) == pytest.approx(0.1 * 3 * 1440 * DP_RELEASES_PER_POINT)
    assert float(env["CROWDPULSE_DP_EPSILON"]) == 0.1 and len(env["CROWDPULSE_DP_SECRET"]) == 32
    given = dp_env(0.1, (300,), {"CROWDPULSE_DP_DAILY_BUDGET": "5", "CROWDPULSE_DP_SECRET": "s3cret"})
    assert (given["CROWDPULSE_DP_DAILY_BUDGET"], given["CROWDPULSE_DP_SECRET"]) == ("5", "s3cret")
    assert clock_seconds("04:00") == 14_400 and clock_seconds("15:30") == 55_800
    for bad in ("4", "24:00", "04:60", "ab:cd"):
        with pytest.raises(ValueError, match="HH:MM"):
            clock_seconds(bad)


def test_the_table_shows_the_rotation_and_the_dp_cost() -> None:
    truth = truth_table()
    plain = estimates(truth, lambda as_of, w: 1.0)
    report = {**rotation_check(truth, plain, ROT, "city", START), "rotation_at": ["2024-10-04T15:00Z"],
              "rotation_overlap_s": 3600, **_run_facts()}
    report["dp"] = {"epsilon": 0.1, "sensitivity": 2, "daily_budget": 864.0, "budget_note": "default", "noise_90": 46,
                    "released_messages": 10, "withheld_messages": 0, **dp_cost(truth, plain, plain)}
    table = format_table(report)
    assert "rotation at 2024-10-04T15:00Z (overlap 60 min): 63 points span it" in table
    assert "epsilon 0.1 per release" in table and "withheld for budget" in table
    assert "crosses no pseudonym-key rotation" in format_table(_run_facts())


def _run_facts() -> dict:
    return {"scenario": "test", "quick": True, "seed": 1, "start": "a", "end": "b", "simulated_min": T,
            "population": {"people": 1, "visitors": 0, "in-commuters": 0, "visible_devices": 1, "visible_m2m": 0,
                           "devices_all_operators": 1},
            "events": 1, "publish_wall_s": 1.0, "events_in": 1, "counted": 1, "deadletter": 0, "late": 0,
            "points_skipped": 0, "missing_points": 0, "min_people": 1000, "areas": [], "window_s": 900,
            "hll_p95_rel_error": None, "occupancy_mape": None, "occupancy_bias": None, "naive_mape": None,
            "worst_area": None, "worst_area_mape": None, "range_coverage": None, "surge_episodes": [], "out_dir": "/tmp/x",
            "warming_minutes": 0, "warming_mape": None, "warming_bias": None, "warming_coverage": None}
