"""What every worker checks between estimator passes, to recover by itself from the two faults
that leave no error behind (docs/operations.md, "Runbook: faults"):

- Redis lost its data (restarted without persistence, flushed): its generation token is gone;
  the worker rebuilds its partitions' windows from Kafka (streams/pipeline/rebuild.py);
- the broker lost its log (the embedded one, restarted): a crowd.events partition now ends at or
  below the offset applied; the worker applies the new log from its start, and a consumer that
  a rebalance left past the new log's end is moved back to what was applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust

from streams.core.metrics import Metrics
from streams.pipeline.ingest_service import IngestService
from streams.pipeline.rebuild import Rebuilder
from streams.pipeline.redis_io import TRANSIENT_ERRORS, with_retry

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, app: faust.App, rebuilder: Rebuilder, ingest: IngestService, metrics: Metrics, events_topic: str,
                 highwater: Callable[[int], int | None]) -> None:
        self.app = app
        self.rebuilder = rebuilder
        self.ingest = ingest
        self.metrics = metrics
        self.events_topic = events_topic
        #: The log end of a crowd.events partition as the consumer last fetched it.
        self.highwater = highwater

    async def check(self) -> None:
        await self.watch_redis_generation()
        await self.watch_log_restarts()

    async def watch_redis_generation(self) -> None:
        rebuilder = self.rebuilder
        try:
            lost = await rebuilder.lost()
        except TRANSIENT_ERRORS:
            return  # Redis away: the next pass looks again
        if not lost or (rebuilder.running is not None and not rebuilder.running.done()):
            return
        self.metrics.rebuilds.inc()
        ingestor = self.ingest.ingestor
        log.warning("Redis lost its data; rebuilding the windows of partitions %s from Kafka", sorted(ingestor.partitions))
        rebuilder.running = asyncio.ensure_future(self._rebuild(dict(ingestor.partitions), dict(ingestor.sequences)))

    async def _rebuild(self, states: dict, sequences: dict) -> None:
        try:
            # Redis has just come back: its first answers may still fail (stale connections).
            read = await with_retry(lambda: self.rebuilder.rebuild(states, sequences), self.metrics.redis_retries.inc)
            self.metrics.rebuild_messages.inc(sum(read.values()))
        except Exception:
            log.exception("rebuilding the windows from Kafka failed; the windows refill from new events")

    async def watch_log_restarts(self) -> None:
        # Faust's consumer drops the messages of a restarted log as already read, and ingest would
        # skip them as already applied: every pass looks at the partitions this worker owns (the
        # check at batch time, IngestService.plan_batch, covers the messages that do get through).
        consumer = self.app.consumer
        try:
            assignment = [tp for tp in consumer.assignment() if tp.topic == self.events_topic]
        except Exception:  # not started, or being rebalanced
            return
        for tp in assignment:
            highwater = self.highwater(tp.partition)
            if highwater is None:
                continue
            try:
                if await self.ingest.restart_if_log_restarted(tp.partition, highwater):
                    await consumer.seek(tp, 0)
                    continue
            except TRANSIENT_ERRORS:
                return  # Redis away: the next pass looks again
            # A consumer positioned past the log's end (a rebalance sought it to an offset the
            # group committed against the lost log) would wait there for good.
            try:
                position = await consumer.position(tp)
            except Exception:
                continue
            applied = self.ingest.applied_offset(tp.partition)
            if position is not None and applied is not None and position > highwater and position > applied + 1:
                log.warning("crowd.events partition %d: the consumer is at offset %d, past the log's end %d; "
                            "resuming at %d", tp.partition, position, highwater, applied + 1)
                await consumer.seek(tp, applied + 1)
