"""The ingest logic: a batch of Kafka messages in, a plan of Redis writes and Kafka outputs out.

Pure (no Kafka, no Redis): the Faust agent in streams/app.py feeds it message batches and hands
the resulting BatchPlan to streams/hll_store.py. All per-event work is numpy; Python loops run
per message (frame) or per (key, batch), never per event.

Time: each partition has a watermark, the highest event time accepted from it. An event older
than watermark - grace is late (it goes to crowd.late); one newer than max(wall clock, watermark)
+ max_future is rejected as far in the future. See docs/architecture.md.

Replays: every partition's last applied offset is kept with the accounting in Redis. A message at
or below it was applied before a restart and is skipped, so redelivery never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from .areas import AreaMap
from .keys import KeyLayout, expire_at_ms
from .settings import Settings
from .wire import (
    DEVICE_CLASS_NAMES,
    EVENT_TYPE_NAMES,
    MAX_TS_MS,
    MIN_TS_MS,
    RECORD_DTYPE,
    Decoded,
    Reason,
    Reject,
    decode,
    frame_bytes,
    raw_identifier_mask,
    records_to_json,
)

# Dead-lettered payloads larger than this keep only their head (a Kafka message must stay small).
DEADLETTER_MAX_BYTES = 65_536
_KNOWN_TYPES = np.array(sorted(EVENT_TYPE_NAMES), dtype=np.uint8)
_KNOWN_CLASSES = np.array(sorted(DEVICE_CLASS_NAMES), dtype=np.uint8)


@dataclass(frozen=True)
class Message:
    """The parts of a Kafka message that ingest needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Output:
    """A message to publish: to crowd.deadletter or crowd.late."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class PartitionState:
    applied_offset: int = -1
    watermark_ms: int | None = None


@dataclass
class BatchPlan:
    """Everything one batch changes. Counts are events, except `replayed` (messages)."""

    hll_adds: list[tuple[str, list[bytes]]] = field(default_factory=list)
    expire_at: dict[str, int] = field(default_factory=dict)
    dirty_buckets: set[tuple[str, int]] = field(default_factory=set)
    deadletters: list[Output] = field(default_factory=list)
    late: list[Output] = field(default_factory=list)
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    events_in: int = 0
    counted: int = 0
    deadlettered: int = 0
    late_events: int = 0
    sequence_gaps: int = 0
    sequence_repeats: int = 0
    replayed: int = 0
    frames: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, int]:
        return {
            "events_in": self.events_in,
            "counted": self.counted,
            "deadletter": self.deadlettered,
            "late": self.late_events,
            "sequence_gaps": self.sequence_gaps,
            "sequence_repeats": self.sequence_repeats,
            "frames": self.frames,
        }


class Ingestor:
    """Holds per-partition watermarks, applied offsets and producer sequences between batches.

    The caller loads a partition's persisted state (`restore`) the first time it sees it, and
    forgets it (`forget`) when the partition is revoked, so a rebalance continues where the
    previous owner stopped.
    """

    def __init__(self, settings: Settings, areas: AreaMap) -> None:
        self.settings = settings
        self.areas = areas
        self.keys = KeyLayout(settings.namespace, settings.bucket_s)
        self.partitions: dict[int, PartitionState] = {}
        self.sequences: dict[str, int] = {}

    def known(self, partition: int) -> bool:
        return partition in self.partitions

    def restore(self, partition: int, state: PartitionState, sequences: dict[str, int]) -> None:
        self.partitions[partition] = state
        self.sequences.update(sequences)

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)
        suffix = f":{partition}"
        for name in [n for n in self.sequences if n.endswith(suffix)]:
            del self.sequences[name]

    @property
    def stream_now_ms(self) -> int | None:
        return _highest_watermark(self.partitions.values())

    def plan(self, messages: Iterable[Message], wall_now_ms: int) -> BatchPlan:
        """Plan a batch without changing this Ingestor: `commit(plan)` once it is written.

        Planning works on copies of the partition states and sequences, so a batch whose write
        failed can be planned again from the same starting point.
        """
        plan = BatchPlan()
        accepted: list[np.ndarray] = []
        for message in messages:
            state = self._claim(plan, message)
            if state is None:
                continue
            decoded = decode(message.value, self.settings.max_message_bytes)
            plan.events_in += len(decoded.records) + sum(r.events for r in decoded.rejects)
            for reject in decoded.rejects:
                self._deadletter(plan, message, reject)
            if decoded.kind == "frame" and decoded.producer is not None:
                plan.frames += 1
                self._follow_sequence(plan, message.partition, decoded)
            if len(decoded.records):
                accepted.append(self._check_records(plan, message, decoded, state, wall_now_ms))
        records = np.concatenate(accepted) if accepted else np.zeros(0, dtype=RECORD_DTYPE)
        plan.counted = len(records)
        if len(records):
            self._plan_hll_adds(plan, records, wall_now_ms)
        return plan

    def quarantine(self, messages: Iterable[Message], error: str) -> BatchPlan:
        """A plan that dead-letters every message whole (reason processing_error).

        The agent's last resort when planning a batch raised: the messages are not lost, the
        books still close, and the stream goes on.
        """
        plan = BatchPlan()
        for message in messages:
            state = self._claim(plan, message)
            if state is None:
                continue
            plan.events_in += 1
            self._deadletter(plan, message, Reject(Reason.PROCESSING_ERROR, error, message.value, 1))
        return plan

    def commit(self, plan: BatchPlan) -> None:
        """Adopt a written plan's partition states and sequence numbers."""
        self.partitions.update(plan.partitions)
        self.sequences.update(plan.sequences)

    def _claim(self, plan: BatchPlan, message: Message) -> PartitionState | None:
        """The plan's working copy of the message's partition state, advanced past the message;
        None when the message was applied before (a redelivery after a restart)."""
        state = plan.partitions.get(message.partition)
        if state is None:
            state = replace(self.partitions.get(message.partition, PartitionState()))
        if message.offset <= state.applied_offset:
            plan.replayed += 1
            return None
        state.applied_offset = message.offset
        plan.partitions[message.partition] = state
        return state

    def _follow_sequence(self, plan: BatchPlan, partition: int, decoded: Decoded) -> None:
        """Frame numbers run per (producer, partition): a jump is upstream loss, a step back a repeat."""
        name = f"{decoded.producer:016x}:{partition}"
        seq = int(decoded.sequence or 0)
        last = plan.sequences.get(name, self.sequences.get(name))
        if last is not None:
            if seq > last + 1:
                plan.sequence_gaps += seq - last - 1
            elif seq <= last:
                plan.sequence_repeats += 1
        plan.sequences[name] = seq if last is None else max(last, seq)

    def _check_records(
        self, plan: BatchPlan, message: Message, decoded: Decoded, state: PartitionState, wall_now_ms: int
    ) -> np.ndarray:
        """Semantic checks on a message's records; returns the accepted ones and plans the rest."""
        records = decoded.records
        settings = self.settings
        cell_index, known_cell = self.areas.cell_index(records["cell"])
        ts = records["ts"]
        reference = wall_now_ms if state.watermark_ms is None else max(wall_now_ms, state.watermark_ms)
        checks = [
            (raw_identifier_mask(records), Reason.RAW_IDENTIFIER, "device bytes are a raw identifier in clear"),
            (~np.isin(records["type"], _KNOWN_TYPES), Reason.UNKNOWN_TYPE, "event type code not in v1"),
            (~np.isin(records["device_class"], _KNOWN_CLASSES), Reason.BAD_FIELD, "device class code not in v1"),
            ((ts < MIN_TS_MS) | (ts > MAX_TS_MS), Reason.BAD_TIME, "event time outside 2000-2100"),
            (ts > reference + settings.max_future_s * 1000, Reason.FUTURE_TIME, "event time too far ahead of stream time"),
            (~known_cell, Reason.UNKNOWN_CELL, "cell id not in the areas file"),
        ]
        bad = np.zeros(len(records), dtype=bool)
        for mask, reason, detail in checks:
            mask = mask & ~bad  # each record is rejected once, for its first failing check
            if mask.any():
                rejected = records[mask]
                if reason == Reason.RAW_IDENTIFIER:
                    rejected = rejected.copy()
                    rejected["device"] = np.zeros(1, dtype="V8")  # never forwarded in clear
                payload = self._encode_like(decoded, rejected)
                self._deadletter(plan, message, Reject(reason, detail, payload, int(mask.sum())))
                bad |= mask
        if state.watermark_ms is not None:
            late = ~bad & (ts < state.watermark_ms - settings.grace_s * 1000)
            if late.any():
                n_late = int(late.sum())
                plan.late_events += n_late
                plan.late.append(Output(message.key, self._encode_like(decoded, records[late]), _source(message)))
                bad |= late
        good = records[~bad]
        if len(good):
            newest = int(good["ts"].max())
            if state.watermark_ms is None or newest > state.watermark_ms:
                state.watermark_ms = newest
        return good

    def _plan_hll_adds(self, plan: BatchPlan, records: np.ndarray, wall_now_ms: int) -> None:
        """One PFADD per (key, batch), with the devices deduplicated inside each key."""
        settings = self.settings
        keys = self.keys
        bucket_ms = settings.bucket_ms
        buckets = records["ts"] // bucket_ms
        cell_index, _ = self.areas.cell_index(records["cell"])
        devices = records["device"].view("<u8")
        stream_now = _highest_watermark([*self.partitions.values(), *plan.partitions.values()])
        stream_now = stream_now if stream_now is not None else int(records["ts"].max())
        grace_ms = settings.grace_s * 1000

        def expiry(bucket: int) -> int:
            return expire_at_ms(bucket, bucket_ms, settings.longest_window_ms, grace_ms, stream_now, wall_now_ms)

        for group, bucket, members in _groups(cell_index, buckets, devices):
            key = keys.cell_bucket(int(self.areas.cell_ids[group]), bucket)
            plan.hll_adds.append((key, members))
            plan.expire_at[key] = expiry(bucket)
        event_pos, area_index = self.areas.expand_to_areas(cell_index)
        for group, bucket, members in _groups(area_index, buckets[event_pos], devices[event_pos]):
            area = self.areas.area_ids[group]
            key = keys.area_bucket(area, bucket)
            plan.hll_adds.append((key, members))
            plan.expire_at[key] = expiry(bucket)
            plan.dirty_buckets.add((area, bucket))

    def _deadletter(self, plan: BatchPlan, message: Message, reject: Reject) -> None:
        plan.deadlettered += reject.events
        plan.reasons[reject.reason] = plan.reasons.get(reject.reason, 0) + reject.events
        payload = reject.payload
        headers = [("reason", reject.reason.encode()), ("detail", reject.detail.encode()[:512])]
        headers += list(_source(message))
        headers.append(("events", str(reject.events).encode()))
        if len(payload) > DEADLETTER_MAX_BYTES:
            headers.append(("truncated_from", str(len(payload)).encode()))
            payload = payload[:DEADLETTER_MAX_BYTES]
        plan.deadletters.append(Output(message.key, payload, tuple(headers)))

    @staticmethod
    def _encode_like(decoded: Decoded, records: np.ndarray) -> bytes:
        """Re-encode a subset of a message's records in the message's own format."""
        if decoded.kind == "frame":
            return frame_bytes(np.ascontiguousarray(records), decoded.producer or 0, decoded.sequence or 0)
        return records_to_json(records)


