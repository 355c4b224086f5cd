"""Frames out (producers/publisher.py): partitioning, framing, sequences and the frames file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from kafka.partitioner.default import DefaultPartitioner

from producers.publisher import FileSink, Framer, cell_partition, read_frames_file
from streams.core.areas import AreaMap, load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.core.wire import MAX_RECORDS_PER_FRAME, RECORD_DTYPE, decode

PRODUCER = 0x5EED
PARTITIONS = 4
START_MS = 1_700_000_000_000


class OneTopicCluster:
    """Just enough ClusterMetadata for kafka-python's DefaultPartitioner."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, set(range(partitions))

    def topics(self) -> set[str]:
        return {self.topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@pytest.fixture(scope="module")
def city() -> AreaMap:
    return load_areas(DEFAULT_AREAS)


def events_at(cells: np.ndarray, seed: int) -> np.ndarray:
    """Valid events at the given cells, in event-time order, with distinct devices."""
    rng = np.random.default_rng(seed)
    n = len(cells)
    events = np.zeros(n, dtype=RECORD_DTYPE)
    events["device"] = np.arange(n, dtype="<u8").view("V8")
    events["ts"] = START_MS + np.sort(rng.integers(0, 60_000, size=n))
    events["cell"] = cells
    events["type"] = rng.integers(1, 7, size=n)
    return events


def random_events(city: AreaMap, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return events_at(rng.choice(city.cell_ids, size=n), seed)


def decoded_frames(frames: list[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes, np.ndarray, int]]:
    """(partition, key, records, sequence) per frame; every frame must decode cleanly."""
    out = []
    for partition, key, frame in frames:
        decoded = decode(frame, 1 << 30)
        assert decoded.kind == "frame"
        assert decoded.rejects == []
        assert decoded.producer == PRODUCER
        out.append((partition, key, decoded.records, decoded.sequence))
    return out


def as_multiset(records: np.ndarray) -> Counter:
    return Counter(r.tobytes() for r in records)


# --- partitioning ----------------------------------------------------------------------------


def test_cell_partition_matches_kafka_default_partitioner(city: AreaMap) -> None:
    cluster = OneTopicCluster("crowd.events", PARTITIONS)
    partitioner = DefaultPartitioner()
    expected = [
        partitioner.partition("crowd.events", None, str(cell).encode(), None, None, cluster)
        for cell in city.cell_ids.tolist()
    ]

    ours = cell_partition(city.cell_ids, PARTITIONS)

    assert len(expected) == 64
    assert ours.tolist() == expected
    assert set(expected) == {0, 1, 2, 3}  # the comparison covers every partition


def test_cell_partition_with_one_partition_is_always_zero(city: AreaMap) -> None:
    assert cell_partition(city.cell_ids, 1).tolist() == [0] * 64


# --- framing ---------------------------------------------------------------------------------


def test_every_frame_decodes_and_holds_one_partition_only(city: AreaMap) -> None:
    events = random_events(city, 5_000, seed=1)
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids, frame_records=100)

    frames = decoded_frames(list(framer.frames(events)))

    for partition, key, records, _ in frames:
        assert set(cell_partition(records["cell"], PARTITIONS).tolist()) == {partition}
        assert key == str(int(records["cell"][0])).encode()


def test_frames_respect_the_record_limit_and_fill_up(city: AreaMap) -> None:
    events = random_events(city, 5_000, seed=2)
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids, frame_records=100)
    per_partition = Counter(cell_partition(events["cell"], PARTITIONS).tolist())

    frames = decoded_frames(list(framer.frames(events)))

    for p in range(PARTITIONS):
        sizes = [len(records) for partition, _, records, _ in frames if partition == p]
        n = per_partition[p]
        assert sizes == [100] * (n // 100) + ([n % 100] if n % 100 else [])


def test_records_are_preserved_and_keep_their_order_inside_a_partition(city: AreaMap) -> None:
    events = random_events(city, 5_000, seed=3)
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids, frame_records=100)
    partition_of = cell_partition(events["cell"], PARTITIONS)

    frames = decoded_frames(list(framer.frames(events)))

    out = np.concatenate([records for _, _, records, _ in frames])
    assert len(out) == len(events)
    assert as_multiset(out) == as_multiset(events)
    for p in range(PARTITIONS):
        sent = np.concatenate([records for partition, _, records, _ in frames if partition == p])
        assert sent.tobytes() == events[partition_of == p].tobytes()


