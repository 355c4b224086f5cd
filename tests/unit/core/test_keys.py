"""Bucket and window maths and the Redis key layout (streams/core/keys.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from streams.core.keys import KeyLayout
from streams.core.windows import as_of_ms, bucket_index, expire_at_ms, window_buckets

BUCKET_MS = 60_000
LONGEST_MS = 3_600_000
GRACE_MS = 120_000


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}'."""
    match = re.search(r"\{([^}]+)\}", key)
    assert match, key
    return match.group(1)


# --- buckets and windows ---------------------------------------------------------------------


def test_bucket_index_of_an_int() -> None:
    assert bucket_index(0, BUCKET_MS) == 0
    assert bucket_index(59_999, BUCKET_MS) == 0
    assert bucket_index(60_000, BUCKET_MS) == 1
    assert bucket_index(1_700_000_000_123, BUCKET_MS) == 28_333_333


def test_bucket_index_of_an_array() -> None:
    ts = np.array([0, 59_999, 60_000, 1_700_000_000_123, 1_700_000_039_999, 1_700_000_040_000], dtype=np.int64)

    buckets = bucket_index(ts, BUCKET_MS)

    assert buckets.dtype == np.int64
    assert buckets.tolist() == [0, 0, 1, 28_333_333, 28_333_333, 28_333_334]


@pytest.mark.parametrize(("window_s", "length"), [(60, 1), (300, 5), (900, 15), (3600, 60)])
def test_window_buckets_end_at_the_newest_bucket(window_s: int, length: int) -> None:
    buckets = window_buckets(28_333_333, window_s, 60)

    assert len(buckets) == length
    assert buckets[-1] == 28_333_333
    assert list(buckets) == list(range(28_333_333 - length + 1, 28_333_334))


def test_as_of_is_the_end_of_the_newest_bucket() -> None:
    assert as_of_ms(28_333_333, BUCKET_MS) == 1_700_000_040_000
    assert as_of_ms(0, BUCKET_MS) == 60_000


def test_window_as_of_covers_exactly_the_window_before_it() -> None:
    newest = 28_333_333
    buckets = window_buckets(newest, 900, 60)

    start = buckets[0] * BUCKET_MS
    assert as_of_ms(newest, BUCKET_MS) - start == 900_000


# --- expiry ----------------------------------------------------------------------------------


def test_live_bucket_expires_after_its_remaining_stream_life() -> None:
    now = 1_700_000_000_123
    bucket = bucket_index(now, BUCKET_MS)  # ends at 1_700_000_040_000

    expiry = expire_at_ms(bucket, BUCKET_MS, LONGEST_MS, GRACE_MS, stream_now_ms=now, wall_now_ms=now)

    assert expiry == now + (1_700_000_040_000 + LONGEST_MS + GRACE_MS - now)
    assert expiry == 1_700_003_760_000


def test_replayed_old_bucket_lives_as_long_as_a_live_one() -> None:
    wall = 1_700_000_000_000
    stream_now = 1_600_000_000_000  # a replay of 2020 data, years behind the wall clock
    bucket = bucket_index(stream_now, BUCKET_MS)  # ends at 1_600_000_020_000

    expiry = expire_at_ms(bucket, BUCKET_MS, LONGEST_MS, GRACE_MS, stream_now_ms=stream_now, wall_now_ms=wall)

    assert expiry == wall + 20_000 + LONGEST_MS + GRACE_MS
    assert expiry - wall >= LONGEST_MS + GRACE_MS
    # The naive expiry, bucket end + longest window + grace on the wall clock, is long past.
    assert (bucket + 1) * BUCKET_MS + LONGEST_MS + GRACE_MS < wall


def test_bucket_of_an_accelerated_stream_ahead_of_the_wall_clock() -> None:
    wall = 1_700_000_000_000
    stream_now = 1_700_864_040_000  # ten days ahead, on a bucket boundary
    bucket = bucket_index(stream_now, BUCKET_MS)

    expiry = expire_at_ms(bucket, BUCKET_MS, LONGEST_MS, GRACE_MS, stream_now_ms=stream_now, wall_now_ms=wall)

    assert expiry == wall + BUCKET_MS + LONGEST_MS + GRACE_MS  # stream_now is bucket-aligned here


