"""Estimates from distinct counts (streams/estimate/estimator.py): range, capacity level, suppression."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streams.core.areas import Area
from streams.core.windows import Span
from streams.estimate.estimator import (
    HLL_STANDARD_ERROR,
    EstimateRange,
    PartitionMotion,
    PointRecord,
    SealedCounts,
    ahead_share,
    backlogged,
    build_estimate,
    corrected,
    hll_range,
    is_uncertain,
    level,
    level_reason,
    moving_through,
    points_to_refresh,
    readings_disagree,
    reconcile,
    sealed_through,
)
from streams.pipeline.estimator_pass import next_pass_at

STADIUM = Area(id="stadium", name="Stadium", capacity=60_000, cells=(1038, 1039), kind="venue")
AS_OF = 1_700_000_040_000
CONTRACT_KEYS = {
    "area", "window_s", "as_of", "devices", "people", "people_low", "people_high", "suppressed", "capacity", "level",
}
#: The contract's keys and what crowdpulse adds to them (docs/operations.md, "Estimates").
ESTIMATE_KEYS = CONTRACT_KEYS | {"warming_up"}


# --- the HyperLogLog range -------------------------------------------------------------------


def test_standard_error_is_that_of_16384_registers() -> None:
    assert HLL_STANDARD_ERROR == 1.04 / 128 == 0.008125


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (0, EstimateRange(0, 0, 0)),
        (1, EstimateRange(1, 0, 2)),
        (15, EstimateRange(15, 14, 16)),
        (100, EstimateRange(100, 98, 102)),
        (10_000, EstimateRange(10_000, 9_866, 10_134)),  # spread 133.65
        (52_000, EstimateRange(52_000, 51_305, 52_695)),  # spread 694.97
    ],
)
def test_hll_range_exact_values(devices: int, expected: EstimateRange) -> None:
    assert hll_range(devices) == expected


def test_hll_range_is_the_90_percent_spread_rounded_outwards() -> None:
    for devices in range(0, 2_000_000, 9_973):
        spread = 1.6449 * 0.008125 * devices

        estimate = hll_range(devices)

        assert estimate.low <= estimate.people == devices <= estimate.high
        assert 0 <= (estimate.high - devices) - spread < 1 + 1e-6, devices
        assert 0 <= (devices - estimate.low) - min(spread, devices) < 1 + 1e-6, devices


def test_hll_range_with_a_wider_z() -> None:
    assert hll_range(10_000, z=3.0) == EstimateRange(10_000, 9_756, 10_244)  # spread 243.75


# --- capacity level --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("people", "expected"),
    [
        (0, "ok"),
        (47_999, "ok"),
        (48_000, "warn"),  # 80% of 60,000
        (56_999, "warn"),
        (57_000, "critical"),  # 95% of 60,000
        (60_000, "critical"),
        (90_000, "critical"),
    ],
)
def test_level_thresholds_follow_the_estimate(people: int, expected: str) -> None:
    # A narrow range: the estimate decides.
    assert level(EstimateRange(people, round(people * 0.97), round(people * 1.03)), 60_000) == expected


def test_level_thresholds_for_a_capacity_that_does_not_divide_evenly() -> None:
    # 80% of 7 is 5.6, 95% is 6.65.
    assert [level(EstimateRange(n, n, n), 7) for n in range(9)] == ["ok"] * 6 + ["warn", "critical", "critical"]


def test_level_ignores_the_far_end_of_a_range_that_still_decides() -> None:
    # 40% of capacity with a range up to 90%: the upper end alone does not make it warn or critical.
    assert level(EstimateRange(24_000, 20_000, 54_000), 60_000) == "ok"
    # At 85% with a range reaching 110%: warn, not critical.
    assert level(EstimateRange(51_000, 45_000, 66_000), 60_000) == "warn"


def test_level_is_uncertain_when_the_range_spans_ok_to_critical() -> None:
    # 51% of capacity, range 23,153-252,913 (the demo's false alarm): neither ok nor critical can be said.
    wide = EstimateRange(76_000, 23_153, 252_913)
    assert is_uncertain(wide, 150_000) and level(wide, 150_000) == "uncertain"
    assert "15%-169% of capacity" in level_reason(wide, 150_000)
    # The same spread with the estimate itself at capacity: still uncertain (it could be a third full).
    assert level(EstimateRange(150_000, 50_000, 400_000), 150_000) == "uncertain"
    # At capacity with a range that stays over the warn line: critical.
    assert level(EstimateRange(150_000, 125_000, 300_000), 150_000) == "critical"
    # Spanning the lines but narrower than x2 (70%-100%): the estimate decides.
    assert level(EstimateRange(50_000, 42_000, 60_000), 60_000) == "warn"


# --- the published estimate ------------------------------------------------------------------


def test_estimate_below_min_count_is_suppressed_on_every_channel() -> None:
    estimate = build_estimate(STADIUM, 900, AS_OF, devices=14, min_count=15)

    assert estimate == {
        "area": "stadium",
        "window_s": 900,
        "as_of": AS_OF,
        "devices": None,
        "people": None,
        "people_low": None,
        "people_high": None,
        "suppressed": True,
        "capacity": 60_000,
        "level": "ok",
        "warming_up": False,
        "suppressed_reason": "below_min_count",
    }


def test_estimate_at_min_count_is_published() -> None:
    estimate = build_estimate(STADIUM, 900, AS_OF, devices=15, min_count=15)

    assert estimate == {
        "area": "stadium",
        "window_s": 900,
        "as_of": AS_OF,
        "devices": 15,
        "people": 15,
        "people_low": 14,
        "people_high": 16,
        "suppressed": False,
        "capacity": 60_000,
        "level": "ok",
        "warming_up": False,
    }


@pytest.mark.parametrize(("devices", "min_count"), [(0, 15), (14, 15), (15, 15), (52_000, 15), (0, 0)])
def test_estimate_has_the_contract_shape(devices: int, min_count: int) -> None:
    estimate = build_estimate(STADIUM, 300, AS_OF, devices=devices, min_count=min_count)

    # A withheld estimate also says why.
    assert set(estimate) == ESTIMATE_KEYS | ({"suppressed_reason"} if estimate["suppressed"] else set())
    assert type(estimate["warming_up"]) is bool
    assert type(estimate["area"]) is str
    assert type(estimate["window_s"]) is int
    assert type(estimate["as_of"]) is int
    assert type(estimate["suppressed"]) is bool
    assert type(estimate["capacity"]) is int
    assert estimate["level"] in {"ok", "warn", "critical"}
    counts = [estimate[k] for k in ("devices", "people", "people_low", "people_high")]
    if estimate["suppressed"]:
        assert counts == [None] * 4
    else:
        assert all(type(c) is int for c in counts)
    assert json.loads(json.dumps(estimate)) == estimate


def test_no_devices_with_no_threshold_is_a_published_zero() -> None:
    estimate = build_estimate(STADIUM, 300, AS_OF, devices=0, min_count=0)

    assert (estimate["suppressed"], estimate["people"], estimate["people_low"], estimate["people_high"]) == (
        False, 0, 0, 0,
    )


def test_published_level_follows_the_estimate_not_the_upper_end() -> None:
    # 47,700 people is below 80% of 60,000; the range reaches 48,338, over it: still ok.
    estimate = build_estimate(STADIUM, 900, AS_OF, devices=47_700, min_count=15)

    assert (estimate["people"], estimate["people_high"], estimate["level"]) == (47_700, 48_338, "ok")
    assert "level_reason" not in estimate
    assert math.isclose(estimate["people_high"] - 47_700, 1.6449 * 0.008125 * 47_700, abs_tol=1)


def test_an_uncertain_estimate_says_why() -> None:
    estimate = build_estimate(STADIUM, 900, AS_OF, devices=900, min_count=15, people=EstimateRange(30_000, 12_000, 70_000))
    assert estimate["level"] == "uncertain" and "too wide" in estimate["level_reason"]


def test_points_to_refresh_first_pass_is_the_current_bucket_only() -> None:
    points, skipped = points_to_refresh(["a", "b"], set(), None, newest=100, window_buckets=60, max_catchup=240)
    assert points == [("a", 100), ("b", 100)] and skipped == 0


def test_points_to_refresh_catches_up_every_bucket_stream_time_entered() -> None:
    points, skipped = points_to_refresh(["a"], set(), published_through=100, newest=104, window_buckets=60, max_catchup=240)
    assert points == [("a", b) for b in range(101, 105)] and skipped == 0
    points, skipped = points_to_refresh(["a"], set(), published_through=100, newest=110, window_buckets=60, max_catchup=3)
    assert points == [("a", 108), ("a", 109), ("a", 110)] and skipped == 7


def test_points_to_refresh_republishes_every_window_a_late_event_changed() -> None:
    # Stream time is in bucket 200; an event within grace landed in bucket 198 of area "b".
    points, _ = points_to_refresh(["a", "b"], {("b", 198)}, published_through=200, newest=200, window_buckets=60, max_catchup=240)
    assert points == [("b", 198), ("b", 199), ("b", 200)]
    # A 5-bucket window containing bucket 190 ends at 190..194 at the latest.
    points, _ = points_to_refresh(["a"], {("a", 190)}, published_through=200, newest=200, window_buckets=5, max_catchup=240)
    assert points == [("a", b) for b in range(190, 195)]
    assert points_to_refresh(["a"], set(), 200, 200, 60, 240) == ([], 0)


# --- the estimator's cadence ---------------------------------------------------------------------


def test_catching_up_counts_only_window_ends_every_moving_partition_left_behind() -> None:
    minute = 60_000
    marks = {0: 100 * minute + 5_000, 1: 141 * minute, 2: 139 * minute + 59_000, 3: None}
    # Partition 0 is in bucket 100: bucket 99 is the newest every moving partition has left.
    assert moving_through(marks, {0, 1, 2}, minute) == 99
    # Partition 0 stopped (caught up, or idle): it holds nothing back; 3 has no watermark.
    assert moving_through(marks, {1, 2, 3}, minute) == 138
    assert moving_through(marks, set(), minute) is None
    assert moving_through(marks, {3}, minute) is None


def test_a_partition_whose_watermark_stops_moving_stops_counting_as_moving() -> None:
    motion = PartitionMotion(idle_s=5.0, partitions=3)
    assert motion.moving({0: 1_000, 1: 2_000}, now_s=100.0) == {0, 1, 2}  # 2 not read yet
    assert motion.unread({0: 1_000, 1: 2_000}, {0, 1, 2}) == {2}
    assert motion.moving({0: 1_000, 1: 3_000, 2: None}, now_s=104.0) == {0, 1, 2}
    assert motion.moving({0: 1_000, 1: 4_000}, now_s=106.0) == {1}  # 0 still at 1,000 since 100 s; 2 never read
    assert motion.moving({0: 1_500, 1: 4_000, 2: 7_000}, now_s=107.0) == {0, 1, 2}  # 0 moves again, 2 starts
    assert motion.unread({0: 1_500, 1: 4_000, 2: 7_000}, {0, 1, 2}) == set()


def test_a_partition_with_messages_left_to_apply_is_backlogged_while_its_record_is_fresh() -> None:
    now = 1_000_000
    highwaters = {0: (500, now - 1_000), 1: (800, now - 2_000), 2: (900, now - 60_000), 3: (10, now)}
    applied = {0: 499, 1: 700, 2: 100}
    # 0: log end 500, offset 499 applied: nothing left. 1: 99 messages left. 2: left, but its
    # record is a minute old (worker gone). 3: log end 10, nothing applied yet (-1): 10 left.
    assert backlogged(highwaters, applied, now, fresh_ms=30_000) == {1, 3}
    assert backlogged(highwaters, applied, now, fresh_ms=120_000) == {1, 2, 3}
    assert backlogged({}, applied, now, fresh_ms=30_000) == set()


def test_live_passes_start_at_a_fixed_rate_and_catching_up_leaves_ingest_an_interval() -> None:
    # Live: one interval after the previous start, however long the pass took within it.
    assert next_pass_at(100.0, now=100.6, interval=1.0) == 101.0
    # Live, overran (a 1.5 s pass): the next starts at once, and the lost tick is not run as well.
    assert next_pass_at(100.0, now=101.5, interval=1.0) == 101.5
    assert next_pass_at(101.5, now=101.6, interval=1.0) == 102.5
    # Catching up (a replay or a backlog): a whole interval after the pass ended.
    assert next_pass_at(100.0, now=100.6, interval=1.0, live=False) == 101.6
    assert next_pass_at(100.0, now=101.5, interval=1.0, live=False) == 102.5


# --- sealed spans: counted once -----------------------------------------------------------------
def test_a_bucket_is_sealed_once_every_partition_is_past_its_end_by_the_grace() -> None:
    minute = 60_000
    # Bucket 99 ends at 100 min; with 2 min of grace every watermark must reach 102 min.
    assert sealed_through({0: 102 * minute, 1: 110 * minute}, 2, 2 * minute, minute) == 99
    assert sealed_through({0: 102 * minute - 1, 1: 110 * minute}, 2, 2 * minute, minute) == 98
    # A partition without a watermark (or not seen at all) could still bring anything.
    assert sealed_through({0: 200 * minute, 1: None}, 2, 2 * minute, minute) is None
    assert sealed_through({0: 200 * minute}, 2, 2 * minute, minute) is None
    assert sealed_through({}, 0, 2 * minute, minute) is None


def test_sealed_counts_keep_only_spans_whose_buckets_are_all_sealed() -> None:
    book = SealedCounts(60)
    hour_older_than_5 = Span(300, 3300)  # buckets b-59 .. b-5 of window end b
    last_5 = Span(0, 300)  # b-4 .. b
    through = 95  # window end 100: the older span ends at bucket 95, sealed; the last 5 not
    assert book.sealed(100, hour_older_than_5, through) and not book.sealed(100, last_5, through)
    assert not book.sealed(101, hour_older_than_5, through) and not book.sealed(100, hour_older_than_5, None)
    points = [("a", 100), ("b", 100)]
    known, todo = book.split(points, [last_5, hour_older_than_5])
    assert known == {} and todo == [(("a", 100), [last_5, hour_older_than_5]), (("b", 100), [last_5, hour_older_than_5])]
    book.keep({("a", 100, last_5): 7, ("a", 100, hour_older_than_5): 40, ("b", 100, hour_older_than_5): 50}, through)
    known, todo = book.split(points, [last_5, hour_older_than_5])
    assert known == {("a", 100, hour_older_than_5): 40, ("b", 100, hour_older_than_5): 50}
    assert todo == [(("a", 100), [last_5]), (("b", 100), [last_5])]  # the open span is counted again
    assert len(known) == 2
    # Ahead of need: the next window end's sealed spans not kept yet.
    assert book.missing([("a", 101), ("a", 100)], [last_5, hour_older_than_5], 96) == [(("a", 101), [hour_older_than_5])]
    book.forget(101)
    assert book.split(points, [hour_older_than_5])[0] == {}


def test_sealed_counts_forget_spans_over_a_sealed_bucket_written_again() -> None:
    # A sealed bucket gets events only when Redis lost its data and the windows are rebuilt from
    # Kafka: counts kept meanwhile may be partial, and must be counted again.
    book = SealedCounts(60)
    older = Span(300, 3300)  # buckets b-59 .. b-5
    book.keep({("a", 100, older): 40, ("b", 100, older): 50, ("a", 110, older): 41}, through=105)
    # Live: the dirty buckets are the newest (unsealed): nothing is forgotten.
    assert book.invalidate([("a", 108), ("b", 109)]) == 0
    # Bucket 60 of area a: inside window end 100's older span (41..95) and 110's (51..105).
    assert book.invalidate([("a", 60)]) == 2
    assert book.split([("a", 100), ("b", 100)], [older])[0] == {("b", 100, older): 50}
    # Bucket 98 of area b: after window end 100's older span (41..95): kept.
    assert book.invalidate([("b", 98)]) == 0


def test_the_next_minutes_sealed_spans_are_spread_over_the_passes_left() -> None:
    minute = 60_000
    # 10 s passes at the start of minute 100: six passes left, the last kept free: a fifth each.
    assert ahead_share(10_000, 100 * minute, 100, minute, 10.0) == 2_000
    # 1 s passes: 59 passes share the work.
    assert ahead_share(10_000, 100 * minute, 100, minute, 1.0) == 170
    # Late in the minute what remains is done at once; never more than remains, never nothing.
    assert ahead_share(300, 100 * minute + 55_000, 100, minute, 10.0) == 300
    assert ahead_share(3, 100 * minute, 100, minute, 1.0) == 1
    assert ahead_share(0, 100 * minute, 100, minute, 1.0) == 0


# --- an area and the parts that divide it agree --------------------------------------------------


def test_reconciled_parts_add_up_to_the_whole_and_the_less_certain_moves_most() -> None:
    whole = EstimateRange(1000, 950, 1050)  # x1.1 from end to end
    sure, unsure = EstimateRange(700, 650, 750), EstimateRange(500, 250, 1000)  # x1.15 and x4
    new_whole, (new_sure, new_unsure) = reconcile(whole, [sure, unsure])
    assert abs(new_whole.people - (new_sure.people + new_unsure.people)) <= 1  # the parts held 200 too many
    assert unsure.people - new_unsure.people > 10 * (sure.people - new_sure.people) > 0
    assert 0 < new_whole.people - whole.people < 10  # the whole moves up towards them, least of all
    # The ranges are the areas' own, unchanged.
    assert [(e.low, e.high) for e in (new_whole, new_sure, new_unsure)] == [(950, 1050), (650, 750), (250, 1000)]


def test_estimates_that_agree_are_left_as_they_are() -> None:
    whole, parts = EstimateRange(1000, 900, 1100), [EstimateRange(400, 300, 500), EstimateRange(600, 500, 700)]
    new_whole, new_parts = reconcile(whole, parts)
    assert [(e.people, e.low, e.high) for e in (new_whole, *new_parts)] == [(1000, 900, 1100), (400, 300, 500), (600, 500, 700)]
    # Each keeps its own reading, for the level.
    assert [e.own for e in (new_whole, *new_parts)] == [1000, 400, 600]


def test_the_level_is_uncertain_when_an_areas_own_counts_and_its_divisions_disagree() -> None:
    # Reconciled to 96% of capacity, while its own counts read 88%: neither can be trusted to say critical.
    lifted = reconcile(EstimateRange(1100, 1000, 1200), [EstimateRange(440, 420, 470), EstimateRange(500, 400, 650)])[1][1]
    assert lifted.own == 500 and lifted.people > 500
    assert level(EstimateRange(lifted.people, 400, 650), 600) == "critical"  # the range alone decides
    assert level(lifted, 600) == "uncertain" and readings_disagree(lifted, 600)
    assert "its own counts read 500 (83% of capacity), with the areas it adds up with" in level_reason(lifted, 600)
    # The other way round: its own counts say critical, the division does not.
    assert level(EstimateRange(560, 500, 620, own=580), 600) == "uncertain"
    # Both critical, or both not: the estimate decides as before.
    assert level(EstimateRange(590, 570, 620, own=575), 600) == "critical"
    assert level(EstimateRange(500, 450, 560, own=560), 600) == "warn"
    # A range too wide to decide says so first.
    wide = EstimateRange(580, 100, 900, own=400)
    assert level(wide, 600) == "uncertain" and "too wide to tell ok from critical" in level_reason(wide, 600)


def test_the_level_is_uncertain_when_the_tables_two_estimators_disagree() -> None:
    # Weighed to 97% of capacity; the local fit alone read 98%, the companion alone 88%.
    split = EstimateRange(580, 560, 600, readings=(590, 530))
    assert level(EstimateRange(580, 560, 600), 600) == "critical"  # without its readings
    assert level(split, 600) == "uncertain" and readings_disagree(split, 600)
    assert level_reason(split, 600) == ("two readings of its counts disagree whether it is critical: "
                                        "530 (88% of capacity) against 580 (97%)")
    # The other way round: the weighed estimate under the line, one estimator over it.
    assert level(EstimateRange(540, 500, 570, readings=(520, 575)), 600) == "uncertain"
    # Both on the estimate's side: it decides as before.
    assert level(EstimateRange(580, 560, 600, readings=(590, 575)), 600) == "critical"
    assert level(EstimateRange(500, 450, 560, readings=(480, 520)), 600) == "warn"
    # The division's disagreement is named first when both disagree.
    both = EstimateRange(580, 560, 600, own=500, readings=(590, 530))
    assert "its own counts read 500" in level_reason(both, 600)


def test_a_point_record_carries_the_areas_own_reading() -> None:
    record = PointRecord({("stadium", 900): 12}, EstimateRange(20, 18, 23, own=19))
    assert PointRecord.decode("stadium", record.encode()) == record
    plain = PointRecord({("stadium", 900): 12}, EstimateRange(20, 18, 23))
    assert PointRecord.decode("stadium", plain.encode()) == plain
    # A record written before the own reading was kept.
    assert PointRecord.decode("stadium", b'{"c":[[900,"",12]],"p":[20,18,23]}') == plain
    # And the two estimators' readings, in a key of their own (a record without it reads as before).
    both = PointRecord({("stadium", 900): 12}, EstimateRange(20, 18, 23, own=19, readings=(21, 18)))
    assert PointRecord.decode("stadium", both.encode()) == both
    assert b'"r":[21,18]' in both.encode()


def test_no_estimate_leaves_its_own_range_to_make_the_sum() -> None:
    # Two parts of 100 (90-110) cannot make a whole of 1,000 (999-1,001): each goes as far as its
    # own counts allow, and the sum is left short.
    new_whole, new_parts = reconcile(EstimateRange(1000, 999, 1001), [EstimateRange(100, 90, 110)] * 2)
    assert [e.people for e in new_parts] == [110, 110]
    assert new_whole.people == 999


def test_a_deployments_correction_shifts_or_leans_towards_the_recent_count() -> None:
    z, half = np.zeros(3), np.full(3, 0.4)
    alone = np.array([[-0.1, 0.1]] * 3)
    recent = np.full(3, math.log(0.5))  # N(5) / N(60)
    corrections = [{}, {"kind": "shift", "dz": 0.2, "se": 0.05},
                   {"kind": "blend", "dz": 0.1, "weight": 0.75, "half": 0.15}]
    z2, half2, alone2 = corrected(z, half, alone, recent, corrections)
    # No correction: as it was.
    assert z2[0] == 0.0 and half2[0] == 0.4 and list(alone2[0]) == [-0.1, 0.1]
    # A shift moves the estimate and both readings; its error joins the range.
    assert z2[1] == pytest.approx(0.2) and list(alone2[1]) == pytest.approx([0.1, 0.3])
    assert half2[1] == pytest.approx(math.hypot(0.4, 1.6449 * 0.05))
    # A blend: three quarters of the way to the 5-minute count, then its shift; the model's error
    # counts for the quarter it still weighs, the blend's own in full.
    assert z2[2] == pytest.approx(0.75 * math.log(0.5) + 0.1)
    assert list(alone2[2]) == pytest.approx([0.25 * -0.1 + 0.75 * math.log(0.5) + 0.1, 0.25 * 0.1 + 0.75 * math.log(0.5) + 0.1])
    assert half2[2] == pytest.approx(math.hypot(0.25 * 0.4, 0.15))