def test_sequences_run_per_partition_without_gaps_across_batches(city: AreaMap) -> None:
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids, frame_records=50)
    first = decoded_frames(list(framer.frames(random_events(city, 1_000, seed=4))))
    nothing = list(framer.frames(np.zeros(0, dtype=RECORD_DTYPE)))
    second = decoded_frames(list(framer.frames(random_events(city, 1_000, seed=5))))

    assert nothing == []
    for p in range(PARTITIONS):
        sequences = [seq for partition, _, _, seq in first + second if partition == p]
        assert sequences == list(range(len(sequences)))
        assert framer.sequence[p] == len(sequences)
    assert sum(framer.sequence) == len(first) + len(second)


def test_a_frame_never_exceeds_the_wire_limit(city: AreaMap) -> None:
    events = random_events(city, 3 * MAX_RECORDS_PER_FRAME, seed=6)
    framer = Framer(PRODUCER, 1, city.cell_ids, frame_records=MAX_RECORDS_PER_FRAME)

    sizes = [len(records) for _, _, records, _ in decoded_frames(list(framer.frames(events)))]

    assert sizes == [MAX_RECORDS_PER_FRAME] * 3


def test_events_at_unknown_cells_are_framed_to_one_partition(city: AreaMap) -> None:
    # The worker dead-letters them; the producer must still send every one, in order.
    cells = np.array([7, 1038, 7, 99_999, 7, 1001, 99_999], dtype=np.uint32)
    events = events_at(cells, seed=7)
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids)

    frames = decoded_frames(list(framer.frames(events)))

    out = np.concatenate([records for _, _, records, _ in frames])
    assert as_multiset(out) == as_multiset(events)
    for unknown in (7, 99_999):
        partitions = {p for p, _, records, _ in frames if (records["cell"] == unknown).any()}
        assert partitions == {int(cell_partition(np.array([unknown]), PARTITIONS)[0])}
        sent = np.concatenate([records[records["cell"] == unknown] for _, _, records, _ in frames])
        assert sent.tobytes() == events[events["cell"] == unknown].tobytes()


@pytest.mark.parametrize("frame_records", [0, -1, MAX_RECORDS_PER_FRAME + 1])
def test_framer_refuses_a_frame_size_the_wire_cannot_carry(city: AreaMap, frame_records: int) -> None:
    with pytest.raises(ValueError, match="frame_records must be in 1..65536"):
        Framer(PRODUCER, PARTITIONS, city.cell_ids, frame_records=frame_records)


# --- frames file -----------------------------------------------------------------------------


def test_file_sink_round_trip(city: AreaMap, tmp_path: Path) -> None:
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids, frame_records=64)
    frames = list(framer.frames(random_events(city, 1_000, seed=8)))
    path = tmp_path / "frames.bin"

    sink = FileSink(path)
    sink.send(frames)
    sink.close()

    assert (sink.frames, sink.events) == (len(frames), 1_000)
    assert list(read_frames_file(path)) == [(partition, frame) for partition, _, frame in frames]
    assert path.stat().st_size == sum(8 + len(frame) for _, _, frame in frames)


def test_empty_frames_file_holds_no_frames(tmp_path: Path) -> None:
    path = tmp_path / "frames.bin"
    FileSink(path).close()

    assert list(read_frames_file(path)) == []


def test_truncated_frames_file_is_reported(city: AreaMap, tmp_path: Path) -> None:
    framer = Framer(PRODUCER, PARTITIONS, city.cell_ids)
    frames = list(framer.frames(random_events(city, 10, seed=9)))
    path = tmp_path / "frames.bin"
    sink = FileSink(path)
    sink.send(frames)
    sink.close()
    path.write_bytes(path.read_bytes()[:-1])

    with pytest.raises(ValueError, match="truncated frames file"):
        list(read_frames_file(path))


def test_a_frames_file_cut_inside_an_entry_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.frames"
    path.write_bytes(b"\x10\x00\x00")  # three bytes of an eight-byte entry header
    with pytest.raises(ValueError, match="truncated frames file"):
        list(read_frames_file(path))
