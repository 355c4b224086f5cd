"""Old buckets are deleted by the estimator once no window can read them, so Redis holds about
one longest window of buckets whatever the stream's speed (their wall-clock expiry alone would
keep an hour of wall time: sixty simulated hours of a 60x stream). A replay through the real
ingest and estimator, against real Redis."""

from __future__ import annotations

import asyncio
import re
import secrets
import time

import pytest

from producers.simulate import SimulationRun, frames_for
from streams.core.areas import load_areas
from streams.core.segments import STORED
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.estimate.estimator import sealed_through
from streams.pipeline.ingest import Message
from streams.runtime.app import WorkerParts
from streams.runtime.services import Endpoints

pytestmark = pytest.mark.integration
BUCKET = re.compile(r":hll:\d+s:(\d+)")


def test_buckets_no_window_can_read_are_deleted_and_the_others_kept(endpoints: Endpoints) -> None:
    areas = load_areas(DEFAULT_AREAS)
    settings = Settings.from_env({
        "CROWDPULSE_REDIS": endpoints.redis_url, "CROWDPULSE_NAMESPACE": f"old{secrets.token_hex(3)}",
    })
    minutes = 100
    now = int(time.time() * 1000)
    start = (now // 60_000 - minutes) * 60_000
    run = SimulationRun(devices=2000, seed=8, start_ms=start, duration_s=(now - start) / 1000, speedup=0.0,
                        partitions=settings.partitions, producer_id=12, rotation=settings.rotation)
    frames = frames_for(run, areas)

    async def check() -> None:
        parts = WorkerParts.build(settings, areas)
        offsets = {p: 0 for p in range(settings.partitions)}
        step = max(1, len(frames) // minutes)
        for i in range(0, len(frames), step):
            batch = []
            for partition, key, frame in frames[i : i + step]:
                batch.append(Message("events", partition, offsets[partition], key, frame))
                offsets[partition] += 1
            await parts.ingest.ingest(batch)
            await parts.estimator.run()
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
