"""The estimator's Redis reads and writes in slices: many points give every count and every
series point (against a real redis-server, and a Redis Cluster where the test takes any_redis:
the counts are sent to each node for its own areas)."""

from __future__ import annotations

import asyncio
import time

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
    # streams/core/hll.py stands in for Redis when `crowdpulse calibrate` reads its simulated
    # curves; it must give the very PFCOUNT Redis gives, for sparse and dense keys and unions.
    import numpy as np
    import redis

    from streams.core import hll

    rng = np.random.default_rng(11)
    client = redis.Redis.from_url(endpoints.redis_url)
    try:
        sizes = (0, 1, 40, 900, 3_000, 60_000)
        members = [rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True) for n in sizes]
        registers = np.zeros((len(sizes), hll.REGISTERS), dtype=np.uint8)
        for i, values in enumerate(members):
            hll.add(registers[i], *hll.register_and_rank(values))
            for start in range(0, len(values), 5_000):
                client.pfadd(f"tmodel:{i}", *(v.tobytes() for v in values[start : start + 5_000]))
        assert client.execute_command("PFDEBUG", "ENCODING", "tmodel:2") == b"sparse"
        assert client.execute_command("PFDEBUG", "ENCODING", "tmodel:5") == b"dense"
        ours = hll.count(registers).tolist()
        assert ours == [client.pfcount(f"tmodel:{i}") if sizes[i] else 0 for i in range(len(sizes))]
        assert ours[3] != sizes[3] or ours[4] != sizes[4] or ours[5] != sizes[5]  # estimates, not exact counts
        union = hll.count(registers[2:].max(axis=0))
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


async def written_both_ways(url: str) -> tuple[dict, dict, dict, list]:
    """The same batches written by a store with register writes and by one without, into two
    namespaces; per key: (PFCOUNT, registers when dense) after the batches, and after the first
    batch replayed on the register side."""
    import numpy as np

    from streams.core import hll
    from streams.pipeline.ingest import BatchPlan, HllAdds

    rng = np.random.default_rng(21)
    stamp = int(time.time() * 1000) % 100_000
    stores = {on: HllStore(connect(url), KeyLayout(f"treg{int(on)}{stamp}", 60), register_writes=on) for on in (True, False)}
    # Keys under and over the register path's 1,000 members; "mixed" gets a small batch first
    # (a sparse key to merge into), "grown" a register write first, then a large batch again.
    sizes = [{"tiny": 30, "mixed": 200, "grown": 5_000, "dense": 40_000, "under": 1_500},
             {"tiny": 10, "mixed": 3_000, "grown": 2_500, "dense": 40_000, "under": 1_900}]
    batches = []
    for batch in sizes:
        members = [rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True) for n in batch.values()]
        starts = np.concatenate([[0], np.cumsum([len(m) for m in members])]).astype(np.int64)
        batches.append((list(batch), starts, np.concatenate(members)))

    async def state(store: HllStore, names: list[str]) -> dict:
        out = {}
        for name in names:
            key = store.keys.area_bucket(name, 7)
            raw = await store.redis.get(key)
            dense = raw is not None and len(raw) == hll.DENSE_BYTES
            out[name] = (await store.redis.pfcount(key), hll.registers_from_dense(raw).tolist() if dense else None)
        return out

    try:
        expire = int(time.time() * 1000) + 600_000
        for names, starts, members in batches:
            for store in stores.values():
                keys = [store.keys.area_bucket(name, 7) for name in names]
                await store.write_adds(BatchPlan(adds=HllAdds(keys, [expire] * len(keys), starts, members)))
        names = list(sizes[0])
        with_registers, member_by_member = await state(stores[True], names), await state(stores[False], names)
        first = batches[0]
        store = stores[True]
        keys = [store.keys.area_bucket(name, 7) for name in first[0]]
        await store.write_adds(BatchPlan(adds=HllAdds(keys, [expire] * len(keys), first[1], first[2])))
        replayed = await state(store, names)
        left = [key async for key in store.redis.scan_iter(match=f"{store.keys.namespace}:*:stage:*")]
        return with_registers, member_by_member, replayed, left
    finally:
        for store in stores.values():
            await store.redis.aclose()


def test_register_writes_leave_the_registers_pfadd_would(any_redis) -> None:
    with_registers, member_by_member, replayed, left = asyncio.run(written_both_ways(any_redis.redis_url))
    # Counts equal, and each key's encoding: dense keys' registers equal to the bit; keys under
    # the threshold (1,500 then 1,900 members) sparse as before.
    assert with_registers == member_by_member
    assert with_registers["dense"][1] is not None and with_registers["grown"][1] is not None
    assert 80_000 * 0.97 < with_registers["dense"][0] < 80_000 * 1.03
    assert replayed == with_registers  # a replayed batch changes nothing
    assert left == []  # no staging key outlives its write
