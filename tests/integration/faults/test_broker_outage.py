"""The producer side of a broker outage, against the real embedded broker killed with SIGKILL:
a short outage is ridden out (frames buffered and retried, then delivered), a long one is
reported exactly (every frame given up on is counted, nothing is reported as published that
was not). The embedded broker keeps topics in memory, so a restarted one starts empty."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from producers.publisher import DeliveryError, Framer, KafkaSink
from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.runtime.processes import free_port
from streams.runtime.services import ensure_topics, start_broker, wait_for_kafka

from ..conftest import wait_until
from ..crowd import minute_events

TOPIC = "outage.events"
PARTITIONS = 2


def frames_of(minute: int) -> tuple[list, int]:
    areas = load_areas(DEFAULT_AREAS)
    events = minute_events(areas, minute)
    framer = Framer(producer_id=7, partitions=PARTITIONS, cell_ids=areas.cell_ids)
    return list(framer.frames(events)), len(events)


def partitions_holding(bootstrap: str) -> set[int]:
    """The topic's partitions whose log holds messages, by its offsets."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        return {tp.partition for tp in tps if end[tp] > begin[tp]}
    finally:
        consumer.close()


def test_a_short_broker_outage_is_ridden_out_and_a_long_one_is_counted(tmp_path: Path) -> None:
    port = free_port()
    broker, bootstrap = start_broker(port, tmp_path)
    try:
        wait_for_kafka(bootstrap)
        ensure_topics(bootstrap, {TOPIC: PARTITIONS})
        # max_block_ms: how long a send may wait for the topic's metadata (60 s by default; see the
        # long outage below).
        sink = KafkaSink(bootstrap, TOPIC, delivery_timeout_ms=8_000, request_timeout_ms=3_000, max_block_ms=8_000)
        before, n_before = frames_of(0)
        sink.send(before)
        sink.producer.flush()
        assert sink.undelivered_events == 0

        # Short: killed, frames sent into the void, the broker back (empty) within the timeout.
        os.kill(broker.pid, signal.SIGKILL)
        broker.stop()
        during, n_during = frames_of(1)
        sink.send(during)
        time.sleep(3)
        broker, _ = start_broker(port, tmp_path)
        wait_for_kafka(bootstrap)
        ensure_topics(bootstrap, {TOPIC: PARTITIONS})
        sink.producer.flush(timeout=30)
        assert sink.undelivered_events == 0, sink.last_error
        # The old topic's frames died with the broker: what its log holds now was sent during
        # the outage, in every partition those frames went to. Read by the log's offsets: a
        # consumer of the restarted embedded broker got nothing for 30 s in about 1 run in 5
        # although the offsets showed the frames (with and without other tests beside it, and
        # with one frame per produce batch; the broker-side cause is not found).
        written = {partition for partition, _, _ in during}
        wait_until(lambda: partitions_holding(bootstrap) == written, 30, "the frames sent during the outage in their partitions")

        # Long: killed and not back before the delivery timeout: every frame counted as lost.
        os.kill(broker.pid, signal.SIGKILL)
        broker.stop()
        lost, n_lost = frames_of(2)
        # Each frame is lost one of two ways, both counted by the sink: taken into the producer's
        # buffer and given up on after the delivery timeout, or refused at once (DeliveryError)
        # when the producer no longer holds the topic's metadata and cannot fetch it from a dead
        # broker. Which one depends on whether a metadata refresh raced the kill (a fresh-clone
        # run blocked 60 s in send and failed here, 1 run in 4 that day).
        for frame in lost:
            try:
                sink.send([frame])
            except DeliveryError:
                pass
        sink.close()
        assert sink.events == n_before + n_during + n_lost
        assert sink.undelivered_events == n_lost
        assert sink.undelivered_frames == len(lost)
        assert sink.last_error is not None
    finally:
        broker.stop()
