"""Bucket and window maths in event time, and the layout of every Redis key. Pure.

A bucket is [start, start + bucket_ms) of event time; its index is ts // bucket_ms. A window of
W seconds "as of" a bucket-aligned end E covers the W / bucket_s buckets ending at E, i.e. the
event-time interval [E - W, E). Every key of one area shares the hash tag {a:<area>}, so a
window's PFCOUNT touches a single Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bucket_index(ts_ms: np.ndarray | int, bucket_ms: int) -> np.ndarray | int:
    """Index of the bucket holding each event time (floor division, also for arrays)."""
    return ts_ms // bucket_ms


def window_buckets(as_of_bucket: int, window_s: int, bucket_s: int) -> range:
    """Bucket indexes of the window whose newest bucket is `as_of_bucket`."""
    n = window_s // bucket_s
    return range(as_of_bucket - n + 1, as_of_bucket + 1)


def as_of_ms(newest_bucket: int, bucket_ms: int) -> int:
    """The window end (exclusive) published as `as_of`: the end of its newest bucket."""
    return (newest_bucket + 1) * bucket_ms


def expire_at_ms(
    bucket: int, bucket_ms: int, longest_window_ms: int, grace_ms: int, stream_now_ms: int, wall_now_ms: int
) -> int:
    """Wall-clock expiry of a bucket key.

    The key is needed until stream time passes bucket end + longest window + grace. Stream time
    is not wall time (replays and accelerated simulations run ahead or behind), so the remaining
    stream-time life is laid onto the wall clock from now: a replayed old bucket lives as long as
    a live one instead of vanishing the moment it is written.
    """
    end = (bucket + 1) * bucket_ms
    remaining = end + longest_window_ms + grace_ms - stream_now_ms
    return wall_now_ms + max(remaining, grace_ms + bucket_ms)


@dataclass(frozen=True)
class KeyLayout:
    """Builds every Redis key; nothing else formats key strings."""

    namespace: str
    bucket_s: int

    def area_bucket(self, area: str, bucket: int) -> str:
        return f"{self.namespace}:{{a:{area}}}:hll:{self.bucket_s}s:{bucket}"

    def cell_bucket(self, cell: int, bucket: int) -> str:
        return f"{self.namespace}:{{c:{cell}}}:hll:{self.bucket_s}s:{bucket}"

    def area_window(self, area: str, newest_bucket: int, window_s: int) -> list[str]:
        return [self.area_bucket(area, b) for b in window_buckets(newest_bucket, window_s, self.bucket_s)]

    def area_series(self, area: str, window_s: int) -> str:
        return f"{self.namespace}:{{a:{area}}}:series:{window_s}"

    # Ingest bookkeeping shares one hash tag so a batch's accounting updates atomically.
    @property
    def ingest_state(self) -> str:
        """Hash: per topic-partition, "<applied offset>:<watermark ms>"."""
        return f"{self.namespace}:{{ingest}}:partitions"

    @property
    def ingest_stats(self) -> str:
        """Hash: events by outcome (in, counted, deadletter, late) and frame sequence gaps/repeats."""
        return f"{self.namespace}:{{ingest}}:stats"

    @property
    def producer_sequences(self) -> str:
        """Hash: "<producer id>:<partition>" -> last frame sequence number seen."""
        return f"{self.namespace}:{{ingest}}:sequences"

    @property
    def dirty_buckets(self) -> str:
        """Set of "<area>|<bucket>" that received events since the estimator last looked."""
        return f"{self.namespace}:{{estimator}}:dirty"

    @property
    def estimator_state(self) -> str:
        """Hash: published_through (the newest bucket every area has a point for)."""
        return f"{self.namespace}:{{estimator}}:state"

    @property
    def latest_estimates(self) -> str:
        """Hash: "<area>|<window_s>" -> latest published estimate (JSON)."""
        return f"{self.namespace}:{{estimates}}:latest"
