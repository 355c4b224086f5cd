"""The ingest service of one worker: plans a batch of Kafka messages (streams/pipeline/ingest.py,
pure), writes it to Redis (streams/pipeline/hll_store.py), retrying while Redis is away, and
counts what happened in the metrics. The Faust agent (streams/runtime/app.py) feeds it and
publishes the dead letters and late events it returns."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from streams.core.areas import AreaMap
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.pipeline.hll_store import HllStore
from streams.pipeline.ingest import BatchPlan, Ingestor, Message, Output
from streams.pipeline.redis_io import with_retry

log = logging.getLogger(__name__)
T = TypeVar("T")


def wall_now_ms() -> int:
    return int(time.time() * 1000)


class IngestService:
    def __init__(self, settings: Settings, areas: AreaMap, store: HllStore, metrics: Metrics) -> None:
        self.ingestor = Ingestor(settings, areas)
        self.store = store
        self.metrics = metrics

    def applied_offset(self, partition: int) -> int | None:
        """The newest offset of a crowd.events partition written to Redis by this worker (None:
        not owned, or nothing applied yet)."""
        state = self.ingestor.partitions.get(partition)
        return state.applied_offset if state is not None else None

    def log_restarted(self, partition: int, highwater: int | None) -> bool:
        """If the partition's log now ends at or below the applied offset, take it as a new log:
        everything in it is applied from its start (the watermark and frame sequences stay)."""
        state = self.ingestor.partitions.get(partition)
        if state is None or highwater is None or highwater > state.applied_offset:
            return False
        log.warning("crowd.events partition %d now ends at offset %d, below the %d already applied: the broker lost its "
                    "log; reading the new one from its start", partition, highwater, state.applied_offset)
        self.ingestor.partitions[partition] = replace(state, applied_offset=-1)
        self.metrics.log_resets.inc()
        return True

    async def restart_if_log_restarted(self, partition: int, highwater: int) -> bool:
        """log_restarted for a partition this worker owns but may not have read yet (its state
        loaded from Redis first); a restart is written to Redis at once, so that no reload (a
        rebalance, another worker) brings the old applied offset back."""
        if not self.ingestor.known(partition):
            state, sequences = await self.store.load_partition(partition)
            self.ingestor.restore(partition, state, sequences)
        if not self.log_restarted(partition, highwater):
            return False
        await self.store.save_partitions({partition: self.ingestor.partitions[partition]}, {})
        return True

    def forget(self, partition: int) -> None:
        """A revoked partition: its state is reloaded from Redis if it comes back."""
        self.ingestor.forget(partition)

    async def ingest(self, messages: list[Message]) -> tuple[list[Output], list[Output]]:
        """Plan and write one batch; returns (dead letters, late events) to publish.

        Planning is pure and only fails on a bug: then the batch is dead-lettered whole
        (processing_error) so nothing is lost and the stream goes on. Writing retries until
        Redis answers: the batch is acknowledged to Kafka only after it is written.
        """
        started = time.perf_counter()
        plan = await self.plan_batch(messages)
        return await self.write_batch(plan, len(messages), started)

    async def plan_batch(self, messages: list[Message], highwater: Callable[[int], int | None] = lambda p: None) -> BatchPlan:
        """Plan one batch and adopt its partition states and sequences right away, so the next
        batch can be planned while this one is still being written (see write_batch).

        `highwater(partition)`: the partition's log end as the consumer last saw it. A log that
        ends at or below the offset already applied was restarted (a broker that lost its data,
        as the embedded one does when it restarts): its new messages would otherwise be skipped
        as already applied, so the partition is read from its start (log_restarted)."""
        for partition in {m.partition for m in messages}:
            if not self.ingestor.known(partition):
                state, sequences = await self._with_retry(functools.partial(self.store.load_partition, partition))
                self.ingestor.restore(partition, state, sequences)
            self.log_restarted(partition, highwater(partition))
        try:
            plan = self.ingestor.plan(messages, wall_now_ms())
        except Exception as exc:
            log.exception("planning a batch of %d messages failed; dead-lettering it", len(messages))
            plan = self.ingestor.quarantine(messages, f"{type(exc).__name__}: {exc}"[:200])
        self.ingestor.commit(plan)
        return plan

    async def write_batch(self, plan: BatchPlan, messages: int, started: float) -> tuple[list[Output], list[Output]]:
        """Write a planned batch (retrying while Redis is unreachable); returns (dead letters,
        late events) to publish. A write that fails for good leaves Redis behind the states the
        plan adopted: every partition is then forgotten, so the next batch reloads them from
        Redis and nothing unwritten is ever taken as applied."""
        try:
            await self._with_retry(lambda: self.store.apply(plan))
        except BaseException:
            self.ingestor.forget_all()
            raise
        self._observe_batch(plan, messages, time.perf_counter() - started)
        return plan.deadletters, plan.late

    async def _with_retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await with_retry(operation, self.metrics.redis_retries.inc)

    def _observe_batch(self, plan: BatchPlan, messages: int, seconds: float) -> None:
        m = self.metrics
        m.events.labels("counted").inc(plan.counted)
        m.events.labels("deadletter").inc(plan.deadlettered)
        m.events.labels("late").inc(plan.late_events)
        for reason, n in plan.reasons.items():
            m.deadletters.labels(reason).inc(n)
        m.frames.inc(plan.frames)
        m.sequence_gaps.inc(plan.sequence_gaps)
        m.sequence_repeats.inc(plan.sequence_repeats)
        m.replayed.inc(plan.replayed)
        m.batch_messages.observe(messages)
        m.batch_events.observe(plan.events_in)
        m.batch_seconds.observe(seconds)
