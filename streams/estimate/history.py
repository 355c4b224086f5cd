"""The footfall history's arithmetic (docs/footfall.md): the visitor day, an hour's summary of
its minute estimates, a day's summary with its visitors and dwell time, and the usual level for
an hour of the week. Pure: no I/O; the rows it builds are what streams/pipeline/history_store.py
writes.

- A visitor day runs from the pseudonym rotation's time of day to the same time next day
  (04:00-04:00 UTC by default): a day's distinct phones are merged from its minute
  HyperLogLogs, and a merge across a rotation would count every phone twice. So a visitor is
  per day: the same person on two days is two visitors.
- An hour is withheld if any of its minute estimates was (same threshold, same reasons), so the
  history never publishes what the live channels held back.
- Dwell time by Little's law: mean people present over the day = visitors per day x mean stay,
  so mean stay = person-hours of the day / visitors.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from streams.estimate.estimator import HLL_STANDARD_ERROR, Z_90, Estimate
from streams.estimate.privacy import DiscreteLaplace

DAY_S = 86_400
HOUR_MS = 3_600_000


def visitor_day_offset_s(period_s: int, offset_s: int) -> int | None:
    """Seconds after UTC midnight at which a visitor day starts: the rotation's time of day
    (CROWDPULSE_ROTATION_OFFSET_S, 04:00 by default, also when rotation is off), or None when
    days cannot be counted: a rotation period that is not whole days cuts some day in two."""
    if period_s % DAY_S:
        return None
    return offset_s % DAY_S


def day_of(ts_ms: int, offset_s: int) -> int:
    """The visitor day (days since 1970-01-01, starting `offset_s` after midnight) holding ts."""
    return (ts_ms - offset_s * 1000) // (DAY_S * 1000)


def day_start_ms(day: int, offset_s: int) -> int:
    return day * DAY_S * 1000 + offset_s * 1000


def hour_of(as_of_ms: int) -> int:
    """The hour (hours since the epoch) a window end belongs to: (start, end], so the point at
    10:00 closes the 09:00 hour."""
    return (as_of_ms - 1) // HOUR_MS


def pack_point(estimate: Estimate) -> str:
    """One minute estimate as kept for its hour (small: an hour of every area stays in Redis)."""
    if estimate["suppressed"] or estimate["people"] is None:
        return "-" + estimate.get("suppressed_reason", "withheld")
    return f"{estimate['people']},{estimate['people_low']},{estimate['people_high']},{estimate['devices']}"


@dataclass(frozen=True)
class HourRow:
    area: str
    hour: int  # hours since the epoch
    points: int  # minute estimates behind it
    people_mean: float | None
    people_mean_low: float | None
    people_mean_high: float | None
    people_peak: int | None
    people_peak_low: int | None
    people_peak_high: int | None
    phones_mean: float | None
    withheld: str | None  # why the values are None


def summarise_hour(area: str, hour: int, packed: Iterable[str]) -> HourRow | None:
    """An hour from its minute points (pack_point), None without any. The mean's range is the
    mean of the minutes' bounds: a minute's error is mostly the model's, shared by its
    neighbours, so it does not average out over the hour."""
    points = list(packed)
    if not points:
        return None
    withheld = [p[1:] for p in points if p.startswith("-")]
    if withheld:
        return HourRow(area, hour, len(points), None, None, None, None, None, None, None, withheld[0])
    values = np.array([[float(x) for x in p.split(",")] for p in points])
    people, low, high, phones = values.T
    peak = int(np.argmax(people))
    return HourRow(area, hour, len(points), round(float(people.mean()), 1), round(float(low.mean()), 1),
                   round(float(high.mean()), 1), int(people[peak]), int(low[peak]), int(high[peak]),
                   round(float(phones.mean()), 1), None)


@dataclass(frozen=True)
class DayRow:
    area: str
    day: int  # visitor day (day_of)
    hours: int  # hours with a summary (24 on a whole day)
    visitors: int | None  # distinct phones seen in the day, scaled to people
    visitors_low: int | None
    visitors_high: int | None
    phones: int | None  # distinct phones seen (never below the privacy threshold)
    people_mean: float | None  # mean people present over the day
    people_peak: int | None  # the highest minute estimate of the published hours
    hours_withheld: int  # hours withheld by the privacy rules, counted as 0 in the mean
    dwell_min: float | None  # mean stay of a visitor (Little's law)
    withheld: str | None  # why the visitors are None


def summarise_day(area: str, day: int, hours: Sequence[HourRow], phones: int | None, min_count: int,
                  per_phone: float, scaling_se: float = 0.0) -> DayRow:
    """A day from its hours and its distinct phones (None: not countable, see
    visitor_day_offset_s). `per_phone`: people per phone (1 / (market share x SIMs per person)).

    Visitors below the privacy threshold are withheld. The day's mean counts a withheld hour
    (fewer than the threshold's phones: a quiet night) as 0, so it only sums what was
    published; a day with hours missing (the stream began or stopped in it) has no mean."""
    published = [h for h in hours if h.withheld is None and h.people_mean is not None]
    whole = len(hours) == 24
    person_hours = sum(h.people_mean for h in published)  # type: ignore[misc]
    people_mean = round(person_hours / 24, 1) if whole else None
    people_peak = max((h.people_peak for h in published if h.people_peak is not None), default=None)
    withheld_hours = len(hours) - len(published)
    if phones is None or phones < min_count:
        reason = "below_min_count" if phones is not None else "rotation_not_daily"
        return DayRow(area, day, len(hours), None, None, None, None, people_mean, people_peak, withheld_hours, None, reason)
    half = Z_90 * math.hypot(HLL_STANDARD_ERROR, scaling_se)
    visitors = round(phones * per_phone)
    dwell = round(person_hours * 60 / visitors, 1) if whole and visitors > 0 else None
    return DayRow(area, day, len(hours), visitors, math.floor(phones * (1 - half) * per_phone),
                  math.ceil(phones * (1 + half) * per_phone), phones, people_mean, people_peak, withheld_hours, dwell, None)


def noisy_day(row: DayRow, mechanism: DiscreteLaplace, min_count: int, per_phone: float) -> DayRow:
    """The day with differential-privacy noise on its distinct phones (CROWDPULSE_DP_EPSILON):
    the same mechanism as the live releases, a pseudo-random function of (secret, area, day,
    count), so rewriting the same day repeats the same value; the range widened by the noise's
    90% interval; withheld if the noisy count falls below the threshold."""
    if row.phones is None or row.visitors_low is None or row.visitors_high is None:
        return row
    phones = max(0, row.phones + mechanism.noise(f"{row.area}|day|{row.day}|{row.phones}"))
    if phones < min_count:
        return replace(row, visitors=None, visitors_low=None, visitors_high=None, phones=None, dwell_min=None,
                       withheld="below_min_count")
    widen = mechanism.quantile(0.90) * per_phone
    visitors = round(phones * per_phone)
    dwell = None if row.dwell_min is None or row.visitors is None else round(row.dwell_min * row.visitors / max(1, visitors), 1)
    return replace(row, phones=phones, visitors=visitors, visitors_low=max(0, math.floor(row.visitors_low - widen)),
                   visitors_high=math.ceil(row.visitors_high + widen), dwell_min=dwell)


#: The value columns of the rows, in storage and CSV order.
HOUR_FIELDS = tuple(f.name for f in fields(HourRow) if f.name not in ("area", "hour"))
DAY_FIELDS = tuple(f.name for f in fields(DayRow) if f.name not in ("area", "day"))


def utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def iso(ms: int) -> str:
    return utc(ms).isoformat().replace("+00:00", "Z")


def hour_dict(row: HourRow) -> dict[str, Any]:
    """An hourly row as the API serves it (JSON-ready)."""
    return {"area": row.area, "start": iso(row.hour * HOUR_MS), **{c: getattr(row, c) for c in HOUR_FIELDS}}


@dataclass(frozen=True)
class Usual:
    """The usual people present for one hour of the week, from the same hour on earlier weeks."""

    people: float
    low: float  # the 10th percentile of those weeks
    high: float  # the 90th
    weeks: int


def usual_for(values: Sequence[float], min_weeks: int = 3) -> Usual | None:
    """The usual level from the same hour and weekday on earlier weeks (at least `min_weeks`)."""
    if len(values) < min_weeks:
        return None
    v = np.asarray(values, dtype=np.float64)
    return Usual(round(float(np.median(v)), 1), round(float(np.percentile(v, 10)), 1),
                 round(float(np.percentile(v, 90)), 1), len(v))
