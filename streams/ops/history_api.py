"""The footfall history over HTTP (docs/footfall.md): `GET /api/areas/{area}/history` (JSON, or
CSV with `Accept: text/csv` or `?format=csv`) and the usual level for an hour of the week that
/api/areas shows beside each live estimate. Reads PostgreSQL through
streams/pipeline/history_store.py; parsing and rendering here are pure."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import psycopg

from streams.estimate.estimator import Estimate
from streams.estimate.history import HourRow, Usual, hour_dict, hour_of, usual_for, utc

log = logging.getLogger(__name__)

STEPS = {"hour": 92, "day": 800}  # step -> longest range served, in days
DEFAULT_SPAN_DAYS = {"hour": 2, "day": 7}
#: Weeks of the same hour the usual level is read from.
USUAL_WEEKS = 8


class HistoryReader(Protocol):
    """The history as the API reads it (streams/pipeline/history_store.py)."""

    async def hours(self, areas: Sequence[str], start_ms: int, end_ms: int) -> list[HourRow]: ...
    async def days(self, area: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]: ...
    async def same_hour_before(self, hour: int, weeks: int) -> dict[str, list[float]]: ...


class HistoryQueryError(ValueError):
    """A history request the API answers with 400 and this message."""


@dataclass(frozen=True)
class HistoryQuery:
    start_ms: int
    end_ms: int  # exclusive
    step: str
    csv: bool


def _instant(text: str, name: str) -> int:
    """Epoch ms of an ISO date (midnight UTC) or date and time (UTC unless it says otherwise)."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HistoryQueryError(f"{name}={text[:40]!r} is not an ISO date or date-time (e.g. 2026-11-02 or "
                                "2026-11-02T10:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def parse_query(query: dict[str, str], accept: str, now_ms: int) -> HistoryQuery:
    step = query.get("step", "hour")
    if step not in STEPS:
        raise HistoryQueryError(f"step={step[:20]!r}: use step=hour or step=day")
    fmt = query.get("format", "")
    if fmt not in ("", "json", "csv"):
        raise HistoryQueryError(f"format={fmt[:20]!r}: use format=json or format=csv")
    end = _instant(query["to"], "to") if query.get("to") else now_ms
    start = _instant(query["from"], "from") if query.get("from") else end - DEFAULT_SPAN_DAYS[step] * 86_400_000
    if start >= end:
        raise HistoryQueryError("'from' must be before 'to'")
    if end - start > STEPS[step] * 86_400_000:
        raise HistoryQueryError(f"at most {STEPS[step]} days per request with step={step}")
    wants_csv = fmt == "csv" or (fmt == "" and "text/csv" in accept)
    return HistoryQuery(start, end, step, wants_csv)


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


async def history_rows(store: HistoryReader, area: str, q: HistoryQuery) -> list[dict[str, Any]]:
    if q.step == "hour":
        return [hour_dict(r) for r in await store.hours([area], q.start_ms, q.end_ms)]
    first = utc(q.start_ms).date()
    last = utc(q.end_ms - 1).date()
    return await store.days(area, first, last)


class UsualLevels:
    """The usual people for the hour of the week of each live estimate, from the same hour on
    the USUAL_WEEKS weeks before (at least three): read once per hour, kept in memory."""

    def __init__(self, store: HistoryReader, window_s: int, refresh_s: float = 300.0) -> None:
        self.store = store
        self.window_s = window_s
        self.refresh_s = refresh_s
        self._cache: dict[int, tuple[float, dict[str, Usual]]] = {}

    async def for_hour(self, hour: int) -> dict[str, Usual]:
        cached = self._cache.get(hour)
        if cached is not None and time.monotonic() - cached[0] < self.refresh_s:
            return cached[1]
        found = await self.store.same_hour_before(hour, USUAL_WEEKS)
        levels = {area: usual for area, values in found.items() if (usual := usual_for(values)) is not None}
        self._cache = {hour: (time.monotonic(), levels)}
        return levels

    async def annotate(self, estimates: list[Estimate]) -> list[dict[str, Any]]:
        """The estimates, each of the history window with "usual": {people, low, high, weeks}
        or null (no history for that hour yet)."""
        hours = {hour_of(e["as_of"]) for e in estimates if e["window_s"] == self.window_s}
        try:
            levels = {hour: await self.for_hour(hour) for hour in hours}
        except (psycopg.Error, OSError) as exc:
            # The live figures never wait on the history: without it they go out without "usual".
            log.warning("usual levels unavailable (%s: %s)", type(exc).__name__, exc)
            return [dict(e) for e in estimates]
        out: list[dict[str, Any]] = []
        for e in estimates:
            item: dict[str, Any] = dict(e)
            if e["window_s"] == self.window_s:
                usual = levels[hour_of(e["as_of"])].get(e["area"])
                item["usual"] = asdict(usual) if usual is not None else None
            out.append(item)
        return out
