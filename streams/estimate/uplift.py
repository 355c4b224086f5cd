"""Before/after change of a daily series, optionally against a control area (difference in
differences), with an interval that holds up on four weeks per period. Pure: numpy and scipy.

The estimate. Each day's value is taken on the log scale, so the change is a ratio ("+8.3%")
whatever the area's size. With a control area, each day's value becomes target minus control
on that scale (the log of the ratio), so whatever moves both areas on the same day (weather,
school holidays, a strike) cancels. A period's level is weekday-balanced: the mean of each
weekday's mean, every weekday weighing the same, so a period with five Saturdays and one with
four compare fairly. The change is the after level minus the before level, turned back into a
fraction (exp(d) - 1). Days without data (withheld or missing) are left out; a weekday with no
data in one period is left out of both.

The interval. Days of the same week are not independent (a rainy week, a local event), so the
spread is measured between whole weeks, not days: each period is cut into consecutive 7-day
blocks from its first day, and the standard error of its level comes from how far each week
sits from the level once the weekday pattern is taken out (a cluster-robust variance with weeks
as clusters and the small-sample factor G / (G - 1), which gives exactly the textbook variance
of G weekly means when the weeks are complete). With four weeks per period that spread is
itself uncertain, so the interval uses Student's t with the Welch-Satterthwaite degrees of
freedom (about 6 for 4 + 4 weeks, a t of 1.94 instead of the normal 1.64 at 90%). A period
therefore needs days with data in at least two of its weeks. On synthetic runs of 4 weeks
against 4 (tests/unit/estimate/test_uplift.py) the 90% interval holds the truth 87-89% of the
time, about as wide as the estimates' true spread calls for. What it does not cover: weeks are
taken as independent of one another, so swings lasting well over a week (a fortnight of bad
weather) that no control cancels make it somewhat too narrow; and without a control, anything
else that changed between the periods (season, a trend) counts as part of the change.

`before_mean` and `after_mean` are the target's own weekday-balanced means of the plain values
(mean visitors per day), for reading; the change itself comes from the log scale, so it can
differ a little from their ratio, and with a control it is the change net of the control's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from scipy import stats

from streams.core.errors import ConfigError

#: A period needs days with data in this many of its weeks: the spread between weeks is the
#: interval's only measure of noise, and one week has no spread.
MIN_WEEKS = 2
WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")

Period = tuple[date, date]


@dataclass(frozen=True, eq=False)
class DailySeries:
    """One area's daily values: `days` ascending and unique (datetime64[D]), `values` the same
    length, NaN where there is no figure (withheld below the privacy threshold, or missing)."""

    days: np.ndarray
    values: np.ndarray
    name: str = "the area"

    def __post_init__(self) -> None:
        days = np.asarray(self.days, dtype="datetime64[D]")
        values = np.asarray(self.values, dtype=float)
        if days.ndim != 1 or days.shape != values.shape:
            raise ConfigError(f"daily series of {self.name}: {days.size} days but {values.size} values")
        if days.size > 1 and not np.all(days[1:] > days[:-1]):
            raise ConfigError(f"daily series of {self.name}: days must be ascending and appear once")
        object.__setattr__(self, "days", days)
        object.__setattr__(self, "values", values)

    def on(self, first: date, last: date) -> tuple[np.ndarray, np.ndarray]:
        """Every calendar day from first to last (inclusive) and its value, NaN where absent."""
        days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)
        values = np.full(days.size, np.nan)
        at = np.searchsorted(self.days, days)
        found = at < self.days.size
        found[found] = self.days[at[found]] == days[found]
        values[found] = self.values[at[found]]
        return days, values


@dataclass(frozen=True)
class Uplift:
    """The change from the before to the after period, as fractions (0.083 = +8.3%)."""

    change: float
    low: float
    high: float
    level: float
    #: The target's weekday-balanced mean daily value in each period, over the days used.
    before_mean: float
    after_mean: float
    #: The control's own change over the same days, None without a control.
    control_change: float | None
    days_before: int
    days_after: int
    method: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Level:
    """One period's weekday-balanced log level and the spread of its weeks."""

    level: float
    variance: float
    weeks: int
    days: int


