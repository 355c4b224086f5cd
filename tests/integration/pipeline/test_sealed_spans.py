"""Sealed span counts kept between estimator passes (estimator.SealedCounts) are the counts Redis
gives for the same spans: a replay through the real ingest and estimator, against real Redis,
ending at the wall clock so its last passes are live (and count the next minute ahead)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streams.estimate.visibility import CURVE_SPANS_S
from streams.runtime.app import WorkerParts
from streams.runtime.services import Endpoints

from .replay import ingest_in_steps, stream_until_now

pytestmark = pytest.mark.integration


def test_kept_sealed_counts_equal_fresh_counts_and_are_used(endpoints: Endpoints) -> None:
    minutes = 40
    replay = stream_until_now(endpoints, "sealed", minutes, devices=3000, seed=6, producer_id=11)

    async def passes() -> tuple[WorkerParts, list[dict]]:
        parts, published = await ingest_in_steps(replay, 2 * minutes)  # about two passes per simulated minute
        for _ in range(3):  # a few more passes at the end, as a live estimator makes them
            published += await parts.estimator.run()
        return parts, published

    async def check() -> None:
        parts, published = await passes()
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
