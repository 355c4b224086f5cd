"""The footfall history in PostgreSQL (docs/footfall.md): one row per area and hour, one per area
and visitor day, written with upserts (a replayed hour replaces its row, it never counts twice)
and deleted past the retention. Rows carry the deployment's namespace, so several deployments
or tests can share one database. The worker writes and reads through the async `HistoryStore`;
`crowdpulse report` reads through `read_days`. SQL only: the arithmetic is in
streams/estimate/history.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg

from streams.estimate.history import DAY_FIELDS, HOUR_FIELDS, HOUR_MS, DayRow, HourRow, day_start_ms, utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS crowdpulse_history_hourly (
    namespace text NOT NULL,
    area text NOT NULL,
    hour_start timestamptz NOT NULL,
    points integer NOT NULL,
    people_mean real, people_mean_low real, people_mean_high real,
    people_peak integer, people_peak_low integer, people_peak_high integer,
    phones_mean real,
    withheld text,
    PRIMARY KEY (namespace, area, hour_start)
);
CREATE TABLE IF NOT EXISTS crowdpulse_history_daily (
    namespace text NOT NULL,
    area text NOT NULL,
    day date NOT NULL,
    day_start timestamptz NOT NULL,
    hours integer NOT NULL,
    visitors integer, visitors_low integer, visitors_high integer, phones integer,
    people_mean real, people_peak integer, hours_withheld integer NOT NULL, dwell_min real,
    withheld text,
    PRIMARY KEY (namespace, area, day)
);
"""

HOUR_COLUMNS = HOUR_FIELDS
DAY_COLUMNS = DAY_FIELDS


def _upsert(table: str, key: tuple[str, ...], columns: tuple[str, ...], coverage: str) -> str:
    """Insert, or replace the row with the same key: a replayed hour or a retried pass rewrites
    its row. Never with one that covers less (`coverage`: minutes behind an hour, hours behind
    a day), so a worker that restarts mid-hour on an emptied Redis cannot shrink a whole hour."""
    names = (*key, *columns)
    return (f"INSERT INTO {table} AS old ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
            f"ON CONFLICT ({', '.join(k for k in key if k != 'day_start')}) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
            + f" WHERE EXCLUDED.{coverage} >= old.{coverage}")


UPSERT_HOUR = _upsert("crowdpulse_history_hourly", ("namespace", "area", "hour_start"), HOUR_COLUMNS, "points")
UPSERT_DAY = _upsert("crowdpulse_history_daily", ("namespace", "area", "day", "day_start"), DAY_COLUMNS, "hours")
SELECT_HOURS = (f"SELECT area, hour_start, {', '.join(HOUR_COLUMNS)} FROM crowdpulse_history_hourly "
                "WHERE namespace = %s AND area = ANY(%s) AND hour_start >= %s AND hour_start < %s ORDER BY area, hour_start")
SELECT_DAYS = (f"SELECT area, day, day_start, {', '.join(DAY_COLUMNS)} FROM crowdpulse_history_daily "
               "WHERE namespace = %s AND area = %s AND day >= %s AND day <= %s ORDER BY day")
SELECT_HOUR_OF_WEEK = ("SELECT area, people_mean FROM crowdpulse_history_hourly WHERE namespace = %s "
                       "AND hour_start = ANY(%s) AND withheld IS NULL AND people_mean IS NOT NULL")
SELECT_AREAS = "SELECT DISTINCT area FROM crowdpulse_history_daily WHERE namespace = %s"


def hour_values(namespace: str, row: HourRow) -> tuple[Any, ...]:
    return (namespace, row.area, utc(row.hour * HOUR_MS), *(getattr(row, c) for c in HOUR_COLUMNS))


def day_values(namespace: str, row: DayRow, offset_s: int) -> tuple[Any, ...]:
    start = utc(day_start_ms(row.day, offset_s))
    return (namespace, row.area, start.date(), start, *(getattr(row, c) for c in DAY_COLUMNS))


def hour_from_record(record: Sequence[Any]) -> HourRow:
    area, start, *values = record
    return HourRow(area, int(start.timestamp() * 1000) // HOUR_MS, *values)


def day_dict(record: Sequence[Any]) -> dict[str, Any]:
    """A daily row as the API and the report read it (JSON-ready)."""
    area, day, start, *values = record
    return {"area": area, "day": day.isoformat(), "start": start.isoformat().replace("+00:00", "Z"),
            **dict(zip(DAY_COLUMNS, values))}


class HistoryStore:
    """The worker's connection to the history database: opened on first use, reopened after an
    error (the caller counts the error and retries on its next pass; history is never worth a
    stopped worker)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
            await self._conn.execute(SCHEMA)
        return self._conn

    async def _run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            conn = await self._connection()
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []
        except psycopg.Error:
            await self.close()
            raise

    async def write(self, hours: Sequence[HourRow], days: Sequence[DayRow], day_offset_s: int) -> None:
        """Upsert these rows in one transaction."""
        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cursor:
                if hours:
                    await cursor.executemany(UPSERT_HOUR, [hour_values(self.namespace, h) for h in hours])
                if days:
                    await cursor.executemany(UPSERT_DAY, [day_values(self.namespace, d, day_offset_s) for d in days])
        except psycopg.Error:
            await self.close()
            raise

    async def hours(self, areas: Sequence[str], start_ms: int, end_ms: int) -> list[HourRow]:
        rows = await self._run(SELECT_HOURS, (self.namespace, list(areas), utc(start_ms), utc(end_ms)))
        return [hour_from_record(r) for r in rows]

    async def days(self, area: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
        return [day_dict(r) for r in await self._run(SELECT_DAYS, (self.namespace, area, first, last))]

    async def same_hour_before(self, hour: int, weeks: int) -> dict[str, list[float]]:
        """Each area's mean people in the same hour of the week on the `weeks` weeks before."""
        starts = [utc((hour - 24 * 7 * w) * HOUR_MS) for w in range(1, weeks + 1)]
        out: dict[str, list[float]] = {}
        for area, people in await self._run(SELECT_HOUR_OF_WEEK, (self.namespace, starts)):
            out.setdefault(area, []).append(float(people))
        return out

    async def delete_before(self, cutoff_ms: int) -> None:
        """Retention: rows that start before the cutoff."""
        await self._run("DELETE FROM crowdpulse_history_hourly WHERE namespace = %s AND hour_start < %s",
                        (self.namespace, utc(cutoff_ms)))
        await self._run("DELETE FROM crowdpulse_history_daily WHERE namespace = %s AND day_start < %s",
                        (self.namespace, utc(cutoff_ms)))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()


def read_days(url: str, namespace: str, area: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """The daily rows of one area between two days (inclusive), for `crowdpulse report`."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute(SCHEMA)
        return [day_dict(r) for r in conn.execute(SELECT_DAYS, (namespace, area, first, last)).fetchall()]


def areas_with_days(url: str, namespace: str) -> set[str]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute(SCHEMA)
        return {r[0] for r in conn.execute(SELECT_AREAS, (namespace,)).fetchall()}
