"""Five-minute blocks (streams/core/blocks.py) against a real redis-server and a Redis Cluster:
only dense buckets are merged, and a span read through its blocks counts exactly what it counts
bucket by bucket; through the real ingest and estimator, the published curves are those counts."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streams.core.blocks import BLOCK_BUCKETS
from streams.core.keys import KeyLayout
from streams.core.windows import Span
from streams.estimate.visibility import CURVE_SPANS_S
from streams.pipeline.hll_store import HllStore, pack_hll_adds, pack_span_requests
from streams.pipeline.ingest import HllAdds
from streams.pipeline.redis_io import connect, send_routed

from .replay import ingest_in_steps, stream_until_now

pytestmark = pytest.mark.integration

NEWEST = 1_000  # a window end (bucket index); blocks are 200 (buckets 1000-1004) and older
MINUTES = 70


async def write_buckets(store: HllStore, sizes: dict[tuple[str, str], int], seed: int) -> None:
    """Every (area, segment) gets `size` random devices in each of the MINUTES buckets up to NEWEST
    (keys with 2,000 or more members are created dense, as ingest does it)."""
    rng = np.random.default_rng(seed)
    names, starts, members = [], [0], []
    for (area, segment), size in sizes.items():
        for bucket in range(NEWEST - MINUTES + 1, NEWEST + 1):
            names.append(store.keys.area_bucket(area, bucket, segment=segment))
            members.append(rng.integers(0, 2**64 - 1, size, dtype=np.uint64, endpoint=True))
            starts.append(starts[-1] + size)
    adds = HllAdds(names, [int(time.time() * 1000) + 600_000] * len(names), np.array(starts, dtype=np.int64),
                   np.concatenate(members))
    await send_routed(store.redis, adds.keys, lambda indices: pack_hll_adds(adds.take(indices)))


async def blocks_and_counts(url: str) -> tuple[list[bool], dict, dict, int, int]:
    store = HllStore(connect(url), KeyLayout(f"tblk{int(time.time() * 1000) % 100_000}", 60))
    try:
        await write_buckets(store, {("big", ""): 2_500, ("big", "res"): 2_100, ("small", ""): 60}, seed=3)
        block_ids = list(range((NEWEST - 59) // BLOCK_BUCKETS, NEWEST // BLOCK_BUCKETS))  # sealed up to NEWEST - 1
        candidates = [(area, segment, b) for area, segment in (("big", ""), ("big", "res"), ("small", "")) for b in block_ids]
        dense = await store.dense_blocks(candidates)
        merged = [c for c, ok in zip(candidates, dense) if ok]
        await store.merge_blocks(merged, {b: int(time.time() * 1000) + 600_000 for b in block_ids})
        usable: dict[str, dict[str, set[int]]] = {}
        for area, segment, b in merged:
            usable.setdefault(area, {}).setdefault(segment, set()).add(b)
        spans = [*CURVE_SPANS_S, Span.window(300, "res"), Span.window(900, "res"), Span.window(3600, "res")]
        # Window ends on and off the blocks' edges, the newest one with its last block unmerged.
        requests = [((area, end), spans) for area in ("big", "small") for end in (NEWEST - 7, NEWEST - 3, NEWEST - 1, NEWEST)]
        by_bucket = await store.count_spans(requests)
        by_block = await store.count_spans(requests, usable)
        big = [r for r in requests if r[0][0] == "big"]
        keys_bucket = sum(payload.count(b":big}:") for payload, _ in pack_span_requests(store.keys, big))
        keys_block = sum(payload.count(b":big}:") for payload, _ in pack_span_requests(store.keys, big, blocks=usable))
        return dense, by_bucket, by_block, keys_bucket, keys_block
    finally:
        await store.redis.aclose()


def test_dense_blocks_are_merged_and_count_what_their_buckets_count(any_redis) -> None:
    dense, by_bucket, by_block, keys_bucket, keys_block = asyncio.run(blocks_and_counts(any_redis.redis_url))
    per_kind = len(dense) // 3
    # The big area's total and its residents are dense; the small area's keys are sparse.
    assert all(dense[: 2 * per_kind]) and not any(dense[2 * per_kind :])
    assert by_block == by_bucket
    assert by_bucket[("big", NEWEST, Span(0, 3600))] > 100_000  # dense, really merged over the hour
    # The big area's spans read their blocks: far fewer keys merged.
    assert keys_block < 0.5 * keys_bucket


def test_the_estimator_merges_blocks_and_its_curves_are_the_bucket_counts(endpoints) -> None:
    # 40,000 devices: the whole city's area sees more than 2,000 phones a minute (dense keys).
    replay = stream_until_now(endpoints, "blocks", 45, devices=40_000, seed=8, producer_id=12)

    async def check() -> None:
        parts, published = await ingest_in_steps(replay, 90)
        for _ in range(2):
            published += await parts.estimator.run()
        assert published
        assert parts.metrics.blocks_merged._value.get() > 0
        book, store = parts.estimator.book, parts.hll
        merged = parts.estimator.counter.blocks.usable(replay.areas.reference)  # type: ignore[union-attr]
        assert merged.get("")  # the city's total has merged blocks its windows read
        points = [(area, bucket) for bucket, curves in book.curves.items() for area in curves]
        fresh = await store.span_counts(points, list(CURVE_SPANS_S))  # bucket by bucket
        for area, bucket in points:
            assert np.array_equal(book.curves[bucket][area], [fresh[(area, bucket, s)] for s in CURVE_SPANS_S]), (area, bucket)
        await store.redis.aclose()

    asyncio.run(check())
