"""Sealed span counts kept between estimator passes (estimator.SealedCounts) are the counts Redis
gives for the same spans: a replay through the real ingest and estimator, against real Redis,
ending at the wall clock so its last passes are live (and count the next minute ahead)."""

from __future__ import annotations

import asyncio
import secrets
import time

import numpy as np
import pytest

from producers.simulate import SimulationRun, frames_for
from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.estimate.visibility import CURVE_SPANS_S
from streams.pipeline.ingest import Message
from streams.runtime.app import WorkerParts
from streams.runtime.services import Endpoints

pytestmark = pytest.mark.integration


def test_kept_sealed_counts_equal_fresh_counts_and_are_used(endpoints: Endpoints) -> None:
    areas = load_areas(DEFAULT_AREAS)
    settings = Settings.from_env({
        "CROWDPULSE_REDIS": endpoints.redis_url, "CROWDPULSE_NAMESPACE": f"sealed{secrets.token_hex(3)}",
    })
    minutes = 40
    now = int(time.time() * 1000)
    start = (now // 60_000 - minutes) * 60_000
    run = SimulationRun(devices=3000, seed=6, start_ms=start, duration_s=(now - start) / 1000, speedup=0.0,
                        partitions=settings.partitions, producer_id=11, rotation=settings.rotation)
    frames = frames_for(run, areas)
    assert frames

    async def replay() -> tuple[WorkerParts, list[dict]]:
        parts = WorkerParts.build(settings, areas)
        offsets = {p: 0 for p in range(settings.partitions)}
        published: list[dict] = []
        step = max(1, len(frames) // (2 * minutes))  # about two passes per simulated minute
        for i in range(0, len(frames), step):
            batch = []
            for partition, key, frame in frames[i : i + step]:
                batch.append(Message("events", partition, offsets[partition], key, frame))
                offsets[partition] += 1
            await parts.ingest.ingest(batch)
            published += await parts.estimator.run()
        for _ in range(3):  # a few more passes at the end, as a live estimator makes them
            published += await parts.estimator.run()
        return parts, published

    async def check() -> None:
        parts, published = await replay()
        assert published
        book, store = parts.estimator.book, parts.hll
        kept = parts.metrics.span_counts.labels("kept")._value.get()
        counted = parts.metrics.span_counts.labels("redis")._value.get()
        assert kept > 0 and counted > 0
        # Every window end the book still holds: its curves (kept or not) are Redis' counts now.
        points = [(area, bucket) for bucket, curves in book.curves.items() for area in curves]
        assert points
        fresh = await store.span_counts(points, list(CURVE_SPANS_S))
        for area, bucket in points:
            expected = [fresh[(area, bucket, span)] for span in CURVE_SPANS_S]
            assert np.array_equal(book.curves[bucket][area], expected), (area, bucket)
        # The last passes were live: the next window end's sealed spans were counted ahead.
        newest = max(book.curves)
        assert parts.estimator.live and newest + 1 in parts.estimator.sealed.by_bucket
        ahead = parts.estimator.sealed.by_bucket[newest + 1]
        sample = sorted(ahead)[:40]
        again = await store.count_spans([((area, newest + 1), [span]) for area, span in sample])
        assert [again[(area, newest + 1, span)] for area, span in sample] == [ahead[k] for k in sample]
        await store.redis.aclose()

    asyncio.run(check())
