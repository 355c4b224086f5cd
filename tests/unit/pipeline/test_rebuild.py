"""The rebuild's seek by time (streams/pipeline/rebuild.py): Kafka's own answer where it gives
one, a binary search over the messages' timestamps where the broker answers wrongly (the
embedded broker returns offset 0 with timestamp -1 for any time)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndTimestamp

from streams.pipeline.rebuild import first_offset_at

TP = TopicPartition("t", 0)


@dataclass
class Record:
    offset: int
    timestamp: int


class LogConsumer:
    """The calls first_offset_at makes, over an in-memory log (offsets may have gaps)."""

    def __init__(self, log: list[Record], answers_by_time: bool) -> None:
        self.log = log
        self.answers_by_time = answers_by_time
        self.position = 0
        self.reads = 0

    def offsets_for_times(self, query: dict) -> dict:
        at = query[TP]
        if not self.answers_by_time:
            return {TP: OffsetAndTimestamp(0, -1, 0)}
        hit = next((r for r in self.log if r.timestamp >= at), None)
        return {TP: None if hit is None else OffsetAndTimestamp(hit.offset, hit.timestamp, 0)}

    def beginning_offsets(self, tps: list) -> dict:
        return {TP: self.log[0].offset}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.reads += 1
        found = [r for r in self.log if r.offset >= self.position][:max_records]
        return {TP: found} if found else {}


LOG = [Record(o, 1_000 + 10 * o) for o in range(5, 1005) if o % 7]  # offsets 5..1004 with gaps


@pytest.mark.parametrize("answers_by_time", [True, False])
@pytest.mark.parametrize(("at_ms", "expected"), [
    (0, 5),  # everything is newer
    (1_000 + 10 * 500, 500),  # an exact hit
    (1_000 + 10 * 496 + 5, 498),  # between two messages (497 is a gap): the next one
    (1_000 + 10 * 13 + 1, 15),  # 14 is a gap: the next message there is
])
def test_the_first_message_at_or_after_a_time(answers_by_time: bool, at_ms: int, expected: int) -> None:
    consumer = LogConsumer(LOG, answers_by_time)
    start = first_offset_at(consumer, TP, at_ms, last_offset=1004)  # type: ignore[arg-type]
    # Reading from `start` (a gap's offset reads on from the next message) gives `expected` first.
    assert next(r.offset for r in LOG if r.offset >= start) == expected
    if not answers_by_time:
        assert consumer.reads <= 12  # a binary search, not a scan of 1,000 messages


@pytest.mark.parametrize("answers_by_time", [True, False])
def test_nothing_to_re_read_when_every_message_is_older(answers_by_time: bool) -> None:
    assert first_offset_at(LogConsumer(LOG, answers_by_time), TP, 10**9, last_offset=1004) == 1005  # type: ignore[arg-type]


def test_the_search_stops_at_the_applied_offset() -> None:
    # Messages after the applied offset belong to the live stream, not to the rebuild.
    assert first_offset_at(LogConsumer(LOG, False), TP, 1_000 + 10 * 900, last_offset=600) == 601  # type: ignore[arg-type]
