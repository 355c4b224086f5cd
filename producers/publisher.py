"""Frames out: events grouped by partition into wire-format v1 frames, sent with kafka-python or
written to a file.

Events are keyed by cell: every event of a cell goes to the partition that Kafka's default
partitioner picks for the cell id's decimal string, so a cell's events stay in order in one
partition whether they travel in frames or as JSON. A frame holds events of one partition only,
and frame sequence numbers run per (producer, partition), so the worker owning a partition sees
a gap-free sequence unless something upstream lost or repeated a frame.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from streams.core.errors import ConfigError
from streams.core.wire import FLAG_SHADOW, HEADER_SIZE, MAX_RECORDS_PER_FRAME, RECORD_SIZE, frame_bytes

DEFAULT_FRAME_RECORDS = 1000
# A frames file is a sequence of (u32 length, u32 partition, frame bytes).
_FILE_ENTRY = struct.Struct("<II")


def cell_partition(cell_ids: np.ndarray, partitions: int) -> np.ndarray:
    """Kafka's default partition for each cell id's key (murmur2 of its decimal string)."""
    return np.array(
        [(murmur2(str(int(c)).encode()) & 0x7FFFFFFF) % partitions for c in cell_ids], dtype=np.int64
    )


class Framer:
    """Cuts batches of events into frames, one sequence per partition."""

    def __init__(
        self, producer_id: int, partitions: int, cell_ids: np.ndarray, frame_records: int = DEFAULT_FRAME_RECORDS
    ) -> None:
        if not 0 < frame_records <= MAX_RECORDS_PER_FRAME:
            raise ConfigError(f"frame_records must be in 1..{MAX_RECORDS_PER_FRAME}")
        self.producer_id = producer_id
        self.partitions = partitions
        self.frame_records = frame_records
        self.sorted_cells = np.sort(cell_ids.astype(np.uint32))
        self.partition_of = cell_partition(self.sorted_cells, partitions)
        self.sequence = [0] * partitions

    def frames(self, events: np.ndarray, shadow: bool = False) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield (partition, key, frame) for a batch of events; the key is the first event's cell.

        `shadow`: the events carry next-epoch pseudonyms (key rotation overlap, FLAG_SHADOW).
        """
        flags = FLAG_SHADOW if shadow else 0
        if not len(events):
            return
        index = np.searchsorted(self.sorted_cells, events["cell"])
        index = np.minimum(index, len(self.sorted_cells) - 1)
        known = self.sorted_cells[index] == events["cell"]
        part = self.partition_of[index]
        if not known.all():
            # Cells unknown to the map (the worker dead-letters them) are keyed the same way.
            unknown, inverse = np.unique(events["cell"][~known], return_inverse=True)
            part = part.copy()
            part[~known] = cell_partition(unknown, self.partitions)[inverse]
        # Stable: time order kept inside a partition. As uint16 keys (partition numbers are
        # small) numpy radix-sorts them: the same order, several times faster than int64 keys.
        order = np.argsort(part.astype(np.uint16) if self.partitions <= 1 << 16 else part, kind="stable")
        events, part = events[order], part[order]
        bounds = np.flatnonzero(np.diff(part)) + 1
        for chunk, p in zip(np.split(events, bounds), part[np.r_[0, bounds]].tolist()):
            for start in range(0, len(chunk), self.frame_records):
                records = chunk[start : start + self.frame_records]
                seq = self.sequence[p]
                self.sequence[p] += 1
                yield p, str(int(records["cell"][0])).encode(), frame_bytes(records, self.producer_id, seq, flags)


class DeliveryError(RuntimeError):
    """The broker could not take a frame within the producer's blocking time (unreachable, or
    its buffer full for that long): the run stops, reporting what was not delivered."""


class KafkaSink:
    """Sends frames to a topic with kafka-python; explicit partitions, see the module docstring.

    Every frame's delivery is accounted for: kafka-python retries a failed send (a broker
    restarting, a leader moving) until `delivery_timeout_ms` (2 minutes by default), buffering
    meanwhile; a frame it gives up on is counted in `undelivered_frames` / `undelivered_events`
    (from its callback thread), so the caller can report exactly what was lost after `close`."""

    def __init__(self, bootstrap: str, topic: str, **config: object) -> None:
        self.topic = topic
        # kafka-python sends from a background thread that needs the GIL as much as the caller
        # (the simulator) does: the longer it lingers, the fewer times it wakes up to take it
        # (end to end, generating and publishing at 100k devices: 463-533k events/s at 5 ms,
        # 577-595k at 100 ms). 100 ms is nothing next to the estimates' 10 s cadence.
        # Retries are kafka-python's default (unbounded, within delivery_timeout_ms): a fixed
        # count of 5 gave up within a second of a broker restart.
        options: dict[str, object] = {
            "bootstrap_servers": bootstrap.split(","),
            "acks": 1,
            "linger_ms": 100,
            "batch_size": 1 << 20,
            "max_request_size": 4 << 20,
        }
        options.update(config)
        self.producer = KafkaProducer(**options)
        self.frames = 0
        self.events = 0
        self.undelivered_frames = 0
        self.undelivered_events = 0
        self.last_error: BaseException | None = None
        self._lock = threading.Lock()

    def send(self, frames: Iterable[tuple[int, bytes, bytes]]) -> None:
        for partition, key, frame in frames:
            events = (len(frame) - HEADER_SIZE) // RECORD_SIZE
            self.frames += 1
            self.events += events
            self._send(frame, key, partition, events)

    def send_raw(self, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        """One message as is (JSON events, or deliberately bad input in tests)."""
        self._send(value, key, partition, 0)

    def _send(self, value: bytes, key: bytes | None, partition: int | None, events: int) -> None:
        try:
            future = self.producer.send(self.topic, value=value, key=key, partition=partition)
        except KafkaError as exc:
            self._undelivered(events, exc)
            raise DeliveryError(f"the broker did not take a message: {exc}") from exc
        future.add_errback(self._undelivered, events)

    def _undelivered(self, events: int, exc: BaseException) -> None:
        with self._lock:
            self.undelivered_frames += 1
            self.undelivered_events += events
            self.last_error = exc

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


class FileSink:
    """Writes frames to a file instead of Kafka (for replay, inspection and determinism checks)."""

    def __init__(self, path: Path) -> None:
        self.file: BinaryIO = open(path, "wb")
        self.frames = 0
        self.events = 0
        self.undelivered_frames = 0  # a file takes everything
        self.undelivered_events = 0
        self.last_error: BaseException | None = None

    def send(self, frames: Iterable[tuple[int, bytes, bytes]]) -> None:
        for partition, _key, frame in frames:
            self.file.write(_FILE_ENTRY.pack(len(frame), partition))
            self.file.write(frame)
            self.frames += 1
            self.events += (len(frame) - HEADER_SIZE) // RECORD_SIZE

    def close(self) -> None:
        self.file.close()


def read_frames_file(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (partition, frame) from a file written by FileSink."""
    with open(path, "rb") as f:
        while header := f.read(_FILE_ENTRY.size):
            if len(header) != _FILE_ENTRY.size:
                raise ConfigError(f"{path}: truncated frames file")
            length, partition = _FILE_ENTRY.unpack(header)
            frame = f.read(length)
            if len(frame) != length:
                raise ConfigError(f"{path}: truncated frames file")
            yield partition, frame
