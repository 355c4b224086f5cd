"""The layout of every Redis key: nothing else formats key strings. Pure.

Every key of one area shares the hash tag {a:<area>}, so a window's PFCOUNT touches a single
Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.core.blocks import BLOCK_BUCKETS, block_of
from streams.core.rotation import NO_ROTATION, Rotation
from streams.core.windows import window_buckets


@dataclass(frozen=True)
class KeyLayout:
    """Builds every Redis key; nothing else formats key strings."""

    namespace: str
    bucket_s: int
    rotation: Rotation = NO_ROTATION

    def area_bucket(self, area: str, bucket: int, shadow: bool = False, segment: str = "") -> str:
        """A bucket's HyperLogLog; `shadow`: the one holding next-epoch pseudonyms (rotation);
        `segment`: one of the area's segment HyperLogLogs (streams/core/segments.py), "" the total."""
        return f"{self.namespace}:{{a:{area}}}:hll:{self.bucket_s}s:{bucket}{':' + segment if segment else ''}{':next' if shadow else ''}"

    def area_block(self, area: str, block: int, segment: str = "") -> str:
        """The union of a sealed block's bucket keys (streams/core/blocks.py), total or segment;
        never of shadow keys."""
        return f"{self.namespace}:{{a:{area}}}:hll:{self.bucket_s}s:b{BLOCK_BUCKETS}:{block}{':' + segment if segment else ''}"

    def cell_bucket(self, cell: int, bucket: int, shadow: bool = False) -> str:
        return f"{self.namespace}:{{c:{cell}}}:hll:{self.bucket_s}s:{bucket}{':next' if shadow else ''}"

    def bucket_keys(self, areas: Iterable[str], cells: Iterable[int], bucket: int, segments: Iterable[str]) -> list[str]:
        """Every HyperLogLog key one bucket can have: each area's total and segments and each
        cell's, with their rotation shadows; at a block's last bucket, the block's keys too."""
        segments = ("", *segments)
        areas = list(areas)
        out = [self.area_bucket(a, bucket, shadow, seg) for a in areas for seg in segments for shadow in (False, True)]
        out += [self.cell_bucket(c, bucket, shadow) for c in cells for shadow in (False, True)]
        if (bucket + 1) % BLOCK_BUCKETS == 0:
            out += [self.area_block(a, block_of(bucket), seg) for a in areas for seg in segments]
        return out

    def staging(self, key: str, writer: str) -> str:
        """Where one writer stages registers for `key` before merging them in (the ingest's
        register path): the key's own name, so the same hash tag and slot, plus the writer's."""
        return f"{key}:stage:{writer}"

    def area_window(self, area: str, newest_bucket: int, window_s: int) -> list[str]:
        """The keys of one window, all under the pseudonym epoch of its newest bucket."""
        return self.area_span(area, newest_bucket, 0, window_s)

    def area_span(self, area: str, newest_bucket: int, skip_s: int, length_s: int, segment: str = "",
                  declared: frozenset[int] | None = None) -> list[str]:
        """The keys of `length_s` ending `skip_s` before the end of the window whose newest bucket
        is `newest_bucket` (skip 0: that window), under the pseudonym epoch of its newest bucket.

        `declared`: the epochs whose start the feed itself declared (it sent shadow events
        before it, docs/privacy.md). A window reads the shadow keys before an epoch's start only
        for those: a feed whose pseudonyms do not rotate on the schedule keeps whole windows.
        None: every epoch of the schedule is taken as declared."""
        return [self.area_bucket(area, b, shadow, segment)
                for b, shadow in self.span_buckets(newest_bucket, skip_s, length_s, declared)]

    def span_buckets(self, newest_bucket: int, skip_s: int, length_s: int,
                     declared: frozenset[int] | None = None) -> list[tuple[int, bool]]:
        """(bucket, read from its rotation shadow) of each bucket of a span (area_span), oldest first."""
        bucket_ms = self.bucket_s * 1000
        epoch = self.rotation.epoch(newest_bucket * bucket_ms)
        rotated = declared is None or epoch in declared
        return [(b, rotated and bool(self.rotation.epoch(b * bucket_ms) < epoch))
                for b in window_buckets(newest_bucket - skip_s // self.bucket_s, length_s, self.bucket_s)]

    def area_series(self, area: str, window_s: int) -> str:
        return f"{self.namespace}:{{a:{area}}}:series:{window_s}"

    # The footfall history's working state (streams/pipeline/history_writer.py); the history
    # itself lives in PostgreSQL.
    def history_hour(self, area: str, hour: int) -> str:
        """Hash: window end (ms) -> that minute's estimate, packed (streams/estimate/history.py),
        until the hour is summarised."""
        return f"{self.namespace}:{{a:{area}}}:hist:hour:{hour}"

    def history_day(self, area: str, day: int) -> str:
        """HyperLogLog: every phone seen in the area on that visitor day (its minute buckets merged)."""
        return f"{self.namespace}:{{a:{area}}}:hist:day:{day}"

    @property
    def history_state(self) -> str:
        """Hash: merged_through (newest bucket merged into its day), hours_through, days_through."""
        return f"{self.namespace}:{{history}}:state"

    # Ingest bookkeeping shares one hash tag so a batch's accounting updates atomically.
    @property
    def ingest_state(self) -> str:
        """Hash: per topic-partition, "<applied offset>:<watermark ms>"."""
        return f"{self.namespace}:{{ingest}}:partitions"

    @property
    def ingest_highwaters(self) -> str:
        """Hash: per crowd.events partition, "<log end offset>:<wall ms>" as its owner's consumer
        last fetched it (estimator.backlogged)."""
        return f"{self.namespace}:{{ingest}}:highwaters"

    @property
    def declared_rotations(self) -> str:
        """Hash: pseudonym epochs whose start the feed declared (shadow events before it) -> 1."""
        return f"{self.namespace}:{{ingest}}:rotations"

    @property
    def ingest_stats(self) -> str:
        """Hash: events by outcome (in, counted, deadletter, late) and frame sequence gaps/repeats."""
        return f"{self.namespace}:{{ingest}}:stats"

    @property
    def producer_sequences(self) -> str:
        """Hash: "<producer id>:<partition>" -> last frame sequence number seen."""
        return f"{self.namespace}:{{ingest}}:sequences"

    @property
    def generation(self) -> str:
        """String: a random token the first worker sets; gone or changed means Redis lost its data."""
        return f"{self.namespace}:{{ingest}}:generation"

    @property
    def rebuilding(self) -> str:
        """Set of crowd.events partitions whose windows are being rebuilt from Kafka (with a TTL)."""
        return f"{self.namespace}:{{ingest}}:rebuilding"

    def dirty_buckets(self, shard: int) -> str:
        """Set of "<area>|<bucket>" of one estimator shard's areas (areas.area_shard) that
        received events since its counter last looked."""
        return f"{self.namespace}:{{estimator:{shard}}}:dirty"

    @property
    def counted_through(self) -> str:
        """Hash: estimator shard -> the newest bucket its counter wrote every area's record of."""
        return f"{self.namespace}:{{estimator}}:counted"

    def staged_points(self, bucket: int) -> str:
        """Hash: area -> its point record at this window end (estimator.PointRecord), written
        by the area's counter, read by the publisher."""
        return f"{self.namespace}:{{stage:{bucket}}}:points"

    @property
    def staged_changed(self) -> str:
        """Set of "<area>|<bucket>" whose record changed since the publisher last looked."""
        return f"{self.namespace}:{{estimator}}:staged"

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
    # transaction (streams/ops/alert_store.py).
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
