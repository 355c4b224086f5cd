"""What the estimator publishes, kept in Redis: the snapshot of the latest estimate per area and
window that the API serves, each (area, window)'s recent series, the newest window end published
(the estimator's progress) and the differential-privacy budget spent per area and day. Reads
and writes JSON and small hashes only; it never touches a HyperLogLog."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import cast

from streams.core.keys import KeyLayout
from streams.estimate.estimator import Estimate
from streams.pipeline.redis_io import COMMANDS_PER_PIPELINE, Client


class EstimateStore:
    def __init__(self, client: Client, keys: KeyLayout) -> None:
        self.redis = client
        self.keys = keys

    async def published_through(self) -> int | None:
        raw = await self.redis.hget(self.keys.estimator_state, "published_through")
        return int(raw) if raw is not None else None

    async def set_published_through(self, bucket: int, wall_ms: int) -> None:
        """The estimator's progress, and when (wall clock) it was last published: every worker
        reports the same estimate age from it, whichever of them is the leader."""
        await self.redis.hset(self.keys.estimator_state, mapping={"published_through": bucket, "published_at_ms": wall_ms})

    async def published_at_ms(self) -> int | None:
        raw = await self.redis.hget(self.keys.estimator_state, "published_at_ms")
        return int(raw) if raw is not None else None

    async def save_estimates(self, estimates: Iterable[Estimate], current_as_of: int, series_span_ms: int) -> None:
        """Each (area, window)'s recent series, and the snapshot the API serves: the latter
        only from points at the current window end (a republished older point must not
        replace a newer one)."""
        pipe = self.redis.pipeline(transaction=False)
        latest: dict[str, str] = {}
        for i, estimate in enumerate(estimates):
            if i and i % (COMMANDS_PER_PIPELINE // 4) == 0:  # four commands per estimate
                await pipe.execute()
                pipe = self.redis.pipeline(transaction=False)
            body = json.dumps(estimate, separators=(",", ":"))
            if estimate["as_of"] == current_as_of:
                latest[f"{estimate['area']}|{estimate['window_s']}"] = body
            series = self.keys.area_series(estimate["area"], estimate["window_s"])
            as_of = estimate["as_of"]
            # A republished window replaces its earlier point instead of adding a second one.
            pipe.zremrangebyscore(series, as_of, as_of)
            pipe.zadd(series, {body: as_of})
            pipe.zremrangebyscore(series, "-inf", f"({as_of - series_span_ms}")
            pipe.pexpire(series, series_span_ms + 3_600_000)
        if latest:
            pipe.hset(self.keys.latest_estimates, mapping=latest)  # type: ignore[arg-type]  # redis-py: invariant keys
        await pipe.execute()

    async def dp_spent(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], float]:
        """Epsilon already spent per (area, stream-time day)."""
        pairs = sorted(set(keys))
        pipe = self.redis.pipeline(transaction=False)
        for area, day in pairs:
            pipe.hget(self.keys.dp_budget(day), area)
        values = await pipe.execute() if pairs else []
        return {pair: float(v) for pair, v in zip(pairs, values) if v is not None}

    async def dp_charge(self, charges: dict[tuple[str, int], float]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for (area, day), epsilon in charges.items():
            pipe.hincrbyfloat(self.keys.dp_budget(day), area, epsilon)
            pipe.expire(self.keys.dp_budget(day), 3 * 86_400)  # a day's budget outlives the day
        if charges:
            await pipe.execute()

    async def latest_estimates(self) -> list[Estimate]:
        raw = await self.redis.hgetall(self.keys.latest_estimates)
        estimates = [json.loads(v) for v in raw.values()]
        return sorted(estimates, key=lambda e: (e["area"], e["window_s"]))

    async def series(self, area: str, window_s: int) -> list[Estimate]:
        raw = await self.redis.zrange(self.keys.area_series(area, window_s), 0, -1)
        return [json.loads(cast(bytes, v)) for v in raw]
