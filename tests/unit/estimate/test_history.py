"""The footfall history's arithmetic: visitor days, an hour from its minutes, a day from its
hours and phones (privacy threshold, Little's law), the usual level."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.estimate.history import (
    HOUR_MS,
    HourRow,
    day_of,
    day_start_ms,
    hour_of,
    iso,
    noisy_day,
    pack_point,
    summarise_day,
    summarise_hour,
    usual_for,
    visitor_day_offset_s,
)
from streams.estimate.privacy import DiscreteLaplace

FOUR_AM = 4 * 3600


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def estimate(people: int | None, low: int = 0, high: int = 0, devices: int = 0, reason: str | None = None) -> dict:
    e = {"area": "a", "window_s": 900, "as_of": 0, "devices": devices, "people": people, "people_low": low,
         "people_high": high, "suppressed": people is None}
    if reason:
        e["suppressed_reason"] = reason
    return e


def test_a_visitor_day_runs_from_the_rotation_time_to_the_same_time_next_day() -> None:
    assert visitor_day_offset_s(86_400, FOUR_AM) == FOUR_AM
    assert visitor_day_offset_s(0, FOUR_AM) == FOUR_AM  # rotation off: days still start at 04:00
    assert visitor_day_offset_s(2 * 86_400, FOUR_AM) == FOUR_AM
    assert visitor_day_offset_s(3600, 0) is None  # hourly keys: a day would merge 24 epochs
    night = day_of(ms("2026-11-03T03:59:00Z"), FOUR_AM)
    assert night == day_of(ms("2026-11-02T04:00:00Z"), FOUR_AM)
    assert day_of(ms("2026-11-03T04:00:00Z"), FOUR_AM) == night + 1
    assert iso(day_start_ms(night, FOUR_AM)) == "2026-11-02T04:00:00Z"


def test_the_point_at_the_hour_closes_the_hour_before() -> None:
    assert hour_of(ms("2026-11-02T10:00:00Z")) == hour_of(ms("2026-11-02T09:01:00Z"))
    assert hour_of(ms("2026-11-02T10:01:00Z")) == ms("2026-11-02T10:00:00Z") // HOUR_MS


def test_an_hour_is_the_mean_and_peak_of_its_minutes() -> None:
    points = [pack_point(estimate(p, p - 10, p + 20, p // 2)) for p in (100, 120, 140, 90)]
    row = summarise_hour("a", 7, points)
    assert row == HourRow("a", 7, 4, 112.5, 102.5, 132.5, 140, 130, 160, 56.2, None)


def test_one_withheld_minute_withholds_its_hour_with_the_live_reason() -> None:
    points = [pack_point(estimate(100, 90, 120, 40)), pack_point(estimate(None, reason="differencing"))]
    row = summarise_hour("a", 7, points)
    assert row is not None and row.withheld == "differencing" and row.people_mean is None and row.people_peak is None
    assert summarise_hour("a", 7, []) is None


def hours(means: list[float | None]) -> list[HourRow]:
    return [HourRow("a", h, 60, m, m and m * 0.8, m and m * 1.3, m and int(m * 1.2), None, None, None,
                    None if m is not None else "below_min_count") for h, m in enumerate(means)]


def test_a_day_counts_its_visitors_and_their_stay_by_littles_law() -> None:
    # 10 hours of 48 people and 14 quiet hours withheld: 480 person-hours; 960 visitors.
    day = summarise_day("a", 20_000, hours([48.0] * 10 + [None] * 14), phones=400, min_count=15, per_phone=2.4)
    assert day.visitors == 960 and day.phones == 400 and day.withheld is None
    assert day.people_mean == 20.0  # 480 / 24: a withheld hour counts as 0
    assert day.hours_withheld == 14 and day.people_peak == 57
    assert day.dwell_min == 30.0  # 480 person-hours x 60 / 960 visitors
    # HyperLogLog's 90% range (0.81% standard error) scaled like the visitors.
    assert day.visitors_low == 947 and day.visitors_high == 973


def test_a_day_below_the_threshold_or_not_whole_says_so() -> None:
    small = summarise_day("a", 1, hours([20.0] * 24), phones=14, min_count=15, per_phone=2.4)
    assert small.visitors is None and small.phones is None and small.withheld == "below_min_count"
    partial = summarise_day("a", 1, hours([20.0] * 5), phones=300, min_count=15, per_phone=2.4)
    assert partial.visitors == 720 and partial.people_mean is None and partial.dwell_min is None and partial.hours == 5
    uncountable = summarise_day("a", 1, hours([20.0] * 24), phones=None, min_count=15, per_phone=2.4)
    assert uncountable.withheld == "rotation_not_daily"


def test_the_usual_level_needs_three_weeks_and_gives_their_spread() -> None:
    assert usual_for([100.0, 120.0]) is None
    usual = usual_for([100.0, 120.0, 110.0, 130.0, 90.0])
    assert usual is not None and usual.people == 110.0 and usual.weeks == 5
    assert usual.low == pytest.approx(94.0) and usual.high == pytest.approx(126.0)


def test_differential_privacy_noises_the_visitors_repeatably_and_widens_their_range() -> None:
    mechanism = DiscreteLaplace(epsilon=0.5, sensitivity=2, secret=b"history-test")
    day = summarise_day("a", 20_000, hours([48.0] * 24), phones=400, min_count=15, per_phone=2.0)
    noisy = noisy_day(day, mechanism, 15, 2.0)
    assert noisy == noisy_day(day, mechanism, 15, 2.0)  # the same day rewritten: the same release
    assert noisy.phones is not None and noisy.phones != 400 or mechanism.noise("a|day|20000|400") == 0
    assert noisy.visitors == round(noisy.phones * 2.0)
    widen = mechanism.quantile(0.90) * 2.0
    assert noisy.visitors_low == max(0, int(day.visitors_low - widen)) and noisy.visitors_high >= day.visitors_high + widen
    # Other days draw other noise.
    draws = {noisy_day(summarise_day("a", d, hours([48.0] * 24), 400, 15, 2.0), mechanism, 15, 2.0).phones for d in range(20)}
    assert len(draws) > 5


def test_a_noisy_count_below_the_threshold_is_withheld() -> None:
    mechanism = DiscreteLaplace(epsilon=0.05, sensitivity=2, secret=b"history-test")
    withheld = [noisy_day(summarise_day("a", d, hours([5.0] * 24), 16, 15, 2.0), mechanism, 15, 2.0) for d in range(40)]
    assert any(r.withheld == "below_min_count" and r.visitors is None for r in withheld)
    assert all(r.visitors is None or r.phones >= 15 for r in withheld)
