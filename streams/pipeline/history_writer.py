"""Writes the footfall history (docs/footfall.md), on the estimator's leader, pass by pass:

1. every published minute estimate of the history window is kept for its hour in Redis
   (`record`: a republished minute replaces its value);
2. before the estimator deletes an old minute bucket, the bucket's HyperLogLog is merged into
   its area's visitor-day HyperLogLog (`merge_days`; PFMERGE is idempotent, so a replay or a
   repeated merge cannot count a phone twice);
3. an hour no event can change any more (every partition sealed past it) is summarised, a day
   whose every bucket is merged is counted, and both are upserted into PostgreSQL
   (`after_pass`); only then does the progress in Redis move on, so a failed write is retried
   by the next pass and a repeated one replaces the same rows.

HyperLogLog registers never leave Redis: the database gets counts above the privacy threshold.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import psycopg

from streams.core.areas import AreaMap
from streams.core.keys import KeyLayout
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.estimate.estimator import Estimate, area_shares
from streams.estimate.history import (
    DAY_S,
    HOUR_MS,
    DayRow,
    HourRow,
    day_of,
    day_start_ms,
    hour_of,
    noisy_day,
    pack_point,
    summarise_day,
    summarise_hour,
    visitor_day_offset_s,
)
from streams.estimate.privacy import mechanism_for
from streams.pipeline.history_store import HistoryStore
from streams.pipeline.redis_io import Client

log = logging.getLogger(__name__)

#: Buckets one pass merges at most (a first pass, or one after a jump in stream time): older
#: ones are gone by their own expiry.
MERGE_AT_MOST_BUCKETS = 3 * 1440
#: Hours one pass summarises at most, so a replay's catch-up cannot make one pass long.
HOURS_PER_PASS = 48
#: Sources per PFMERGE.
MERGE_SOURCES = 500
#: How long the working keys outlive their use (a worker away longer loses those hours).
KEEP_S = 3 * DAY_S


class HistoryWriter:
    def __init__(self, settings: Settings, areas: AreaMap, client: Client, keys: KeyLayout,
                 store: HistoryStore, metrics: Metrics) -> None:
        self.settings = settings
        self.areas = areas
        self.redis = client
        self.keys = keys
        self.store = store
        self.metrics = metrics
        self.day_offset_s = visitor_day_offset_s(settings.rotation_period_s, settings.rotation_offset_s)
        self.per_phone = {a: 1.0 / (share * settings.sims_per_person)
                          for a, share in area_shares(areas, settings.market_share).items()}
        #: Differential privacy on the daily visitors too, when the live releases have it.
        self.noise = mechanism_for(settings)

    async def record(self, estimates: Sequence[Estimate]) -> None:
        """Keep each minute estimate of the history window for its hour."""
        window = self.settings.history_window_s
        pipe = self.redis.pipeline(transaction=False)
        touched = set()
        for e in estimates:
            if e["window_s"] == window:
                key = self.keys.history_hour(e["area"], hour_of(e["as_of"]))
                pipe.hset(key, str(e["as_of"]), pack_point(e))
                touched.add(key)
        for key in touched:
            pipe.expire(key, KEEP_S)
        if touched:
            await pipe.execute()

    async def merge_days(self, first: int, last: int) -> int:
        """Merge buckets up to `last` into their visitor days, from the bucket after the last
        merged one (or `first` on a first pass; at most MERGE_AT_MOST_BUCKETS back); returns
        the first bucket merged, which the caller deletes from too."""
        state = await self.redis.hget(self.keys.history_state, "merged_through")
        start = first if state is None else max(int(state) + 1, last - MERGE_AT_MOST_BUCKETS + 1)
        if self.day_offset_s is None or start > last:
            return min(first, start)
        if state is None:
            # Only days whose every bucket is merged from here on are counted (a day that began
            # before, or before Redis lost its data, keeps whatever row it has).
            await self.redis.hset(self.keys.history_state, "merged_from", start)
        bucket_ms = self.settings.bucket_ms
        by_day: dict[int, list[int]] = {}
        for b in range(start, last + 1):
            by_day.setdefault(day_of(b * bucket_ms, self.day_offset_s), []).append(b)
        pipe = self.redis.pipeline(transaction=False)
        for area in self.areas.area_ids:
            for day, buckets in by_day.items():
                target = self.keys.history_day(area, day)
                sources = [self.keys.area_bucket(area, b) for b in buckets]
                for i in range(0, len(sources), MERGE_SOURCES):
                    # execute_command: redis-py's cluster pipeline refuses its pfmerge method,
                    # though the keys share the area's slot.
                    pipe.execute_command("PFMERGE", target, *sources[i:i + MERGE_SOURCES])
                pipe.expire(target, KEEP_S)
        pipe.hset(self.keys.history_state, "merged_through", last)
        await pipe.execute()
        return min(first, start)

    async def after_pass(self, sealed_through: int | None) -> None:
        """Summarise the hours sealed since the last pass and count the days fully merged, into
        PostgreSQL; a database error is counted and logged, and the next pass retries."""
        if sealed_through is None:
            return
        try:
            await self._write(sealed_through)
        except (psycopg.Error, OSError) as exc:
            self.metrics.history_errors.inc()
            log.warning("footfall history not written (%s: %s); the next pass retries", type(exc).__name__, exc)

    async def _write(self, sealed_through: int) -> None:
        started = time.perf_counter()
        raw = await self.redis.hgetall(self.keys.history_state)
        state = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        bucket_ms = self.settings.bucket_ms
        last_hour = ((sealed_through + 1) * bucket_ms) // HOUR_MS - 1
        first_hour = state.get("hours_through", last_hour - HOURS_PER_PASS) + 1
        last_hour = min(last_hour, first_hour + HOURS_PER_PASS - 1)
        hours = await self._hours(range(first_hour, last_hour + 1))
        days: list[DayRow] = []
        merged = state.get("merged_through")
        if self.day_offset_s is not None and merged is not None and "merged_from" in state:
            # A day is counted once all its buckets are merged and all its hours summarised.
            last_day = day_of((merged + 1) * bucket_ms, self.day_offset_s) - 1
            last_day = min(last_day, day_of((last_hour + 1) * HOUR_MS, self.day_offset_s) - 1)
            first_day = state.get("days_through", last_day - 1) + 1
            # The first day all of whose buckets were merged (merge_days).
            first_day = max(first_day, day_of((state["merged_from"] - 1) * bucket_ms, self.day_offset_s) + 1)
            days = await self._days(range(first_day, last_day + 1), hours) if first_day <= last_day else []
        if hours or days:
            await self.store.write(hours, days, self.day_offset_s or 0)
        progress: dict[str | bytes, int] = {}
        if last_hour >= first_hour:
            progress["hours_through"] = last_hour
        if days:
            progress["days_through"] = max(d.day for d in days)
            newest = day_start_ms(progress["days_through"], self.day_offset_s or 0)
            await self.store.delete_before(newest - self.settings.history_retention_days * DAY_S * 1000)
        pipe = self.redis.pipeline(transaction=False)
        if progress:
            pipe.hset(self.keys.history_state, mapping=progress)  # type: ignore[arg-type]  # redis-py: invariant keys
        # A key per command: each area's keys live in its own Redis Cluster slot.
        for hour in range(first_hour, last_hour + 1):
            for area in self.areas.area_ids:
                pipe.delete(self.keys.history_hour(area, hour))
        for day in {d.day for d in days}:
            for area in self.areas.area_ids:
                pipe.delete(self.keys.history_day(area, day))
        await pipe.execute()
        self.metrics.history_rows.labels("hour").inc(len(hours))
        self.metrics.history_rows.labels("day").inc(len(days))
        if hours or days:
            log.info("footfall history: %d hour rows, %d day rows written in %.2f s", len(hours), len(days),
                     time.perf_counter() - started)

    async def _hours(self, hours: range) -> list[HourRow]:
        if not len(hours):
            return []
        pipe = self.redis.pipeline(transaction=False)
        pairs = [(area, hour) for hour in hours for area in self.areas.area_ids]
        for area, hour in pairs:
            pipe.hvals(self.keys.history_hour(area, hour))
        rows = []
        for (area, hour), values in zip(pairs, await pipe.execute()):
            row = summarise_hour(area, hour, (v.decode() for v in values))
            if row is not None:
                rows.append(row)
        return rows

    async def _days(self, days: range, fresh: list[HourRow]) -> list[DayRow]:
        offset = self.day_offset_s or 0
        pipe = self.redis.pipeline(transaction=False)
        pairs = [(area, day) for day in days for area in self.areas.area_ids]
        for area, day in pairs:
            pipe.execute_command("PFCOUNT", self.keys.history_day(area, day))  # see merge_days
        counts = await pipe.execute()
        start, end = day_start_ms(days[0], offset), day_start_ms(days[-1] + 1, offset)
        by_key: dict[tuple[str, int], list[HourRow]] = {}
        # This pass's hours are not in the database yet: they are written with the days.
        stored = await self.store.hours(self.areas.area_ids, start, end)
        fresh_keys = {(h.area, h.hour) for h in fresh}
        for h in [*(s for s in stored if (s.area, s.hour) not in fresh_keys), *fresh]:
            if start <= h.hour * HOUR_MS < end:
                by_key.setdefault((h.area, day_of(h.hour * HOUR_MS, offset)), []).append(h)
        s = self.settings
        # A day before the stream began (nothing seen, no hour summarised) gets no row.
        rows = [summarise_day(area, day, by_key.get((area, day), []), int(n), s.min_count, self.per_phone[area], s.scaling_se)
                for (area, day), n in zip(pairs, counts) if n or (area, day) in by_key]
        return await self._private(rows) if self.noise is not None else rows

    async def _private(self, rows: list[DayRow]) -> list[DayRow]:
        """Noise on each day's visitors, charged to the area's daily budget like a live release
        (of the UTC day the visitor day starts on); over budget, the visitors are withheld."""
        assert self.noise is not None
        s, offset = self.settings, self.day_offset_s or 0
        budget_day = {r.day: day_start_ms(r.day, offset) // (DAY_S * 1000) for r in rows}
        pipe = self.redis.pipeline(transaction=False)
        for r in rows:
            pipe.hget(self.keys.dp_budget(budget_day[r.day]), r.area)
        spent = [float(v or 0) for v in await pipe.execute()]
        out = []
        pipe = self.redis.pipeline(transaction=False)
        for r, used in zip(rows, spent):
            if r.phones is None:
                out.append(r)
            elif used + self.noise.epsilon > s.dp_daily_budget + 1e-9:
                out.append(dataclasses.replace(r, visitors=None, visitors_low=None, visitors_high=None, phones=None,
                                               dwell_min=None, withheld="privacy_budget"))
            else:
                out.append(noisy_day(r, self.noise, s.min_count, self.per_phone[r.area]))
                pipe.hincrbyfloat(self.keys.dp_budget(budget_day[r.day]), r.area, self.noise.epsilon)
                pipe.expire(self.keys.dp_budget(budget_day[r.day]), 3 * DAY_S)
        await pipe.execute()
        return out
