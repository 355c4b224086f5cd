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
class Rotation:
    """The pseudonym-key rotation schedule, in event time (docs/privacy.md).

    Epoch e runs from e * period + offset (epoch ms). During the `overlap` before each boundary
    producers send every event twice: with the current epoch's pseudonym, and in a shadow frame
    with the next epoch's. A window is counted in the epoch of its newest bucket, reading the
    shadow HyperLogLogs for its buckets from before the boundary, so a window spanning a
    rotation sees every device under one key: no double count. period 0 means no rotation.
    """

    period_s: int = 86_400
    offset_s: int = 4 * 3600  # 04:00 UTC, the quietest hour in most cities
    overlap_s: int = 3600  # at least the longest window

    def __post_init__(self) -> None:
        if self.period_s and not self.overlap_s < self.period_s:
            raise ValueError("rotation overlap must be shorter than the rotation period")

    @property
    def enabled(self) -> bool:
        return self.period_s > 0

    def epoch(self, ts_ms: np.ndarray | int) -> np.ndarray | int:
        if not self.enabled:
            return ts_ms * 0
        return (ts_ms - self.offset_s * 1000) // (self.period_s * 1000)

    def boundary_ms(self, epoch: int) -> int:
        """Start of `epoch` (epoch ms)."""
        return epoch * self.period_s * 1000 + self.offset_s * 1000

    def in_overlap(self, ts_ms: np.ndarray) -> np.ndarray:
        """Events that must also be sent as shadows: within `overlap` before the next boundary."""
        if not self.enabled:
            return np.zeros(np.shape(ts_ms), dtype=bool)
        next_start = (np.asarray(self.epoch(ts_ms)) + 1) * self.period_s * 1000 + self.offset_s * 1000
        return np.asarray(ts_ms) >= next_start - self.overlap_s * 1000

    def check(self, bucket_s: int, longest_window_s: int) -> None:
        if not self.enabled:
            return
        if self.period_s % bucket_s or self.offset_s % bucket_s:
            raise ValueError("rotation period and offset must be whole buckets")
        if self.overlap_s < longest_window_s:
            raise ValueError("rotation overlap must cover the longest window")


NO_ROTATION = Rotation(period_s=0, offset_s=0, overlap_s=0)


@dataclass(frozen=True)
class KeyLayout:
    """Builds every Redis key; nothing else formats key strings."""

    namespace: str
    bucket_s: int
    rotation: Rotation = NO_ROTATION

    def area_bucket(self, area: str, bucket: int, shadow: bool = False, segment: str = "") -> str:
        """A bucket's HyperLogLog; `shadow`: the one holding next-epoch pseudonyms (rotation);
        `segment`: one of the area's segment HyperLogLogs (streams/segments.py), "" the total."""
        return f"{self.namespace}:{{a:{area}}}:hll:{self.bucket_s}s:{bucket}{':' + segment if segment else ''}{':next' if shadow else ''}"

    def cell_bucket(self, cell: int, bucket: int, shadow: bool = False) -> str:
        return f"{self.namespace}:{{c:{cell}}}:hll:{self.bucket_s}s:{bucket}{':next' if shadow else ''}"

    def area_window(self, area: str, newest_bucket: int, window_s: int) -> list[str]:
        """The keys of one window, all under the pseudonym epoch of its newest bucket."""
        return self.area_span(area, newest_bucket, 0, window_s)

    def area_span(self, area: str, newest_bucket: int, skip_s: int, length_s: int, segment: str = "") -> list[str]:
        """The keys of `length_s` ending `skip_s` before the end of the window whose newest bucket
        is `newest_bucket` (skip 0: that window), under the pseudonym epoch of its newest bucket."""
        bucket_ms = self.bucket_s * 1000
        epoch = self.rotation.epoch(newest_bucket * bucket_ms)
        return [
            self.area_bucket(area, b, shadow=self.rotation.epoch(b * bucket_ms) < epoch, segment=segment)
            for b in window_buckets(newest_bucket - skip_s // self.bucket_s, length_s, self.bucket_s)
        ]

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

    def dp_budget(self, day: int) -> str:
        """Hash: area -> differential-privacy epsilon spent on that stream-time day."""
        return f"{self.namespace}:{{privacy}}:budget:{day}"

    @property
    def latest_estimates(self) -> str:
        """Hash: "<area>|<window_s>" -> latest published estimate (JSON)."""
        return f"{self.namespace}:{{estimates}}:latest"

    # Alert keys share the {alerts} hash tag: a pass's state, records and outbox change in one
    # transaction (streams/alert_store.py).
    @property
    def alert_engine(self) -> str:
        """Hash: area -> alert engine state (JSON: newest as_of evaluated, one tracker per check)."""
        return f"{self.namespace}:{{alerts}}:engine"

    @property
    def alert_records(self) -> str:
        """Hash: alert id -> the alert (JSON), active and recently resolved."""
        return f"{self.namespace}:{{alerts}}:records"

    @property
    def alert_outbox(self) -> str:
        """List: alert events (JSON) not yet published on crowd.alerts."""
        return f"{self.namespace}:{{alerts}}:outbox"

    @property
    def alert_webhook_queue(self) -> str:
        """List: alert events (JSON) not yet delivered to the webhook."""
        return f"{self.namespace}:{{alerts}}:webhook"
