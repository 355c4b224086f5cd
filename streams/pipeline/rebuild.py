"""Rebuilding the windows after Redis lost its data (restarted without persistence, flushed).

Redis holds the only copy of the windows' HyperLogLogs; Kafka holds the events. When a worker
finds Redis' generation token gone (HllStore.generation: a random token set by the first worker,
which an empty Redis no longer has), it

1. puts its partitions' states and frame sequences back (its own are the newest there are), so
   stream time, watermarks and replay protection carry on;
2. marks those partitions as being rebuilt (the estimator publishes nothing meanwhile: partial
   windows would read as a crowd leaving);
3. re-reads, with a consumer of its own, each partition from the first message produced within
   the longest window plus grace before now (seek by time; where the broker cannot answer by
   time, as the embedded one cannot, a binary search over the messages' timestamps) up to the
   offset it had applied, and writes those events' HyperLogLog adds again, nothing else: PFADD
   is idempotent, so the events the live stream writes meanwhile are not counted twice, and the
   books (lost with Redis) count only what arrives from now on;
4. unmarks them. The estimator then re-estimates every point the rebuild touched (its counts
   kept from before are invalidated by the buckets the rebuild made dirty, SealedCounts.invalidate).

Events older than the partition's watermark minus the longest window and grace are skipped: no
window can need them. Dead letters and late events found on the way were published the first
time and are not published again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from streams.core.areas import AreaMap
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.pipeline.hll_store import HllStore
from streams.pipeline.ingest import Ingestor, Message, PartitionState

log = logging.getLogger(__name__)

#: Messages per planned batch while rebuilding, and how long a poll may wait.
REBUILD_BATCH = 200
POLL_MS = 1000
#: Empty polls in a row after which a partition's range is taken as read (the broker has fewer).
MAX_IDLE_POLLS = 5
#: The rebuilding mark expires unless renewed: a worker that dies mid-rebuild does not stop the
#: estimator for good.
MARK_TTL_S = 60


@dataclass(frozen=True)
class RebuildRange:
    partition: int
    last_offset: int  # the last message to re-read: the offset applied when Redis was found empty
    floor_ms: int  # events older than this no window needs


def first_offset_at(consumer: KafkaConsumer, tp: TopicPartition, at_ms: int, last_offset: int) -> int:
    """The offset of the first message of `tp` produced at or after `at_ms` (last_offset + 1 if
    none up to last_offset). Kafka answers by time (ListOffsets); a broker whose answer is not a
    message at or after the time (the embedded one returns offset 0 with timestamp -1) is
    searched instead: log2(n) single-message reads."""
    answer = consumer.offsets_for_times({tp: at_ms}).get(tp)
    if answer is None:
        return last_offset + 1
    if answer.timestamp >= at_ms:
        return min(answer.offset, last_offset + 1)
    low = consumer.beginning_offsets([tp])[tp]
    high = last_offset + 1
    while low < high:
        middle = (low + high) // 2
        consumer.seek(tp, middle)
        records = consumer.poll(timeout_ms=POLL_MS, max_records=1).get(tp, [])
        if not records or records[0].timestamp >= at_ms:
            high = middle
        else:
            low = records[0].offset + 1  # at or after middle
    return low


def read_batch(consumer: KafkaConsumer, tp: TopicPartition, last: int) -> tuple[list[Message], bool]:
    """One poll of `tp` from the consumer's position: its messages up to `last`, and whether the
    range is done (`last` reached). An empty poll is not done: the caller counts idle polls."""
    records = consumer.poll(timeout_ms=POLL_MS, max_records=REBUILD_BATCH).get(tp, [])
    out = [Message(tp.topic, tp.partition, r.offset, r.key, r.value or b"") for r in records if r.offset <= last]
    return out, bool(records) and records[-1].offset >= last


class Rebuilder:
    """Detects that Redis lost its data and rebuilds this worker's partitions' windows."""

    def __init__(self, settings: Settings, areas: AreaMap, store: HllStore, consumer_factory: Callable[[], KafkaConsumer]) -> None:
        self.settings = settings
        self.areas = areas
        self.store = store
        self.consumer_factory = consumer_factory
        self.token: bytes | None = None
        self.running: asyncio.Task | None = None

    async def lost(self) -> bool:
        """Whether Redis lost its data since the last call (False at the first call)."""
        token = await self.store.generation()
        lost = self.token is not None and token != self.token
        self.token = token
        return lost

    def ranges(self, states: Mapping[int, PartitionState], wall_now_ms: int) -> list[RebuildRange]:
        span_ms = (max(self.settings.windows_s) + self.settings.grace_s) * 1000
        return [
            RebuildRange(p, s.applied_offset, (s.watermark_ms if s.watermark_ms is not None else wall_now_ms) - span_ms)
            for p, s in sorted(states.items())
            if s.applied_offset >= 0
        ]

    async def rebuild(self, states: Mapping[int, PartitionState], sequences: Mapping[str, int]) -> dict[int, int]:
        """Steps 1-4 of the module notes for these partition states; returns the messages
        re-read per partition."""
        await self.store.save_partitions(dict(states), dict(sequences))
        wanted = self.ranges(states, int(time.time() * 1000))
        if not wanted:
            return {}
        partitions = [r.partition for r in wanted]
        await self.store.set_rebuilding(partitions, MARK_TTL_S)
        topic = TopicNames(self.settings.topic_prefix).events
        since_ms = int(time.time() * 1000) - (max(self.settings.windows_s) + self.settings.grace_s) * 1000
        consumer = await asyncio.to_thread(self.consumer_factory)
        read: dict[int, int] = {}
        try:
            for r in wanted:
                tp = TopicPartition(topic, r.partition)
                await asyncio.to_thread(consumer.assign, [tp])
                start = await asyncio.to_thread(first_offset_at, consumer, tp, since_ms, r.last_offset)
                ingestor = Ingestor(self.settings, self.areas)
                # Starting just before the range, with the floor as watermark: older events are
                # "late" to this planner and dropped (no window needs them).
                ingestor.restore(r.partition, PartitionState(start - 1, r.floor_ms), {})
                await asyncio.to_thread(consumer.seek, tp, start)
                done, idle, count = start > r.last_offset, 0, 0
                # Batch by batch: an hour of a busy partition does not fit in memory at once.
                while not done and idle < MAX_IDLE_POLLS:
                    messages, done = await asyncio.to_thread(read_batch, consumer, tp, r.last_offset)
                    idle = 0 if messages else idle + 1
                    if messages:
                        plan = ingestor.plan(messages, int(time.time() * 1000))
                        ingestor.commit(plan)
                        await self.store.write_adds(plan)
                        await self.store.set_rebuilding(partitions, MARK_TTL_S)
                        count += len(messages)
                read[r.partition] = count
                log.warning("rebuilt partition %d from Kafka: offsets %d..%d (%d messages)", r.partition, start, r.last_offset, count)
        finally:
            await asyncio.to_thread(consumer.close)
            await self.store.done_rebuilding(partitions)
        return read
