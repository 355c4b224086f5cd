"""Bucket and window maths in event time. Pure.

A bucket is [start, start + bucket_ms) of event time; its index is ts // bucket_ms. A window of
W seconds "as of" a bucket-aligned end E covers the W / bucket_s buckets ending at E, i.e. the
event-time interval [E - W, E).
"""

from __future__ import annotations

from typing import NamedTuple

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


class Span(NamedTuple):
    """A run of buckets whose HyperLogLogs one PFCOUNT merges: the `length_s` seconds ending
    `skip_s` before a window end (skip 0: the window itself), of the area's total or, with
    `segment`, of one of its segment HyperLogLogs (streams/core/segments.py)."""

    skip_s: int
    length_s: int
    segment: str = ""

    @classmethod
    def window(cls, window_s: int, segment: str = "") -> Span:
        """The whole window of `window_s` seconds."""
        return cls(0, window_s, segment)
