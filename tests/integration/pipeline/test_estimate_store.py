"""The published series and snapshot in a real redis-server and a Redis Cluster (EstimateStore):
a republished point replaces its earlier one, points older than the series' span go, the series
expires, and only points at the current window end reach the snapshot."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from streams.core.keys import KeyLayout
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.redis_io import connect

pytestmark = pytest.mark.integration

MINUTE = 60_000
SPAN = 3 * MINUTE


def point(area: str, window_s: int, as_of: int, devices: int) -> dict:
    return {"area": area, "window_s": window_s, "as_of": as_of, "devices": devices}


async def saved(url: str) -> tuple[dict, list, int]:
    store = EstimateStore(connect(url), KeyLayout(f"tes{secrets.token_hex(3)}", 60))
    try:
        t = 100 * MINUTE
        areas = [f"a{i}" for i in range(30)]  # over every node of a cluster
        # Minute t - 1 and t, then t again with other counts (a republished point), then a late
        # republication of t - 1 while t is current, then t + 3 minutes (t - 1 out of the span).
        await store.save_estimates([point(a, w, t - MINUTE, 1) for a in areas for w in (300, 900)], t - MINUTE, SPAN)
        await store.save_estimates([point(a, w, t, 2) for a in areas for w in (300, 900)], t, SPAN)
        await store.save_estimates([point(a, 300, t, 3) for a in areas], t, SPAN)
        await store.save_estimates([point(a, 300, t - MINUTE, 4) for a in areas], t, SPAN)
        before = {a: [(e["as_of"], e["devices"]) for e in await store.series(a, 300)] for a in areas}
        latest_before = await store.latest_estimates()
        await store.save_estimates([point("a0", 300, t + 3 * MINUTE, 5)], t + 3 * MINUTE, SPAN)
        after = [(e["as_of"], e["devices"]) for e in await store.series("a0", 300)]
        ttl = await store.redis.pttl(store.keys.area_series("a0", 300))
        return {"before": before, "after": after, "latest": latest_before}, await store.series("a1", 900), ttl
    finally:
        await store.redis.aclose()


def test_series_replace_republished_points_and_keep_their_span(any_redis) -> None:
    figures, other_window, ttl = asyncio.run(saved(any_redis.redis_url))
    t = 100 * MINUTE
    for area, series in figures["before"].items():
        assert series == [(t - MINUTE, 4), (t, 3)], area  # one point per window end, the last written
    assert [(e["as_of"], e["devices"]) for e in other_window] == [(t - MINUTE, 1), (t, 2)]
    assert figures["after"] == [(t, 3), (t + 3 * MINUTE, 5)]  # t - 1 older than the span: gone; t at its edge
    assert 0 < ttl <= SPAN + 3_600_000
    # The snapshot holds the current window end's points only: the late t - 1 did not replace t.
    latest = {(e["area"], e["window_s"]): (e["as_of"], e["devices"]) for e in figures["latest"]}
    assert len(latest) == 60 and latest[("a7", 300)] == (t, 3) and latest[("a7", 900)] == (t, 2)
