"""The same counts give the same figures: one simulated stream is replayed through the real
broker, Redis and worker twice, once in time order and once partition by partition in reverse
(so every area is first estimated while its reference, the city, has only part of its counts,
and the passes fall at other moments), and every published point's final figures are compared.
docs/estimation.md, "The newest minute, and the same counts giving the same estimate"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from producers.publisher import KafkaSink
from producers.simulate import SimulationRun, frames_for
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.tools.harness import estimator_busy

from ..conftest import RunningWorker, consume_all, start_worker, wait_until

pytestmark = pytest.mark.integration

#: What a point's estimate is; the rest of a record (when it was sent) may differ.
FIGURES = ("devices", "people", "people_low", "people_high", "suppressed", "suppressed_reason", "level", "warming_up")


def replay(worker: RunningWorker, phases: list[list[tuple[int, bytes, bytes]]]) -> dict[tuple, tuple]:
    """Publish the frames phase by phase, each phase read, counted and estimated before the
    next is sent, and return the last published figures of every (area, window, window end)."""
    sink = KafkaSink(worker.settings.kafka, worker.topics.events)
    sent = 0
    for frames in phases:
        sink.send(frames)
        sink.producer.flush()
        sent += len(frames)

        def read_all(sent: int = sent) -> bool:
            books = worker.stats()
            return books["frames"] >= sent and books["events_in"] == books["counted"] + books["deadletter"] + books["late"]

        wait_until(read_all, timeout=120, what=f"{sent} frames read")
        wait_until(lambda: not estimator_busy(worker.redis, worker.keys, worker.settings.partitions), timeout=60, what="estimator idle")
        time.sleep(2 * worker.settings.publish_interval_s + 0.5)  # a pass on these counts
    sink.close()
    books = worker.stats()
    assert books["counted"] == books["events_in"] > 0, books  # nothing late, whatever the order
    last: dict[tuple, tuple] = {}
    for message in consume_all(worker.settings.kafka, worker.topics.occupancy, worker.settings.partitions):
        record = json.loads(message.value)
        last[(record["area"], record["window_s"], record["as_of"])] = tuple(record.get(f) for f in FIGURES)
    return last


def test_one_stream_in_two_orders_publishes_the_same_figures(endpoints, tmp_path: Path) -> None:
    first = start_worker(endpoints, tmp_path, "det-a")
    second = start_worker(endpoints, tmp_path, "det-b")
    try:
        settings = first.settings
        run = SimulationRun(
            devices=6000, seed=341, start_ms=parse_time("2026-01-10T14:00:00Z"), duration_s=45 * 60, speedup=0,
            partitions=settings.partitions, producer_id=3, scenario="match-day", quick=True,
            rotation=settings.rotation,
        )
        frames = frames_for(run, load_areas(settings.areas_path))
        in_time_order = replay(first, [frames])
        # Partition by partition, the last first: areas are estimated while the city (the
        # reference, on every partition) has a quarter, a half, ... of its counts.
        by_partition = [[f for f in frames if f[0] == p] for p in reversed(range(settings.partitions))]
        assert all(by_partition)
        reordered = replay(second, by_partition)

        assert set(in_time_order) == set(reordered)
        estimated = [p for p, figures in in_time_order.items() if figures[1] is not None]
        assert len(estimated) > 300  # areas x windows x minutes, most of them published with people
        differ = {p: (in_time_order[p], reordered[p]) for p in in_time_order if in_time_order[p] != reordered[p]}
        assert not differ, list(differ.items())[:5]
    finally:
        for worker in (first, second):
            worker.process.stop(timeout=15)
            worker.redis.close()
