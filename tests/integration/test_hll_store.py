"""The estimator's Redis reads and writes in slices: many points give every count and every
series point (against a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from streams.hll_store import COMMANDS_PER_PIPELINE, HllStore, connect
from streams.keys import KeyLayout

pytestmark = pytest.mark.integration


async def many_points(url: str) -> tuple[dict, list, int]:
    store = HllStore(connect(url), KeyLayout("tslice", 60))
    try:
        await store.redis.pfadd(store.keys.area_bucket("a7", 100), b"x", b"y")
        points = [(f"a{i}", 100) for i in range(COMMANDS_PER_PIPELINE)]  # 3 windows each: 3 slices
        counts = await store.window_counts(points, (60, 300, 900))
        estimates = [{"area": f"a{i}", "window_s": 60, "as_of": 6_060_000, "devices": i} for i in range(COMMANDS_PER_PIPELINE)]
        await store.save_estimates(estimates, 6_060_000, 3_600_000)
        return counts, await store.latest_estimates(), len(await store.series("a1999", 60))
    finally:
        await store.redis.aclose()


def test_thousands_of_points_in_slices(endpoints) -> None:
    counts, latest, series = asyncio.run(many_points(endpoints.redis_url))
    assert len(counts) == 3 * COMMANDS_PER_PIPELINE
    assert counts[("a7", 100, 60)] == 2 and counts[("a8", 100, 900)] == 0
    assert len(latest) == COMMANDS_PER_PIPELINE and series == 1
