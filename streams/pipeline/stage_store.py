"""Between the estimator's two sides, in Redis: the point records each worker's counter writes
for the areas it owns (estimator.PointRecord, one hash per window end), the points whose record
changed since the publisher last looked, and how far each shard's counter has counted. The
publisher (the leader) reads them; streams/pipeline/estimator_pass.py runs both sides."""

from __future__ import annotations

from collections.abc import Iterable

from streams.core.keys import KeyLayout
from streams.estimate.estimator import PointRecord
from streams.pipeline.redis_io import Client, text

#: A stage hash outlives its window end's place in the book by far; the publisher deletes it
#: earlier (EstimatorPass: with the old buckets). The expiry is a safety net (wall clock).
STAGE_TTL_MS = 3 * 3_600_000


class StageStore:
    def __init__(self, client: Client, keys: KeyLayout) -> None:
        self.redis = client
        self.keys = keys

    async def write(self, records: dict[tuple[str, int], PointRecord]) -> None:
        """The records, and their points marked changed for the publisher."""
        if not records:
            return
        by_bucket: dict[int, dict[str, bytes]] = {}
        for (area, bucket), record in records.items():
            by_bucket.setdefault(bucket, {})[area] = record.encode()
        pipe = self.redis.pipeline(transaction=False)
        for bucket, fields in sorted(by_bucket.items()):
            pipe.hset(self.keys.staged_points(bucket), mapping=fields)  # type: ignore[arg-type]  # redis-py: invariant keys
            pipe.pexpire(self.keys.staged_points(bucket), STAGE_TTL_MS)
        pipe.sadd(self.keys.staged_changed, *sorted(f"{area}|{bucket}" for area, bucket in records))
        await pipe.execute()

    async def set_counted(self, shards: Iterable[int], bucket: int) -> None:
        """These shards' counters have written every area's record up to `bucket`. Called
        after write() returned, so a publisher that sees the mark finds the records."""
        mapping = {str(shard): bucket for shard in shards}
        if mapping:
            await self.redis.hset(self.keys.counted_through, mapping=mapping)  # type: ignore[arg-type]

    async def counted(self, shards: int) -> dict[int, int | None]:
        """Every shard's newest bucket counted (None: never)."""
        raw = await self.redis.hmget(self.keys.counted_through, [str(s) for s in range(shards)])
        return {s: None if v is None else int(v) for s, v in enumerate(raw)}

    async def pop_changed(self) -> set[tuple[str, int]]:
        tx = self.redis.pipeline(transaction=True)
        # Raw commands: see HllStore.pop_dirty.
        tx.execute_command("SMEMBERS", self.keys.staged_changed)
        tx.execute_command("DEL", self.keys.staged_changed)
        members, _ = await tx.execute()
        return {(area, int(bucket)) for area, _, bucket in (text(m).rpartition("|") for m in members)}

    async def read(self, wanted: dict[int, list[str] | None]) -> dict[tuple[str, int], PointRecord]:
        """The records of these window ends: of the listed areas, or (None) of every area."""
        buckets = sorted(wanted)
        pipe = self.redis.pipeline(transaction=False)
        for bucket in buckets:
            areas = wanted[bucket]
            if areas is None:
                pipe.hgetall(self.keys.staged_points(bucket))
            else:
                pipe.hmget(self.keys.staged_points(bucket), areas)
        records: dict[tuple[str, int], PointRecord] = {}
        for bucket, reply in zip(buckets, await pipe.execute() if buckets else []):
            areas = wanted[bucket]
            pairs = reply.items() if areas is None else zip(areas, reply)
            for area, raw in pairs:
                if raw is not None:
                    name = text(area)
                    records[(name, bucket)] = PointRecord.decode(name, raw)
        return records

    def keys_of(self, buckets: Iterable[int]) -> list[str]:
        return [self.keys.staged_points(b) for b in buckets]
