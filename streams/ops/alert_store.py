"""Alert state in Redis (the alert pass that writes it: streams/ops/alert_service.py).

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
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from streams.core.keys import KeyLayout
from streams.ops.alert_rules import AreaRules
from streams.ops.alerts import Transition, acknowledge, event, fired_record, resolve

log = logging.getLogger(__name__)

KEEP_RESOLVED = 500
WEBHOOK_QUEUE_MAX = 1000
OUTBOX_BATCH = 200


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


class AlertStore:
    def __init__(self, client: aioredis.Redis | aioredis.RedisCluster, keys: KeyLayout) -> None:
        self.redis = client
        self.keys = keys

    async def engine_states(self) -> dict[str, dict]:
        raw = await self.redis.hgetall(self.keys.alert_engine)
        return {cast(bytes, k).decode(): json.loads(v) for k, v in raw.items()}

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
                            record = json.loads(cast(bytes, current[t.alert_id]))
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
        return cast("bytes | None", await self.redis.lindex(self.keys.alert_webhook_queue, 0))

    async def webhook_done(self, body: bytes) -> None:
        # LREM of exactly this body (count 1, from the head): if the queue was trimmed meanwhile,
        # nothing else is removed by mistake.
        await self.redis.lrem(self.keys.alert_webhook_queue, 1, body)  # type: ignore[arg-type]  # bytes work; stubs say str

    async def webhook_length(self) -> int:
        return int(await self.redis.llen(self.keys.alert_webhook_queue))
