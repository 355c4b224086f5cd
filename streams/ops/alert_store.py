"""Alert state in Redis, and the alert pass the leader runs after every estimator pass.

Keys (streams/core/keys.py, all under the ``{alerts}`` hash tag so one transaction covers them):
the engine state per area, the alert records, an outbox of events for ``crowd.alerts`` and a
queue for the webhook. A pass writes the new engine state, the records its transitions create
or close, and their events *in one MULTI/EXEC*: a crash before it changes nothing (the next
pass re-evaluates), a crash after it loses nothing (the outbox is published by the next
leader). An id already in the records is never stored or queued again, so a replay, a
restarted worker or a rebuilt engine state cannot fire an alert twice.

Acknowledgements come from any worker's HTTP API; they and the leader's pass both change
records under WATCH, so neither overwrites the other.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable, Iterable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from streams.ops.alerts import (
    AreaRules,
    Transition,
    acknowledge,
    evaluate_area,
    event,
    fired_record,
    load_rules,
    point_value,
    reconcile,
    resolve,
)
from streams.core.areas import AreaMap
from streams.core.keys import KeyLayout
from streams.core.metrics import Metrics
from streams.core.settings import Settings

log = logging.getLogger(__name__)

KEEP_RESOLVED = 500
WEBHOOK_QUEUE_MAX = 1000
OUTBOX_BATCH = 200


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


class AlertStore:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self.redis = client
        self.keys = keys

    async def engine_states(self) -> dict[str, dict]:
        raw = await self.redis.hgetall(self.keys.alert_engine)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def recent_points(self, wanted: Mapping[tuple[str, int], int | None]) -> dict[tuple[str, int], list[dict]]:
        """Estimates from each (area, window)'s series (written by streams/pipeline/hll_store.py) with
        as_of >= the given minimum (None: the whole series), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        order = list(wanted)
        for area, window in order:
            low = wanted[(area, window)]
            pipe.zrangebyscore(self.keys.area_series(area, window), "-inf" if low is None else low, "+inf")
        results = await pipe.execute() if order else []
        return {key: [json.loads(v) for v in raw] for key, raw in zip(order, results)}

    async def commit(
        self, states: Mapping[str, dict], transitions: Iterable[Transition], rules: Mapping[str, AreaRules], webhook: bool
    ) -> list[dict]:
        """One pass, atomically: engine states, records, and the events to publish. Returns
        the events queued (a fired id that already exists queues nothing)."""
        transitions = list(transitions)
        key = self.keys.alert_records
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    ids = sorted({t.alert_id for t in transitions})
                    current = dict(zip(ids, await pipe.hmget(key, ids))) if ids else {}
                    changed: dict[str, dict] = {}
                    events: list[dict] = []
                    for t in transitions:
                        record = changed.get(t.alert_id)
                        if record is None and current.get(t.alert_id):
                            record = json.loads(current[t.alert_id])
                        if t.event == "fired":
                            if record is not None:
                                continue  # already raised (replay, restart, rebuilt state)
                            record = fired_record(rules[t.area], t)
                        else:
                            if record is None:
                                continue
                            resolved = resolve(record, t)
                            if resolved is None:
                                continue
                            record = resolved
                        changed[t.alert_id] = record
                        events.append(event(record, t.event))
                    pipe.multi()
                    if states:
                        pipe.hset(self.keys.alert_engine, mapping={a: _dumps(s) for a, s in states.items()})
                    if changed:
                        pipe.hset(key, mapping={i: _dumps(r) for i, r in changed.items()})
                    self._queue(pipe, events, webhook)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        if any(e["event"] == "resolved" for e in events):
            await self.trim_resolved()
        return events

    async def acknowledge(self, alert_id: str, by: str, wall_ms: int, webhook: bool) -> dict:
        """firing -> acknowledged. KeyError: no such alert; AlertConflict: already resolved.
        Acking twice is harmless and returns the record unchanged (no second event)."""
        key = self.keys.alert_records
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, alert_id)
                    if raw is None:
                        raise KeyError(alert_id)
                    record = json.loads(raw)
                    acked = acknowledge(record, by, wall_ms)
                    if acked is None:
                        await pipe.reset()
                        return record
                    pipe.multi()
                    pipe.hset(key, alert_id, _dumps(acked))
                    self._queue(pipe, [event(acked, "acknowledged")], webhook)
                    await pipe.execute()
                    return acked
                except WatchError:
                    continue

    def _queue(self, pipe: Any, events: list[dict], webhook: bool) -> None:
        if not events:
            return
        bodies = [_dumps(e) for e in events]
        pipe.rpush(self.keys.alert_outbox, *bodies)
        if webhook:
            pipe.rpush(self.keys.alert_webhook_queue, *bodies)
            # A webhook that is down for long must not grow Redis without bound: keep the newest.
            pipe.ltrim(self.keys.alert_webhook_queue, -WEBHOOK_QUEUE_MAX, -1)

    async def alerts(self) -> list[dict]:
        """Every stored alert, newest first."""
        raw = await self.redis.hvals(self.keys.alert_records)
        records = [json.loads(v) for v in raw]
        return sorted(records, key=lambda r: (r["fired_at"], r["id"]), reverse=True)

    async def get(self, alert_id: str) -> dict | None:
        raw = await self.redis.hget(self.keys.alert_records, alert_id)
        return None if raw is None else json.loads(raw)

    async def trim_resolved(self, keep: int = KEEP_RESOLVED) -> None:
        resolved = [r for r in await self.alerts() if r["state"] == "resolved"]
        resolved.sort(key=lambda r: r["resolved_at"] or 0, reverse=True)
        stale = [r["id"] for r in resolved[keep:]]
        if stale:
            await self.redis.hdel(self.keys.alert_records, *stale)

    # --- outbox and webhook queue -------------------------------------------------------------
    async def outbox(self, limit: int = OUTBOX_BATCH) -> list[dict]:
        return [json.loads(v) for v in await self.redis.lrange(self.keys.alert_outbox, 0, limit - 1)]

    async def drop_outbox(self, count: int) -> None:
        await self.redis.ltrim(self.keys.alert_outbox, count, -1)

    async def webhook_next(self) -> bytes | None:
        return await self.redis.lindex(self.keys.alert_webhook_queue, 0)

    async def webhook_done(self, body: bytes) -> None:
        # LREM of exactly this body (count 1, from the head): if the queue was trimmed meanwhile,
        # nothing else is removed by mistake.
        await self.redis.lrem(self.keys.alert_webhook_queue, 1, body)

    async def webhook_length(self) -> int:
        return int(await self.redis.llen(self.keys.alert_webhook_queue))


