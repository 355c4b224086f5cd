"""The only module that talks to Redis: HyperLogLog writes and window counts, ingest
bookkeeping, and the published-estimate snapshot that the API reads.

HyperLogLog registers never leave this module: callers get counts, never keys' contents.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import redis.asyncio as aioredis

from .ingest import BatchPlan, PartitionState
from .keys import KeyLayout

STAT_FIELDS = ("events_in", "counted", "deadletter", "late", "sequence_gaps", "sequence_repeats", "frames")


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client for a redis:// or rediss:// URL."""
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


class HllStore:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self.redis = client
        self.keys = keys

    # --- ingest -------------------------------------------------------------------------------
    async def load_partition(self, partition: int) -> tuple[PartitionState, dict[str, int]]:
        """What a previous owner of this partition left: applied offset, watermark, sequences."""
        raw = await self.redis.hget(self.keys.ingest_state, str(partition))
        state = _parse_partition(raw)
        sequences = {
            name.decode(): int(value)
            for name, value in (await self.redis.hgetall(self.keys.producer_sequences)).items()
            if name.decode().endswith(f":{partition}")
        }
        return state, sequences

    async def apply(self, plan: BatchPlan) -> None:
        """Write a batch: HyperLogLogs first, then the bookkeeping in one transaction.

        The order matters for at-least-once delivery: if the process dies between the two, the
        batch is redelivered and re-added (PFADD is idempotent) and only then accounted for.
        """
        if plan.hll_adds:
            pipe = self.redis.pipeline(transaction=False)
            for key, members in plan.hll_adds:
                pipe.pfadd(key, *members)
                pipe.pexpireat(key, plan.expire_at[key])
            if plan.dirty_buckets:
                pipe.sadd(self.keys.dirty_buckets, *sorted(f"{a}|{b}" for a, b in plan.dirty_buckets))
            await pipe.execute()
        if not plan.partitions:
            return
        tx = self.redis.pipeline(transaction=True)
        tx.hset(
            self.keys.ingest_state,
            mapping={
                str(p): f"{s.applied_offset}:{'' if s.watermark_ms is None else s.watermark_ms}"
                for p, s in plan.partitions.items()
            },
        )
        for name, value in plan.stats.items():
            if value:
                tx.hincrby(self.keys.ingest_stats, name, value)
        for reason, value in plan.reasons.items():
            tx.hincrby(self.keys.ingest_stats, f"deadletter:{reason}", value)
        if plan.sequences:
            tx.hset(self.keys.producer_sequences, mapping=plan.sequences)
        await tx.execute()

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.ingest_stats)
        stats = {name: 0 for name in STAT_FIELDS}
        stats.update({k.decode(): int(v) for k, v in raw.items()})
        return stats

    async def stream_now_ms(self) -> int | None:
        """Stream time: the highest watermark of any partition."""
        raw = await self.redis.hgetall(self.keys.ingest_state)
        marks = [_parse_partition(v).watermark_ms for v in raw.values()]
        known = [m for m in marks if m is not None]
        return max(known) if known else None

    # --- estimator ----------------------------------------------------------------------------
    async def pop_dirty(self) -> set[tuple[str, int]]:
        """The (area, bucket) pairs that received events since the last call."""
        tx = self.redis.pipeline(transaction=True)
        tx.smembers(self.keys.dirty_buckets)
        tx.delete(self.keys.dirty_buckets)
        members, _ = await tx.execute()
        pairs = (m.decode().rpartition("|") for m in members)
        return {(area, int(bucket)) for area, _, bucket in pairs}

    async def published_through(self) -> int | None:
        raw = await self.redis.hget(self.keys.estimator_state, "published_through")
        return int(raw) if raw is not None else None

    async def set_published_through(self, bucket: int) -> None:
        await self.redis.hset(self.keys.estimator_state, "published_through", bucket)

    async def window_counts(
        self, points: Sequence[tuple[str, int]], windows_s: Sequence[int]
    ) -> dict[tuple[str, int, int], int]:
        """PFCOUNT over each (area, newest bucket, window)'s bucket keys, pipelined; Redis
        merges the registers on the fly and they never leave Redis."""
        pipe = self.redis.pipeline(transaction=False)
        triples = [(area, bucket, w) for area, bucket in points for w in windows_s]
        for area, bucket, window in triples:
            pipe.pfcount(*self.keys.area_window(area, bucket, window))
        counts = await pipe.execute() if triples else []
        return {triple: int(count) for triple, count in zip(triples, counts)}

    async def save_estimates(self, estimates: Iterable[dict], current_as_of: int, series_span_ms: int) -> None:
        """Each (area, window)'s recent series, and the snapshot the API serves: the latter
        only from points at the current window end (a republished older point must not
        replace a newer one)."""
        pipe = self.redis.pipeline(transaction=False)
        latest: dict[str, str] = {}
        for estimate in estimates:
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
            pipe.hset(self.keys.latest_estimates, mapping=latest)
        await pipe.execute()

    async def latest_estimates(self) -> list[dict]:
        raw = await self.redis.hgetall(self.keys.latest_estimates)
        estimates = [json.loads(v) for v in raw.values()]
        return sorted(estimates, key=lambda e: (e["area"], e["window_s"]))

    async def series(self, area: str, window_s: int) -> list[dict]:
        raw = await self.redis.zrange(self.keys.area_series(area, window_s), 0, -1)
        return [json.loads(v) for v in raw]


def _parse_partition(raw: bytes | None) -> PartitionState:
    if not raw:
        return PartitionState()
    offset, _, watermark = raw.decode().partition(":")
    return PartitionState(int(offset), int(watermark) if watermark else None)