def _highest_watermark(states: Iterable[PartitionState]) -> int | None:
    marks = [s.watermark_ms for s in states if s.watermark_ms is not None]
    return max(marks) if marks else None


def _source(message: Message) -> tuple[tuple[str, bytes], ...]:
    return (
        ("source_topic", message.topic.encode()),
        ("source_partition", str(message.partition).encode()),
        ("source_offset", str(message.offset).encode()),
    )


def _groups(group: np.ndarray, bucket: np.ndarray, devices: np.ndarray):
    """Yield (group, bucket, distinct devices as 8-byte strings) for every (group, bucket) pair."""
    if len(group) == 0:
        return
    order = np.lexsort((devices, bucket, group))
    g, b, d = group[order], bucket[order], devices[order]
    new_group = np.empty(len(g), dtype=bool)
    new_group[0] = True
    new_group[1:] = (g[1:] != g[:-1]) | (b[1:] != b[:-1])
    first_of_device = new_group.copy()
    first_of_device[1:] |= d[1:] != d[:-1]
    g, b, d, new_group = g[first_of_device], b[first_of_device], d[first_of_device], new_group[first_of_device]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(g))
    raw = d.astype("<u8").view("V8").tolist()  # the producer's 8 bytes, unchanged
    for start, end in zip(starts.tolist(), ends.tolist()):
        yield int(g[start]), int(b[start]), raw[start:end]
