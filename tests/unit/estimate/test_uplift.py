"""The before/after change and its interval (streams/estimate/uplift.py): exact on noiseless
series whatever the mix of weekdays, a control that takes out shared shocks, a 90% interval that
holds the truth about 9 times in 10 over seeded synthetic runs of 4 weeks against 4, and the
errors a user can fix."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest

from streams.core.errors import ConfigError
from streams.estimate.uplift import DailySeries, estimate_uplift

START = date(2026, 11, 2)  # a Monday
BEFORE = (START, START + timedelta(days=27))
AFTER = (START + timedelta(days=28), START + timedelta(days=55))
DAYS = np.arange(np.datetime64(START), np.datetime64(START) + 56)
AFTER_MASK = DAYS >= np.datetime64(AFTER[0])
#: The high street's week, Monday first: a busy Saturday, a quiet start of the week.
TARGET_WEEK = np.array([0.9, 0.85, 0.9, 1.0, 1.15, 1.6, 1.2])
CONTROL_WEEK = np.array([1.0, 1.0, 1.0, 1.05, 1.1, 1.3, 0.9])
WEEKDAY = (DAYS.astype(np.int64) + 3) % 7
#: Seeded synthetic runs per Monte Carlo check.
RUNS = 300


def noiseless(base: float, week: np.ndarray, uplift: float = 0.0) -> np.ndarray:
    return base * week[WEEKDAY] * np.where(AFTER_MASK, 1 + uplift, 1.0)


def synthetic_runs(seed: int, uplift: float) -> tuple[np.ndarray, np.ndarray]:
    """RUNS pairs of (target, control) daily series: shocks both areas share (weather, holidays:
    6% a day, lasting a few days, AR(1) 0.5) and each area's own day-to-day noise (4%)."""
    rng = np.random.default_rng(seed)
    phi, shared_sd, own_sd = 0.5, 0.06, 0.04
    shared = np.empty((RUNS, DAYS.size))
    shared[:, 0] = rng.normal(0, shared_sd, RUNS)
    steps = rng.normal(0, shared_sd * math.sqrt(1 - phi**2), (RUNS, DAYS.size))
    for day in range(1, DAYS.size):
        shared[:, day] = phi * shared[:, day - 1] + steps[:, day]
    target = noiseless(2000, TARGET_WEEK, uplift) * np.exp(shared + rng.normal(0, own_sd, shared.shape))
    control = noiseless(5000, CONTROL_WEEK) * np.exp(shared + rng.normal(0, own_sd, shared.shape))
    return target, control


