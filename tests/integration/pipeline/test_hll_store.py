"""The estimator's Redis reads and writes in slices: many points give every count and every
series point (against a real redis-server, and a Redis Cluster where the test takes any_redis:
the counts are sent to each node for its own areas)."""

from __future__ import annotations

import asyncio

import pytest

from streams.core.keys import KeyLayout
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.hll_store import HllStore
from streams.pipeline.redis_io import COMMANDS_PER_PIPELINE, connect

pytestmark = pytest.mark.integration


async def many_points(url: str) -> tuple[dict, list, int]:
    store = HllStore(connect(url), KeyLayout("tslice", 60))
    try:
        await store.redis.pfadd(store.keys.area_bucket("a7", 100), b"x", b"y")
        points = [(f"a{i}", 100) for i in range(COMMANDS_PER_PIPELINE)]  # 3 windows each: 3 slices
        counts = await store.window_counts(points, (60, 300, 900))
        estimates = [{"area": f"a{i}", "window_s": 60, "as_of": 6_060_000, "devices": i} for i in range(COMMANDS_PER_PIPELINE)]
        published = EstimateStore(store.redis, store.keys)
        await published.save_estimates(estimates, 6_060_000, 3_600_000)  # type: ignore[arg-type]
        return counts, await published.latest_estimates(), len(await published.series("a1999", 60))
    finally:
        await store.redis.aclose()


def test_thousands_of_points_in_slices(any_redis) -> None:
    counts, latest, series = asyncio.run(many_points(any_redis.redis_url))
    assert len(counts) == 3 * COMMANDS_PER_PIPELINE
    assert counts[("a7", 100, 60)] == 2 and counts[("a8", 100, 900)] == 0
    assert len(latest) == COMMANDS_PER_PIPELINE and series == 1


def test_the_numpy_hyperloglog_counts_exactly_as_redis(endpoints) -> None:
    # streams/estimate/hll_model.py stands in for Redis when `crowdpulse calibrate` reads its simulated
    # curves; it must give the very PFCOUNT Redis gives, for sparse and dense keys and unions.
    import numpy as np
    import redis

    from streams.estimate import hll_model

    rng = np.random.default_rng(11)
    client = redis.Redis.from_url(endpoints.redis_url)
    try:
        sizes = (0, 1, 40, 900, 3_000, 60_000)
        members = [rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True) for n in sizes]
        registers = np.zeros((len(sizes), hll_model.REGISTERS), dtype=np.uint8)
        for i, values in enumerate(members):
            hll_model.add(registers[i], *hll_model.register_and_rank(values))
            for start in range(0, len(values), 5_000):
                client.pfadd(f"tmodel:{i}", *(v.tobytes() for v in values[start : start + 5_000]))
        assert client.execute_command("PFDEBUG", "ENCODING", "tmodel:2") == b"sparse"
        assert client.execute_command("PFDEBUG", "ENCODING", "tmodel:5") == b"dense"
        ours = hll_model.count(registers).tolist()
        assert ours == [client.pfcount(f"tmodel:{i}") if sizes[i] else 0 for i in range(len(sizes))]
        assert ours[3] != sizes[3] or ours[4] != sizes[4] or ours[5] != sizes[5]  # estimates, not exact counts
        union = hll_model.count(registers[2:].max(axis=0))
        assert int(union) == client.pfcount(*(f"tmodel:{i}" for i in range(2, len(sizes))))
    finally:
        client.delete(*(f"tmodel:{i}" for i in range(6)))
        client.close()


async def data_since_cases(url: str) -> dict:
    store = HllStore(connect(url), KeyLayout("tsince", 60))
    try:
        for bucket in (100, 101, 103, 150):  # data in these minutes only (102 silent)
            await store.redis.pfadd(store.keys.area_bucket("city", bucket), b"x")
        await store.redis.pfadd(store.keys.area_bucket("other", 90), b"y")  # another area: not looked at
        return await store.data_since("city", [100, 102, 109, 110, 159, 160, 99], span_s=600)
    finally:
        await store.redis.aclose()


def test_data_since_finds_the_oldest_bucket_with_data_in_each_span(any_redis) -> None:
    since = asyncio.run(data_since_cases(any_redis.redis_url))
    # Ten-minute spans: the oldest minute with data of "city" in each, None for none.
    assert since == {99: None, 100: 100, 102: 100, 109: 100, 110: 101, 159: 150, 160: None}