def test_bucket_older_than_every_window_still_gets_grace_and_a_bucket_of_life() -> None:
    wall = stream_now = 1_700_000_000_000
    old_bucket = bucket_index(stream_now, BUCKET_MS) - 100

    expiry = expire_at_ms(old_bucket, BUCKET_MS, LONGEST_MS, GRACE_MS, stream_now_ms=stream_now, wall_now_ms=wall)

    assert expiry == wall + GRACE_MS + BUCKET_MS


@pytest.mark.parametrize("lag_ms", [0, 1, 59_999, 3_600_000, 10**12])
def test_expiry_is_never_in_the_past(lag_ms: int) -> None:
    wall = 1_700_000_000_000
    stream_now = wall - lag_ms
    for offset in (-200, -61, -60, -1, 0):
        bucket = bucket_index(stream_now, BUCKET_MS) + offset
        expiry = expire_at_ms(bucket, BUCKET_MS, LONGEST_MS, GRACE_MS, stream_now_ms=stream_now, wall_now_ms=wall)
        assert expiry >= wall + GRACE_MS + BUCKET_MS


# --- key layout ------------------------------------------------------------------------------


def test_area_and_cell_keys_are_spelled_as_documented() -> None:
    keys = KeyLayout("cp", 60)

    assert keys.area_bucket("stadium", 28_333_333) == "cp:{a:stadium}:hll:60s:28333333"
    assert keys.cell_bucket(1038, 28_333_333) == "cp:{c:1038}:hll:60s:28333333"
    assert keys.area_series("stadium", 900) == "cp:{a:stadium}:series:900"


def test_all_keys_of_an_area_window_share_one_hash_tag() -> None:
    keys = KeyLayout("cp", 60)

    window = keys.area_window("stadium", 28_333_333, 900)

    assert window == [f"cp:{{a:stadium}}:hll:60s:{b}" for b in range(28_333_319, 28_333_334)]
    assert {hash_tag(k) for k in window + [keys.area_series("stadium", 900)]} == {"a:stadium"}


def test_area_and_cell_keys_never_collide() -> None:
    keys = KeyLayout("cp", 60)

    # An area may be named like a cell id; the tag's prefix keeps them apart.
    assert keys.area_bucket("1038", 5) != keys.cell_bucket(1038, 5)
    assert hash_tag(keys.area_bucket("1038", 5)) == "a:1038"
    assert hash_tag(keys.cell_bucket(1038, 5)) == "c:1038"


def test_bucket_length_is_part_of_the_key() -> None:
    assert KeyLayout("cp", 60).area_bucket("x", 1) != KeyLayout("cp", 30).area_bucket("x", 1)


def test_every_key_starts_with_the_namespace() -> None:
    keys = KeyLayout("test-7f3a", 60)

    every_key = [
        keys.area_bucket("stadium", 1),
        keys.cell_bucket(1038, 1),
        keys.area_series("stadium", 300),
        *keys.area_window("stadium", 10, 300),
        keys.ingest_state,
        keys.ingest_stats,
        keys.producer_sequences,
        keys.dirty_buckets(0),
        keys.dirty_buckets(3),
        keys.counted_through,
        keys.staged_points(10),
        keys.staged_changed,
        keys.estimator_state,
        keys.latest_estimates,
    ]

    assert all(k.startswith("test-7f3a:") for k in every_key)
    assert len(set(every_key)) == len(every_key)


def test_ingest_bookkeeping_keys_share_one_hash_tag() -> None:
    keys = KeyLayout("cp", 60)

    assert {hash_tag(k) for k in (keys.ingest_state, keys.ingest_stats, keys.producer_sequences)} == {"ingest"}


def test_a_window_reads_shadow_keys_across_a_rotation_only_when_the_feed_declared_it() -> None:
    from streams.core.rotation import Rotation

    keys = KeyLayout("cp", 60, Rotation(period_s=86_400, offset_s=4 * 3600, overlap_s=3600))
    epoch = 20_458
    first = keys.rotation.boundary_ms(epoch) // 60_000  # the first bucket of the epoch
    window = keys.area_span("stadium", first + 1, 0, 300, declared=frozenset({epoch}))
    assert [k.endswith(":next") for k in window] == [True, True, True, False, False]
    # Not declared (the feed's pseudonyms do not rotate): the whole window under its own keys.
    assert not any(k.endswith(":next") for k in keys.area_span("stadium", first + 1, 0, 300, declared=frozenset()))
    # No set given: the schedule alone decides (what producers that follow it see).
    assert keys.area_span("stadium", first + 1, 0, 300) == window
