"""The bench's data: synthetic events of the shipped city, cut into the three shapes the runs read
(binary frames of FRAME_RECORDS records, JSON arrays of JSON_EVENTS_PER_MESSAGE events, one
24-byte wire record per message), and the producer that publishes them to a topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from streams.core.areas import AreaMap
from streams.core.wire import HEADER_SIZE, RECORD_DTYPE, RECORD_SIZE, records_to_json

#: The synthetic population: pseudonymous devices, and events per second of *event* time
#: (about 3.6 events per device per hour, the simulator's behaviour). The data is replayed
#: as fast as the consumer can read it, so this only sets how many events share a bucket.
DEVICES = 500_000
EVENT_TIME_RATE = 500.0
FRAME_RECORDS = 1_000
JSON_EVENTS_PER_MESSAGE = 1_000


def synthetic_events(
    areas: AreaMap, n: int, seed: int, start_ms: int, devices: int = DEVICES, rate: float = EVENT_TIME_RATE
) -> np.ndarray:
    """n events in event-time order: random devices of the population at random cells."""
    rng = np.random.default_rng(seed)
    population = rng.integers(0, 2**64 - 1, devices, dtype=np.uint64, endpoint=True)
    events = np.zeros(n, dtype=RECORD_DTYPE)
    events["device"] = population[rng.integers(0, devices, n)].view("V8")
    events["ts"] = start_ms + (np.arange(n, dtype=np.float64) * (1000.0 / rate)).astype(np.int64)
    events["cell"] = areas.cell_ids[rng.integers(0, len(areas.cell_ids), n)]
    events["type"] = rng.integers(1, 7, n)
    return events


def frames_of(events: np.ndarray, areas: AreaMap, partitions: int, producer_id: int) -> list[tuple[int, bytes, bytes]]:
    from producers.publisher import Framer

    framer = Framer(producer_id, partitions, areas.cell_ids, FRAME_RECORDS)
    return list(framer.frames(events))


def json_messages(frames: list[tuple[int, bytes, bytes]]) -> Iterator[tuple[int, bytes, bytes]]:
    """The same events as JSON arrays (the interop path), cut like the frames."""
    for partition, key, frame in frames:
        records = np.frombuffer(frame, dtype=RECORD_DTYPE, offset=HEADER_SIZE)
        for start in range(0, len(records), JSON_EVENTS_PER_MESSAGE):
            yield partition, key, records_to_json(records[start : start + JSON_EVENTS_PER_MESSAGE])


def single_event_messages(frames: list[tuple[int, bytes, bytes]]) -> Iterator[tuple[int, bytes, bytes]]:
    """One 24-byte wire record per message (the naive baseline's input), same partitions."""
    for partition, _key, frame in frames:
        body = memoryview(frame)[HEADER_SIZE:]
        records = np.frombuffer(frame, dtype=RECORD_DTYPE, offset=HEADER_SIZE)
        for i, cell in enumerate(records["cell"].tolist()):
            yield partition, str(cell).encode(), bytes(body[i * RECORD_SIZE : (i + 1) * RECORD_SIZE])


async def _produce(bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes | None, bytes]]) -> int:
    """Publish with aiokafka's batch API (about 2.5M small messages/s here, so producing the
    data sets takes seconds). Returns the number of messages."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    try:
        open_batches: dict[int, Any] = {}
        pending = []
        count = 0
        for partition, key, value in messages:
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a message of {len(value)} bytes does not fit in a batch")
            count += 1
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for partition, batch in open_batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        return count
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes | None, bytes]]) -> int:
    return asyncio.run(_produce(bootstrap, topic, messages))