@dataclass(frozen=True, eq=False)
class _PeriodDays:
    """One period's calendar days, the target's and the control's values, and z: the log of the
    target (minus the log of the control), NaN on the days left out."""

    first: date
    days: np.ndarray
    target: np.ndarray
    control: np.ndarray | None
    z: np.ndarray


def _span(period: Period) -> str:
    return f"{period[0].isoformat()} to {period[1].isoformat()}"


def weekday_of(days: np.ndarray) -> np.ndarray:
    """Monday = 0 ... Sunday = 6 (1970-01-01, day 0, was a Thursday)."""
    return (days.astype(np.int64) + 3) % 7


def _log_positive(values: np.ndarray) -> np.ndarray:
    """log of the values; NaN where there is none or it is not positive (no ratio exists)."""
    out = np.full(values.shape, np.nan)
    positive = values > 0  # NaN compares False
    out[positive] = np.log(values[positive])
    return out


def _check_periods(before: Period, after: Period, level: float) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"the interval level must be between 0 and 1 (0.9 for 90%), not {level}")
    for name, (first, last) in (("before", before), ("after", after)):
        if last < first:
            raise ConfigError(f"the {name} period ends ({last}) before it starts ({first})")
        days = (last - first).days + 1
        if days < 7 * MIN_WEEKS:
            raise ConfigError(f"the {name} period {_span((first, last))} has {days} days: an interval needs at least "
                              f"{7 * MIN_WEEKS} (two whole weeks) in each period")
    if before[0] <= after[1] and after[0] <= before[1]:
        raise ConfigError(f"the before period {_span(before)} and the after period {_span(after)} overlap")
    if after[1] < before[0]:
        raise ConfigError(f"the before period {_span(before)} must come before the after period {_span(after)}")


def _period_days(name: str, period: Period, target: DailySeries, control: DailySeries | None, notes: list[str]) -> _PeriodDays:
    """The period's days and values; the days left out are counted in `notes`."""
    days, values = target.on(*period)
    log_target = _log_positive(values)
    has_target = np.isfinite(log_target)
    if not has_target.any():
        raise ConfigError(f"no days with data for {target.name} in the {name} period {_span(period)}")
    if not has_target.all():
        notes.append(f"{target.name} has no figure (withheld, missing or zero) on {int((~has_target).sum())} of the {days.size} "
                     f"days of the {name} period: they are left out")
    if control is None:
        return _PeriodDays(first=period[0], days=days, target=values, control=None, z=log_target)
    _, control_values = control.on(*period)
    log_control = _log_positive(control_values)
    both = has_target & np.isfinite(log_control)
    if not both.any():
        raise ConfigError(f"the control {control.name} has no data on the days {target.name} has in the {name} period "
                          f"{_span(period)}")
    if (has_target & ~both).any():
        notes.append(f"the control {control.name} has no figure on {int((has_target & ~both).sum())} more days of the {name} "
                     "period: they are left out")
    return _PeriodDays(first=period[0], days=days, target=values, control=control_values,
                       z=np.where(both, log_target - log_control, np.nan))


