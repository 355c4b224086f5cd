"""The ingest planner: grouping into HyperLogLog adds, time rules, sequences, replays, accounting."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from streams.core.areas import load_areas
from streams.core.settings import Settings
from streams.core.wire import RECORD_DTYPE, Reason, decode, frame_bytes
from streams.pipeline.ingest import Ingestor, Message, PartitionState

WALL = 1_767_600_000_000  # the wall clock the tests pretend it is
BUCKET_MS = 60_000


@pytest.fixture
def settings() -> Settings:
    return Settings(grace_s=120, max_future_s=900)


@pytest.fixture
def ingestor(settings: Settings) -> Ingestor:
    return Ingestor(settings, load_areas(settings.areas_path))


def records(ts: list[int], cells: list[int], devices: list[int] | None = None, kind: int = 4) -> np.ndarray:
    out = np.zeros(len(ts), dtype=RECORD_DTYPE)
    out["device"] = np.array(devices if devices is not None else range(1, len(ts) + 1), dtype="<u8").view("V8")
    out["ts"] = ts
    out["cell"] = cells
    out["type"] = kind
    return out


def message(value: bytes, offset: int, partition: int = 0) -> Message:
    return Message("crowd.events", partition, offset, b"k", value)


def written(ingestor: Ingestor, messages: list[Message]):
    """Plan a batch and commit it, as the agent does once Redis has taken the writes."""
    plan = ingestor.plan(messages, WALL)
    ingestor.commit(plan)
    return plan


def test_adds_match_a_plain_python_grouping(ingestor: Ingestor) -> None:
    rng = np.random.default_rng(3)
    n = 5000
    batch = records(
        ts=(WALL - rng.integers(0, 600_000, n)).tolist(),
        cells=rng.choice(ingestor.areas.cell_ids, n).tolist(),
        devices=rng.integers(1, 800, n).tolist(),  # many repeats: dedup inside a key matters
    )
    plan = ingestor.plan([message(frame_bytes(batch, 1, 0), 0)], WALL)

    expected: dict[str, set[bytes]] = defaultdict(set)
    for device, ts, cell in zip(batch["device"].tolist(), batch["ts"].tolist(), batch["cell"].tolist()):
        bucket = ts // BUCKET_MS
        expected[ingestor.keys.cell_bucket(cell, bucket)].add(bytes(device))
        for area in ingestor.areas.areas_of_cell(cell):
            expected[ingestor.keys.area_bucket(area, bucket)].add(bytes(device))
    got = {key: members for key, members in plan.hll_adds}
    assert len(got) == len(plan.hll_adds), "one PFADD per key per batch"
    assert {k: set(v) for k, v in got.items()} == expected
    assert all(len(v) == len(set(v)) for v in got.values()), "devices deduplicated inside a key"
    assert set(plan.expire_at) == set(expected)
    assert plan.counted == n and plan.events_in == n
    touched = {
        (area, ts // BUCKET_MS)
        for cell, ts in zip(batch["cell"].tolist(), batch["ts"].tolist())
        for area in ingestor.areas.areas_of_cell(cell)
    }
    assert plan.dirty_buckets == touched


def test_late_and_future_events_use_the_partition_watermark(ingestor: Ingestor) -> None:
    cell = int(ingestor.areas.cell_ids[0])
    first = written(ingestor, [message(frame_bytes(records([WALL], [cell]), 1, 0), 0)])
    assert first.counted == 1 and ingestor.partitions[0].watermark_ms == WALL

    grace_edge = WALL - 120_000
    batch = records([grace_edge, grace_edge - 1, WALL + 900_000, WALL + 900_001], [cell] * 4)
    plan = written(ingestor, [message(frame_bytes(batch, 1, 1), 1)])
    assert plan.counted == 2  # exactly at the grace edge still counts; and the +900 s one
    assert plan.late_events == 1
    assert plan.reasons == {Reason.FUTURE_TIME: 1}
    late = decode(plan.late[0].value, 10**6)
    assert late.records["ts"].tolist() == [grace_edge - 1]
    assert ingestor.partitions[0].watermark_ms == WALL + 900_000
    # Another partition has its own watermark: the same old event is not late there.
    other = ingestor.plan([message(frame_bytes(records([grace_edge - 1], [cell]), 1, 0), 0, partition=1)], WALL)
    assert other.counted == 1 and other.late_events == 0


def test_an_accelerated_stream_may_run_ahead_of_the_wall_clock(ingestor: Ingestor) -> None:
    """Far future is judged against max(wall, watermark): a 60x simulation moves both forward."""
    cell = int(ingestor.areas.cell_ids[0])
    t = WALL
    for offset in range(10):
        t += 800_000  # each frame 800 s later: within max_future of the previous watermark
        plan = written(ingestor, [message(frame_bytes(records([t], [cell]), 1, offset), offset)])
        assert plan.counted == 1, offset
    assert ingestor.stream_now_ms == t


def test_semantic_rejects_are_dead_lettered_per_reason_in_the_input_format(ingestor: Ingestor) -> None:
    cell = int(ingestor.areas.cell_ids[0])
    batch = records([WALL, WALL, 10, WALL], [cell, 7, cell, cell])
    batch["type"][3] = 99
    plan = ingestor.plan([message(frame_bytes(batch, 5, 0), 0)], WALL)
    assert plan.counted == 1
    assert plan.reasons == {Reason.UNKNOWN_CELL: 1, Reason.BAD_TIME: 1, Reason.UNKNOWN_TYPE: 1}
    assert plan.events_in == plan.counted + plan.deadlettered + plan.late_events == 4
    for out in plan.deadletters:
        headers = dict(out.headers)
        rejected = decode(out.value, 10**6)
        assert rejected.kind == "frame" and len(rejected.records) == int(headers["events"]) == 1
        assert headers["source_offset"] == b"0" and headers["source_partition"] == b"0"

    doc = [
        {"device": "00000000000000aa", "cell": cell, "ts": WALL, "type": "tau"},
        {"device": "00000000000000bb", "cell": 7, "ts": WALL, "type": "tau"},
    ]
    plan = ingestor.plan([message(json.dumps(doc).encode(), 1)], WALL)
    assert plan.counted == 1 and plan.reasons == {Reason.UNKNOWN_CELL: 1}
    assert json.loads(plan.deadletters[0].value) == [dict(doc[1], device_class="phone", segment=0)]


def test_frame_sequences_reveal_gaps_and_repeats_per_producer_and_partition(ingestor: Ingestor) -> None:
    cell = int(ingestor.areas.cell_ids[0])
    frame = lambda producer, seq: frame_bytes(records([WALL], [cell]), producer, seq)  # noqa: E731
    msgs = [message(frame(1, 0), 0), message(frame(1, 1), 1), message(frame(1, 5), 2), message(frame(1, 5), 3),
            message(frame(2, 9), 4), message(frame(1, 0), 0, partition=3)]
    plan = ingestor.plan(msgs, WALL)
    assert plan.sequence_gaps == 3  # 2, 3 and 4 never arrived
    assert plan.sequence_repeats == 1
    assert plan.frames == 6
    assert plan.sequences == {"0000000000000001:0": 5, "0000000000000002:0": 9, "0000000000000001:3": 0}


def test_redelivered_messages_are_skipped_after_a_restart(settings: Settings) -> None:
    areas = load_areas(settings.areas_path)
    cell = int(areas.cell_ids[0])
    value = frame_bytes(records([WALL, WALL], [cell, cell]), 1, 0)
    first = Ingestor(settings, areas)
    plan = written(first, [message(value, 10), message(value, 11)])
    assert plan.counted == 4

    # A new worker restores what the old one persisted and sees offsets 10..12 again.
    second = Ingestor(settings, areas)
    second.restore(0, PartitionState(applied_offset=11, watermark_ms=WALL), plan.sequences)
    replay = second.plan([message(value, 10), message(value, 11), message(value, 12)], WALL)
    assert replay.replayed == 2
    assert replay.events_in == replay.counted == 2
    assert replay.sequence_repeats == 1  # offset 12 carries frame 0 again: a real upstream repeat


def test_bad_messages_never_raise_and_always_close_the_books(ingestor: Ingestor) -> None:
    rng = np.random.default_rng(11)
    cell = int(ingestor.areas.cell_ids[0])
    good = frame_bytes(records([WALL] * 3, [cell] * 3), 1, 0)
    values = [b"", b"CP", good[:-1], good + b"x", b"{", b"[1,2,3]", b'{"a":1}', b"null", b"\xff" * 64]
    values += [bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8)) for _ in range(200)]
    values += [b"CP\x01\x00" + bytes(rng.integers(0, 256, 100, dtype=np.uint8)) for _ in range(200)]
    plan = ingestor.plan([message(v, i) for i, v in enumerate(values)], WALL)
    assert plan.events_in == plan.counted + plan.deadlettered + plan.late_events
    assert plan.deadlettered >= len(values) - 5  # random bytes can, rarely, decode into a record
    assert all(dict(d.headers)["reason"] for d in plan.deadletters)


def test_a_batch_whose_write_failed_plans_again_identically(ingestor: Ingestor) -> None:
    """Nothing changes until commit: after a Redis failure the same batch is planned anew."""
    cell = int(ingestor.areas.cell_ids[0])
    msgs = [message(frame_bytes(records([WALL, WALL - 1], [cell, cell]), 1, 0), 0)]
    first, again = ingestor.plan(msgs, WALL), ingestor.plan(msgs, WALL)
    assert (first.stats, first.hll_adds, first.sequences) == (again.stats, again.hll_adds, again.sequences)
    assert again.replayed == 0 and ingestor.partitions == {}
    ingestor.commit(again)
    assert ingestor.plan(msgs, WALL).replayed == 1


def test_quarantine_dead_letters_every_message_whole(ingestor: Ingestor) -> None:
    msgs = [message(b"anything", 0), message(b"else", 1, partition=2)]
    plan = ingestor.quarantine(msgs, "ValueError: boom")
    assert plan.events_in == plan.deadlettered == 2 and plan.counted == 0
    assert [d.value for d in plan.deadletters] == [b"anything", b"else"]
    assert {dict(d.headers)["reason"] for d in plan.deadletters} == {Reason.PROCESSING_ERROR.encode()}
    assert {p: s.applied_offset for p, s in plan.partitions.items()} == {0: 0, 2: 1}


def test_raw_identifiers_are_refused_and_never_forwarded_in_clear(ingestor: Ingestor) -> None:
    cell = int(ingestor.areas.cell_ids[0])
    imsi = "001011234567890"
    batch = records([WALL, WALL], [cell, cell])
    batch["device"][0] = np.frombuffer(b"00101123", dtype="V8")[0]  # ASCII digits in the device field
    docs = [
        {"device": imsi, "cell": cell, "ts": WALL, "type": "tau"},
        {"device": "+447700900123", "cell": cell, "ts": WALL, "type": "tau"},
        {"device": 447700900123, "cell": cell, "ts": WALL, "type": "tau"},
        {"device": "not-a-pseudonym", "cell": cell, "ts": WALL, "type": "tau"},
    ]
    plan = ingestor.plan([message(frame_bytes(batch, 1, 0), 0), message(json.dumps(docs).encode(), 1)], WALL)
    assert plan.reasons == {Reason.RAW_IDENTIFIER: 4, Reason.BAD_FIELD: 1}
    assert plan.counted == 1
    everything = b"".join(d.value + b"".join(v for _, v in d.headers) for d in plan.deadletters)
    for secret in (imsi.encode(), b"00101123", b"447700900123", b"not-a-pseudonym"):
        assert secret not in everything
