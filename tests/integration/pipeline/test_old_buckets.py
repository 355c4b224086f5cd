"""Old buckets are deleted by the estimator once no window can read them, so Redis holds about
one longest window of buckets whatever the stream's speed (their wall-clock expiry alone would
keep an hour of wall time: sixty simulated hours of a 60x stream). A replay through the real
ingest and estimator, against real Redis."""

from __future__ import annotations

import asyncio
import re

import pytest

from streams.core.segments import STORED
from streams.estimate.estimator import sealed_through
from streams.runtime.services import Endpoints

from .replay import ingest_in_steps, stream_until_now

pytestmark = pytest.mark.integration
BUCKET = re.compile(r":hll:\d+s:(\d+)")


def test_buckets_no_window_can_read_are_deleted_and_the_others_kept(endpoints: Endpoints) -> None:
    minutes = 100
    replay = stream_until_now(endpoints, "old", minutes, devices=2000, seed=8, producer_id=12)
    settings, areas, start = replay.settings, replay.areas, replay.start_ms

    async def check() -> None:
        parts, _ = await ingest_in_steps(replay, minutes)
        store = parts.hll
        through = sealed_through(await store.watermarks(), settings.partitions, settings.grace_s * 1000, settings.bucket_ms)
        assert through is not None
        horizon = through - max(settings.windows_s) // settings.bucket_s - 1
        first_bucket = start // settings.bucket_ms

        def existing(buckets: range) -> int:
            keys = [k for b in buckets for k in store.keys.bucket_keys(areas.area_ids, areas.cell_ids.tolist(), b, STORED)]
            return sum(1 for k in keys if k.encode() in present)

        present = {k async for k in store.redis.scan_iter(match=f"{settings.namespace}:*:hll:*", count=1000)}
        assert existing(range(first_bucket, horizon + 1)) == 0, "buckets past every window are still there"
        assert existing(range(horizon + 1, through + 1)) > 0, "buckets a window still reads were deleted"
        # Every key left belongs to a bucket some window can still read.
        buckets = [int(m.group(1)) for k in present if (m := BUCKET.search(k.decode()))]
        assert len(buckets) == len(present) and min(buckets) > horizon
        assert parts.metrics.buckets_dropped._value.get() > 0
        await store.redis.aclose()

    asyncio.run(check())