def monte_carlo(seed: int, uplift: float, with_control: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run's estimated change and interval."""
    target, control = synthetic_runs(seed, uplift)
    found = [estimate_uplift(DailySeries(DAYS, target[r]), BEFORE, AFTER, DailySeries(DAYS, control[r]) if with_control else None)
             for r in range(RUNS)]
    return (np.array([u.change for u in found]), np.array([u.low for u in found]), np.array([u.high for u in found]))


def test_a_noiseless_uplift_is_exact_whatever_the_mix_of_weekdays() -> None:
    # 31 days before (five Mondays, Tuesdays and Wednesdays), 24 after (starting on a Friday:
    # four Fridays, Saturdays and Sundays); the change comes with the after period.
    before = (START, START + timedelta(days=30))
    after = (START + timedelta(days=32), START + timedelta(days=55))
    values = 2000 * TARGET_WEEK[WEEKDAY] * np.where(DAYS >= np.datetime64(after[0]), 1.10, 1.0)
    found = estimate_uplift(DailySeries(DAYS, values, "high-street"), before, after)
    assert found.change == pytest.approx(0.10, abs=1e-12)
    assert found.low == pytest.approx(0.10, abs=1e-9) and found.high == pytest.approx(0.10, abs=1e-9)
    assert found.before_mean == pytest.approx(2000 * TARGET_WEEK.mean())
    assert found.after_mean == pytest.approx(2200 * TARGET_WEEK.mean())
    assert (found.days_before, found.days_after) == (31, 24)
    assert found.control_change is None and found.method == "before and after, weekly blocks"
    # The plain means of the two periods are biased by their mix of weekdays: the test can fail.
    in_before = (DAYS >= np.datetime64(before[0])) & (DAYS <= np.datetime64(before[1]))
    in_after = DAYS >= np.datetime64(after[0])
    assert abs(values[in_after].mean() / values[in_before].mean() - 1.10) > 0.01


def test_a_control_takes_out_what_both_areas_share() -> None:
    # Everything 20% down in the after period (a cold December) and a bad-weather day now and then.
    rng = np.random.default_rng(5)
    shared = np.exp(rng.normal(0, 0.1, DAYS.size)) * np.where(AFTER_MASK, 0.8, 1.0)
    target = DailySeries(DAYS, noiseless(2000, TARGET_WEEK, 0.10) * shared, "high-street")
    control = DailySeries(DAYS, noiseless(5000, CONTROL_WEEK) * shared, "east-district")
    found = estimate_uplift(target, BEFORE, AFTER, control)
    assert found.change == pytest.approx(0.10, abs=1e-12)
    assert found.low == pytest.approx(0.10, abs=1e-9) and found.high == pytest.approx(0.10, abs=1e-9)
    assert found.control_change is not None and -0.30 < found.control_change < -0.10
    assert found.method == "difference in differences against east-district, weekly blocks"
    alone = estimate_uplift(target, BEFORE, AFTER)
    assert alone.change < -0.05  # without the control the cold December swamps the +10%


@pytest.mark.parametrize("with_control", [False, True], ids=["alone", "against-control"])
def test_estimates_sit_near_the_truth(with_control: bool) -> None:
    change, _, _ = monte_carlo(seed=11, uplift=0.10, with_control=with_control)
    assert abs(np.mean(change) - 0.10) < 0.005  # no bias from the log scale or the weekday balance
    within_2pp = np.mean(np.abs(change - 0.10) < 0.02)
    # The control cancels the shared shocks: most runs land within 2 points of the truth.
    assert within_2pp > (0.70 if with_control else 0.40)


@pytest.mark.parametrize("with_control", [False, True], ids=["alone", "against-control"])
@pytest.mark.parametrize("truth", [0.10, 0.0], ids=["plus-10pct", "no-change"])
def test_the_90pct_interval_holds_the_truth_about_9_times_in_10(truth: float, with_control: bool) -> None:
    change, low, high = monte_carlo(seed=21 if truth else 22, uplift=truth, with_control=with_control)
    coverage = np.mean((low <= truth) & (truth <= high))
    assert 0.80 <= coverage <= 0.97, f"coverage {coverage:.3f}"
    # Honest width: about what an interval of the estimates' true spread would be (2 x 1.645
    # standard deviations), a little wider for having only four weeks a period, not much wider.
    width_ratio = np.median(high - low) / (2 * 1.645 * np.std(change))
    assert 0.9 < width_ratio < 1.4, f"median width / ideal width {width_ratio:.2f}"


def test_missing_days_are_left_out_and_said() -> None:
    values = noiseless(2000, TARGET_WEEK, 0.10)
    values[[3, 10, 40]] = np.nan  # withheld below the privacy threshold
    values[45] = 0.0  # no ratio exists for a zero
    found = estimate_uplift(DailySeries(DAYS, values, "high-street"), BEFORE, AFTER)
    assert found.change == pytest.approx(0.10, abs=1e-12)
    assert (found.days_before, found.days_after) == (26, 26)
    assert any("on 2 of the 28 days of the before period" in note for note in found.notes)
    assert any("on 2 of the 28 days of the after period" in note for note in found.notes)


def test_days_the_series_does_not_reach_count_as_missing() -> None:
    short = DailySeries(DAYS[7:], noiseless(2000, TARGET_WEEK, 0.10)[7:], "high-street")
    found = estimate_uplift(short, BEFORE, AFTER)
    assert found.change == pytest.approx(0.10, abs=1e-12) and found.days_before == 21


def test_a_weekday_without_data_in_one_period_leaves_both() -> None:
    values = noiseless(2000, TARGET_WEEK, 0.10)
    values[AFTER_MASK & (WEEKDAY == 6)] = np.nan  # every Sunday of the after period withheld
    found = estimate_uplift(DailySeries(DAYS, values), BEFORE, AFTER)
    assert found.change == pytest.approx(0.10, abs=1e-12)
    assert (found.days_before, found.days_after) == (24, 24)
    assert found.before_mean == pytest.approx(2000 * TARGET_WEEK[:6].mean())
    assert "Sundays have no data in the after period, so both periods leave them out" in found.notes


def test_control_days_missing_are_left_out_too() -> None:
    control_values = noiseless(5000, CONTROL_WEEK)
    control_values[[1, 2]] = np.nan
    found = estimate_uplift(DailySeries(DAYS, noiseless(2000, TARGET_WEEK, 0.10)), BEFORE, AFTER,
                            DailySeries(DAYS, control_values, "east-district"))
    assert found.change == pytest.approx(0.10, abs=1e-12) and found.days_before == 26
    assert any("the control east-district has no figure on 2 more days of the before period" in n for n in found.notes)


def test_an_empty_period_is_an_error() -> None:
    values = noiseless(2000, TARGET_WEEK)
    values[~AFTER_MASK] = np.nan
    with pytest.raises(ConfigError, match="no days with data for high-street in the before period 2026-11-02 to 2026-11-29"):
        estimate_uplift(DailySeries(DAYS, values, "high-street"), BEFORE, AFTER)


def test_a_control_without_data_on_the_targets_days_is_an_error() -> None:
    control_values = noiseless(5000, CONTROL_WEEK)
    control_values[AFTER_MASK] = np.nan
    with pytest.raises(ConfigError, match="the control east-district has no data on the days high-street has in the after period"):
        estimate_uplift(DailySeries(DAYS, noiseless(2000, TARGET_WEEK), "high-street"), BEFORE, AFTER,
                        DailySeries(DAYS, control_values, "east-district"))


@pytest.mark.parametrize(("before", "after", "message"), [
    (BEFORE, (START + timedelta(days=20), AFTER[1]), "the before period 2026-11-02 to 2026-11-29 and the after period 2026-11-22 to "
                                                     "2026-12-27 overlap"),
    ((START, START + timedelta(days=12)), AFTER, "has 13 days: an interval needs at least 14 \\(two whole weeks\\)"),
    (BEFORE, (AFTER[0], AFTER[0] + timedelta(days=9)), "the after period 2026-11-30 to 2026-12-09 has 10 days"),
    (AFTER, BEFORE, "the before period 2026-11-30 to 2026-12-27 must come before the after period"),
    ((BEFORE[1], BEFORE[0]), AFTER, "the before period ends \\(2026-11-02\\) before it starts \\(2026-11-29\\)"),
])
def test_periods_that_cannot_give_an_interval_are_errors(before: tuple[date, date], after: tuple[date, date], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        estimate_uplift(DailySeries(DAYS, noiseless(2000, TARGET_WEEK)), before, after)


def test_a_period_with_data_in_one_week_only_is_an_error() -> None:
    values = noiseless(2000, TARGET_WEEK)
    values[7:28] = np.nan
    with pytest.raises(ConfigError, match="only 1 week of the before period .* needs days with data in at least 2 of its weeks"):
        estimate_uplift(DailySeries(DAYS, values), BEFORE, AFTER)


def test_days_out_of_order_are_an_error() -> None:
    with pytest.raises(ConfigError, match="days must be ascending and appear once"):
        DailySeries(DAYS[::-1], np.ones(DAYS.size), "high-street")