class AlertService:
    """The alert side of one worker: rules, the leader's pass, the outbox, metrics at scrape."""

    def __init__(
        self,
        settings: Settings,
        areas: AreaMap,
        keys: KeyLayout,
        metrics: Metrics,
        redis_client: Callable[[], aioredis.Redis],
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.metrics = metrics
        self.rules = load_rules(areas, settings.windows_s, settings.alert_rules_path, settings.areas_path)
        self._redis_client = redis_client
        self._store: AlertStore | None = None
        self.webhook_enabled = settings.webhook_url is not None

    @property
    def store(self) -> AlertStore:
        if self._store is None:
            self._store = AlertStore(self._redis_client(), self.keys)
        return self._store

    async def evaluate(self, estimates: Iterable[dict]) -> list[dict]:
        """Run the checks over this pass's estimates (each area's alert window only) and store
        the outcome; returns the events queued."""
        points: dict[str, list[tuple[int, float]]] = {}
        for e in estimates:
            rules = self.rules.get(e["area"])
            if rules is not None and e["window_s"] == rules.window_s:
                points.setdefault(e["area"], []).append((e["as_of"], point_value(e, rules.bound)))
        if not points:
            return []
        store = self.store
        states = await store.engine_states()
        wanted: dict[tuple[str, int], int | None] = {}
        for area, pts in points.items():
            rules = self.rules[area]
            # Known state: only the trend window is needed. No state: the whole series, to
            # rebuild episodes that began before (so they keep their ids).
            wanted[(area, rules.window_s)] = min(t for t, _ in pts) - rules.trend_ms if area in states else None
        series = await store.recent_points(wanted)
        active: dict[str, dict[tuple[str, str], dict]] = {}
        if any(area not in states for area in points):
            for r in await store.alerts():
                if r["state"] != "resolved":
                    active.setdefault(r["area"], {})[(r["rule"], r["level"])] = r
        new_states: dict[str, dict] = {}
        transitions: list[Transition] = []
        for area, pts in points.items():
            rules = self.rules[area]
            mine = series[(area, rules.window_s)]  # (this pass's estimates included: saved first)
            history = [(e["as_of"], point_value(e, rules.bound)) for e in mine]
            warming = {e["as_of"] for e in mine if e.get("warming_up")}
            new_states[area], found = evaluate_area(rules, states.get(area), pts, history, warming)
            if area not in states:  # rebuilt from the series: line up with alerts already raised
                found = reconcile(rules, new_states[area], found, active.get(area, {}))
            transitions.extend(found)
        events = await store.commit(new_states, transitions, self.rules, self.webhook_enabled)
        for e in events:
            if e["event"] == "fired":
                self.metrics.alerts_fired.labels(e["rule"], e["level"]).inc()
                log.warning("alert fired: %s (%s)", e["message"], e["id"])
            elif e["event"] == "resolved":
                log.info("alert resolved: %s", e["id"])
        return events

    async def publish_outbox(self, send: Callable[[dict], Awaitable[Any]]) -> int:
        """Send queued events (oldest first), then drop them from the outbox. A crash between
        the two sends them again on the next pass: consumers dedupe by event_id."""
        events = await self.store.outbox()
        for e in events:
            await send(e)
        if events:
            await self.store.drop_outbox(len(events))
        return len(events)

    async def listing(self) -> dict:
        """GET /api/alerts: active alerts (critical first, then newest) and recently resolved."""
        records = await self.store.alerts()
        severity = {"critical": 0, "warn": 1}
        active = sorted(
            (r for r in records if r["state"] != "resolved"), key=lambda r: (severity.get(r["level"], 9), -r["fired_at"])
        )
        recent = [r for r in records if r["state"] == "resolved"][:100]
        return {"active": active, "recent": recent}

    async def refresh_metrics(self) -> None:
        """Alert gauges from Redis (all workers agree), read when /metrics is scraped."""
        records = await self.store.alerts()
        gauge = self.metrics.alerts_active
        gauge.clear()
        for r in records:
            if r["state"] != "resolved":
                gauge.labels(r["area"], r["level"], r["state"]).inc()
        if self.webhook_enabled:
            self.metrics.webhook_queue.set(await self.store.webhook_length())