def _period_level(p: _PeriodDays, z: np.ndarray, keep: np.ndarray) -> _Level:
    """The weekday-balanced mean of z over the kept weekdays, and its variance from weekly blocks.

    The level is linear in the days, level = sum(c_d z_d) with c_d = 1 / (W n_w) for weekday w
    (W weekdays kept, n_w days of that weekday with data); each week's score is sum(c_d e_d) over
    its days, e_d the day's departure from its weekday mean; the variance is
    G / (G - 1) * sum(score^2) over the G weeks with data.
    """
    weekday = weekday_of(p.days)
    offset = (p.days - np.datetime64(p.first, "D")).astype(np.int64)
    whole_weeks = max(1, offset.size // 7)
    # A tail of under 7 days joins the last whole week rather than forming a thin block of its own.
    block = np.minimum(offset // 7, whole_weeks - 1)
    used = keep[weekday] & np.isfinite(z)
    w, b, zu = weekday[used], block[used], z[used]
    n_w = np.bincount(w, minlength=7)
    mean_w = np.bincount(w, weights=zu, minlength=7) / np.maximum(n_w, 1)
    c = 1.0 / (int(keep.sum()) * n_w[w])
    score = np.bincount(b, weights=c * (zu - mean_w[w]), minlength=whole_weeks)
    weeks = int(np.count_nonzero(np.bincount(b, minlength=whole_weeks)))
    variance = weeks / (weeks - 1) * float(np.sum(score**2)) if weeks > 1 else math.nan
    return _Level(level=float(mean_w[keep].mean()), variance=variance, weeks=weeks, days=int(used.sum()))


def _plain_mean(p: _PeriodDays, keep: np.ndarray) -> float:
    """The target's weekday-balanced mean on the plain scale, over the days used."""
    weekday = weekday_of(p.days)
    used = keep[weekday] & np.isfinite(p.z)
    n_w = np.bincount(weekday[used], minlength=7)
    sums = np.bincount(weekday[used], weights=p.target[used], minlength=7)
    return float(np.mean(sums[keep] / n_w[keep]))


def _control_change(pre: _PeriodDays, post: _PeriodDays, keep: np.ndarray) -> float | None:
    """The control's own weekday-balanced change over the days used, None without a control."""
    if pre.control is None or post.control is None:
        return None
    # The same days as the target's figures: those where both areas have one.
    log_pre = np.where(np.isfinite(pre.z), _log_positive(pre.control), np.nan)
    log_post = np.where(np.isfinite(post.z), _log_positive(post.control), np.nan)
    return math.expm1(_period_level(post, log_post, keep).level - _period_level(pre, log_pre, keep).level)


def _weekdays_with_data(p: _PeriodDays) -> np.ndarray:
    return np.bincount(weekday_of(p.days[np.isfinite(p.z)]), minlength=7) > 0


def estimate_uplift(target: DailySeries, before: Period, after: Period, control: DailySeries | None = None,
                    level: float = 0.9) -> Uplift:
    """The change of `target` from the `before` to the `after` period (inclusive day ranges),
    net of `control`'s change when one is given, with its `level` interval. See the module
    docstring for the method; raises ConfigError for periods that cannot give an interval."""
    _check_periods(before, after, level)
    notes: list[str] = []
    pre = _period_days("before", before, target, control, notes)
    post = _period_days("after", after, target, control, notes)
    seen_before, seen_after = _weekdays_with_data(pre), _weekdays_with_data(post)
    keep = seen_before & seen_after
    if not keep.any():
        raise ConfigError(f"the before period {_span(before)} and the after period {_span(after)} have no weekday with "
                          "data in both")
    for w in np.flatnonzero(~keep):
        missing_in = "before" if not seen_before[w] else "after"
        notes.append(f"{WEEKDAYS[w]} have no data in the {missing_in} period, so both periods leave them out")

    b, a = _period_level(pre, pre.z, keep), _period_level(post, post.z, keep)
    for name, period, found in (("before", before, b), ("after", after, a)):
        if found.weeks < MIN_WEEKS:
            raise ConfigError(f"only {found.weeks} week of the {name} period {_span(period)} has data: an interval needs "
                              f"days with data in at least {MIN_WEEKS} of its weeks")
        if found.weeks < 4:
            notes.append(f"only {found.weeks} weeks with data in the {name} period: the interval is wide")
    diff = a.level - b.level
    variance = a.variance + b.variance
    # Welch-Satterthwaite: each period's variance rests on (weeks - 1) degrees of freedom.
    spread = b.variance**2 / (b.weeks - 1) + a.variance**2 / (a.weeks - 1)
    dof = variance**2 / spread if spread > 0 else float(b.weeks + a.weeks - 2)
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * math.sqrt(variance)

    control_change = _control_change(pre, post, keep)
    if control is not None:
        method = f"difference in differences against {control.name}, weekly blocks"
    else:
        method = "before and after, weekly blocks"
        notes.append("without a control area, anything else that changed between the periods (season, weather, events) "
                     "counts as part of the change")
    return Uplift(
        change=math.expm1(diff), low=math.expm1(diff - half), high=math.expm1(diff + half), level=level,
        before_mean=_plain_mean(pre, keep), after_mean=_plain_mean(post, keep), control_change=control_change,
        days_before=b.days, days_after=a.days, method=method, notes=notes,
    )
