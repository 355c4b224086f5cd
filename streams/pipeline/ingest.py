"""The ingest logic: a batch of Kafka messages in, a plan of Redis writes and Kafka outputs out.

Pure (no Kafka, no Redis): the ingest service (streams/pipeline/ingest_service.py) feeds it message
batches and writes the resulting BatchPlan with streams/pipeline/hll_store.py. All per-event work is
numpy; Python loops run per message (frame) or per (key, batch), never per event.

Why one module of about 550 lines: the planner is one pass over a batch whose steps (decode,
validate, late/future/replay split, group by key, distinct per key) share the batch's arrays and
the partitions' state; split across modules, the hot path would be harder to read as a whole and
to measure (docs/performance.md), for no gain in reuse.

Time: each partition has a watermark, the highest event time accepted from it. An event older
than watermark - grace is late (it goes to crowd.late); one newer than max(wall clock, watermark)
+ max_future is rejected as far in the future. See docs/architecture.md.

Replays: every partition's last applied offset is kept with the accounting in Redis. A message at
or below it was applied before a restart and is skipped, so redelivery never counts twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from streams.core.areas import AreaMap
from streams.core.keys import KeyLayout
from streams.core.segments import STORED, ResidentTable, band
from streams.core.settings import Settings
from streams.core.windows import expire_at_ms
from streams.core.wire import (
    DEVICE_CLASS_NAMES,
    DEVICE_CLASSES,
    EVENT_TYPE_NAMES,
    FLAG_SHADOW,
    MAX_TS_MS,
    MIN_TS_MS,
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
PHONE_CLASS = DEVICE_CLASSES["phone"]
# The same as lookup tables indexed by the u8 code: one gather instead of a set search.
_TYPE_OK = np.isin(np.arange(256), _KNOWN_TYPES)
_CLASS_OK = np.isin(np.arange(256), _KNOWN_CLASSES)


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


@dataclass(frozen=True)
class HllAdds:
    """A batch's HyperLogLog adds in one flat layout, with no Python object per member:
    key i receives members[starts[i]:starts[i + 1]] and expires at expire_at_ms[i].

    members holds each device's 8 bytes exactly as the producer wrote them, viewed as uint64
    (so numpy can sort and compare them); streams/pipeline/hll_store.py sends them without a copy per
    member.
    """

    keys: list[str]
    expire_at_ms: list[int]
    starts: np.ndarray  # int64, len(keys) + 1
    members: np.ndarray  # uint64

    @classmethod
    def empty(cls) -> HllAdds:
        return cls([], [], np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, indices: Sequence[int]) -> HllAdds:
        """The adds of these keys only, in this order (a Redis Cluster node's share)."""
        if len(indices) == len(self.keys) and list(indices) == list(range(len(self.keys))):
            return self
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.starts[idx + 1] - self.starts[idx]
        starts = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        # Member j of the result comes from old position starts_old[key] + (j - starts_new[key]).
        gather = np.repeat(self.starts[idx] - starts[:-1], lengths) + np.arange(starts[-1], dtype=np.int64)
        return HllAdds([self.keys[i] for i in indices], [self.expire_at_ms[i] for i in indices], starts, self.members[gather])

    def as_lists(self) -> list[tuple[str, list[bytes]]]:
        """(key, members as 8-byte strings) per key: the readable form, for tests and debugging."""
        raw = self.members.view("V8").tolist()
        bounds = self.starts.tolist()
        return [(key, raw[bounds[i] : bounds[i + 1]]) for i, key in enumerate(self.keys)]


@dataclass
class BatchPlan:
    """Everything one batch changes. Counts are events, except `replayed` (messages)."""

    adds: HllAdds = field(default_factory=HllAdds.empty)
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
    shadow_events: int = 0  # counted events that were rotation shadows (included in counted)
    #: Pseudonym epochs the shadow events announce (the epoch after their own): the feed says it rotates.
    declared_epochs: set[int] = field(default_factory=set)
    m2m_events: int = 0  # counted events of M2M devices (in no area's HyperLogLog)
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def hll_adds(self) -> list[tuple[str, list[bytes]]]:
        """One (key, distinct members) per HyperLogLog key the batch touches."""
        return self.adds.as_lists()

    @property
    def expire_at(self) -> dict[str, int]:
        """Key -> wall-clock expiry (epoch ms) to set with the key's PFADD."""
        return dict(zip(self.adds.keys, self.adds.expire_at_ms))

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
            "m2m": self.m2m_events,
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
        self.rotation = settings.rotation
        self.residents = ResidentTable(areas)
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

    def forget_all(self) -> None:
        """Forget every partition: the next batch reloads their states from Redis."""
        self.partitions.clear()
        self.sequences.clear()

    @property
    def stream_now_ms(self) -> int | None:
        return _highest_watermark(self.partitions.values())

    def plan(self, messages: Iterable[Message], wall_now_ms: int) -> BatchPlan:
        """Plan a batch without changing this Ingestor: `commit(plan)` once it is written.

        Planning works on copies of the partition states and sequences, so a batch whose write
        failed can be planned again from the same starting point.

        The per-record checks run once over the whole batch (numpy), and Python loops run per
        message: a message whose records are all well-formed, at known cells, neither too far
        ahead nor late (the normal case) is settled with a few scalar comparisons; any other
        message takes the per-record path (_check_records), which also writes its dead letters.
        Both give exactly the same result; the split only saves numpy calls per message.
        """
        plan = BatchPlan()
        settings = self.settings
        entries: list[tuple[Message, PartitionState, Decoded]] = []
        blocks: list[np.ndarray] = []
        shadows: list[np.ndarray] = []
        for message in messages:
            state = self._claim(plan, message)
            if state is None:
                continue
            decoded = decode(message.value, settings.max_message_bytes)
            entries.append((message, state, decoded))
            if len(decoded.records):
                blocks.append(decoded.records)
                shadows.append(decoded.shadow_mask())
        if blocks:
            records = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
            shadow = np.concatenate(shadows)
            sizes = np.fromiter((len(b) for b in blocks), dtype=np.int64, count=len(blocks))
            offsets = np.zeros(len(blocks), dtype=np.int64)
            np.cumsum(sizes[:-1], out=offsets[1:])
            ts = np.ascontiguousarray(records["ts"])
            cell_index, known_cell = self.areas.cell_index(np.ascontiguousarray(records["cell"]))
            bad = np.zeros(len(records), dtype=bool)
            for mask, _, _ in _record_checks(records, known_cell, None):
                bad |= mask
            any_bad = np.logical_or.reduceat(bad, offsets).tolist()
            newest = np.maximum.reduceat(ts, offsets).tolist()
            oldest = np.minimum.reduceat(ts, offsets).tolist()
        fast = np.zeros(len(blocks), dtype=bool)
        slow_good: list[np.ndarray] = []
        slow_shadow: list[np.ndarray] = []
        max_future_ms = settings.max_future_s * 1000
        grace_ms = settings.grace_s * 1000
        block = 0
        for message, state, decoded in entries:
            plan.events_in += len(decoded.records) + sum(r.events for r in decoded.rejects)
            for reject in decoded.rejects:
                self._deadletter(plan, message, reject)
            if decoded.kind == "frame" and decoded.producer is not None:
                plan.frames += 1
                self._follow_sequence(plan, message.partition, decoded)
            if not len(decoded.records):
                continue
            i, block = block, block + 1
            watermark = state.watermark_ms
            if not any_bad[i]:
                reference = wall_now_ms if watermark is None else max(wall_now_ms, watermark)
                if newest[i] <= reference + max_future_ms and (watermark is None or oldest[i] >= watermark - grace_ms):
                    fast[i] = True
                    if watermark is None or newest[i] > watermark:
                        state.watermark_ms = newest[i]
                    continue
            good, good_shadow = self._check_records(plan, message, decoded, state, wall_now_ms)
            slow_good.append(good)
            slow_shadow.append(good_shadow)
        if not blocks:
            return plan
        if fast.all():
            good_ts, good_cells, good_devices, good_shadow = ts, cell_index, records["device"], shadow
            good_class, good_segment = records["device_class"], records["segment"]
        else:
            take = np.repeat(fast, sizes)
            good_ts, good_cells, good_devices = ts[take], cell_index[take], records["device"][take]
            good_shadow, good_class, good_segment = shadow[take], records["device_class"][take], records["segment"][take]
            if slow_good:
                slow = np.concatenate(slow_good)
                good_ts = np.concatenate([good_ts, slow["ts"]])
                good_cells = np.concatenate([good_cells, self.areas.cell_index(slow["cell"])[0]])
                good_devices = np.concatenate([good_devices, slow["device"]])
                good_shadow = np.concatenate([good_shadow, *slow_shadow])
                good_class = np.concatenate([good_class, slow["device_class"]])
                good_segment = np.concatenate([good_segment, slow["segment"]])
        plan.counted = len(good_ts)
        plan.shadow_events = int(good_shadow.sum())
        if plan.shadow_events and self.rotation.enabled:
            plan.declared_epochs = {int(e) + 1 for e in np.unique(self.rotation.epoch(good_ts[good_shadow]))}
        # M2M devices (meters, cars) are counted in the books but in no area's HyperLogLog:
        # the areas count phones, the devices people carry (docs/estimation.md).
        phone = good_class == PHONE_CLASS
        if not phone.all():
            good_ts, good_cells, good_devices = good_ts[phone], good_cells[phone], good_devices[phone]
            good_shadow, good_segment = good_shadow[phone], good_segment[phone]
        plan.m2m_events = int(len(phone) - len(good_ts))
        if len(good_ts):
            devices = np.ascontiguousarray(good_devices).view("<u8")
            self._plan_hll_adds(plan, good_ts, good_cells, devices, wall_now_ms, good_shadow, good_segment)
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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Semantic checks on a message's records; returns the accepted ones (and their shadow
        flags) and plans the rest."""
        records = decoded.records
        shadow = decoded.shadow_mask()
        settings = self.settings
        _, known_cell = self.areas.cell_index(records["cell"])
        ts = records["ts"]
        reference = wall_now_ms if state.watermark_ms is None else max(wall_now_ms, state.watermark_ms)
        future = ts > reference + settings.max_future_s * 1000
        bad = np.zeros(len(records), dtype=bool)
        for mask, reason, detail in _record_checks(records, known_cell, future):
            mask = mask & ~bad  # each record is rejected once, for its first failing check
            if mask.any():
                rejected = records[mask]
                if reason == Reason.RAW_IDENTIFIER:
                    rejected = rejected.copy()
                    rejected["device"] = np.zeros(1, dtype="V8")  # never forwarded in clear
                payload = self._encode_like(decoded, rejected, shadow[mask])
                self._deadletter(plan, message, Reject(reason, detail, payload, int(mask.sum())))
                bad |= mask
        if state.watermark_ms is not None:
            late = ~bad & (ts < state.watermark_ms - settings.grace_s * 1000)
            if late.any():
                n_late = int(late.sum())
                plan.late_events += n_late
                payload = self._encode_like(decoded, records[late], shadow[late])
                plan.late.append(Output(message.key, payload, _source(message)))
                bad |= late
        good = records[~bad]
        if len(good):
            newest = int(good["ts"].max())
            if state.watermark_ms is None or newest > state.watermark_ms:
                state.watermark_ms = newest
        return good, shadow[~bad]

    def _plan_hll_adds(
        self,
        plan: BatchPlan,
        ts: np.ndarray,
        cell_index: np.ndarray,
        devices: np.ndarray,
        wall_now_ms: int,
        shadow: np.ndarray,
        segment: np.ndarray,
    ) -> None:
        """One PFADD per (key, batch), with the devices deduplicated inside each key.

        Besides each area's total, its segment keys (streams/core/segments.py): residents (home cell
        in the area) and the device's age band, when the record carries them.

        Shadow records (next-epoch pseudonyms, key rotation) go to their bucket's shadow key:
        the shadow bit is folded into the bucket dimension, so they group like any bucket.

        Sorting the events by device once, then stably by (cell, bucket) and by (area, bucket),
        leaves each key's devices in order, so repeats are neighbours. An event repeated in its
        (cell, bucket) is repeated in all of that cell's areas too: it is dropped before the
        events are expanded to their areas.
        """
        settings = self.settings
        keys = self.keys
        bucket_ms = settings.bucket_ms
        buckets = ts // bucket_ms
        first_bucket = int(buckets.min())
        n_spans = int(buckets.max()) - first_bucket + 1
        n_buckets = 2 * n_spans  # (bucket, shadow) pairs
        order = np.argsort(devices)
        devices, cell_index, segment = devices[order], cell_index[order], segment[order]
        rel_bucket = (buckets[order] - first_bucket) * 2 + shadow[order]
        n_cells = len(self.areas.cell_ids)
        cell_keys, cell_starts, cell_members, cell_kept = _distinct_per_key(
            cell_index * n_buckets + rel_bucket, devices, n_cells * n_buckets
        )
        devices, cell_index, rel_bucket = devices[cell_kept], cell_index[cell_kept], rel_bucket[cell_kept]
        segment = segment[cell_kept]
        event_pos, area_index = self.areas.expand_to_areas(cell_index)
        n_area_keys = len(self.areas.area_ids) * n_buckets
        area_composite = area_index * n_buckets + rel_bucket[event_pos]
        area_devices = devices[event_pos]
        area_keys, area_starts, area_members, _ = _distinct_per_key(area_composite, area_devices, n_area_keys)
        # Segment keys: kind 0 residents, kinds 1-3 the age bands. Each block of rows stays in
        # device order, and a key's rows all come from one block.
        if settings.segments:
            area_segment = segment[event_pos]
            resident_rows = np.flatnonzero(self.residents.resident(area_index, area_segment))
            bands = band(area_segment)
            band_rows = np.flatnonzero(bands)
        else:  # nothing reads segment keys: write none
            resident_rows = band_rows = np.zeros(0, dtype=np.int64)
            bands = np.zeros(len(event_pos), dtype=np.int64)
        rows = np.concatenate([resident_rows, band_rows])
        kind = np.concatenate([np.zeros(len(resident_rows), dtype=np.int64), bands[band_rows]])
        seg_keys, seg_starts, seg_members, _ = _distinct_per_key(
            kind * n_area_keys + area_composite[rows], area_devices[rows], len(STORED) * n_area_keys
        )

        stream_now = _highest_watermark([*self.partitions.values(), *plan.partitions.values()])
        stream_now = stream_now if stream_now is not None else int(ts.max())
        grace_ms = settings.grace_s * 1000
        expiry = {
            first_bucket + b: expire_at_ms(
                first_bucket + b, bucket_ms, settings.longest_window_ms, grace_ms, stream_now, wall_now_ms
            )
            for b in range(n_spans)
        }
        names: list[str] = []
        expire: list[int] = []
        cell_ids = self.areas.cell_ids.tolist()
        for composite in cell_keys.tolist():
            cell, pair = divmod(composite, n_buckets)
            bucket, is_shadow = first_bucket + pair // 2, pair % 2 == 1
            names.append(keys.cell_bucket(cell_ids[cell], bucket, is_shadow))
            expire.append(expiry[bucket])
        area_ids = self.areas.area_ids
        for composite in area_keys.tolist():
            area, pair = divmod(composite, n_buckets)
            bucket, is_shadow = first_bucket + pair // 2, pair % 2 == 1
            names.append(keys.area_bucket(area_ids[area], bucket, is_shadow))
            expire.append(expiry[bucket])
            plan.dirty_buckets.add((area_ids[area], bucket))
        for composite in seg_keys.tolist():
            kind_index, rest = divmod(composite, n_area_keys)
            area, pair = divmod(rest, n_buckets)
            bucket, is_shadow = first_bucket + pair // 2, pair % 2 == 1
            names.append(keys.area_bucket(area_ids[area], bucket, is_shadow, STORED[kind_index]))
            expire.append(expiry[bucket])
        starts = np.concatenate([
            cell_starts[:-1], area_starts[:-1] + len(cell_members), seg_starts + len(cell_members) + len(area_members)
        ])
        plan.adds = HllAdds(names, expire, starts, np.concatenate([cell_members, area_members, seg_members]))

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
    def _encode_like(decoded: Decoded, records: np.ndarray, shadow: np.ndarray) -> bytes:
        """Re-encode a subset of a message's records in the message's own format."""
        if decoded.kind == "frame":
            flags = FLAG_SHADOW if shadow.any() else 0  # a frame's records share its flag
            return frame_bytes(np.ascontiguousarray(records), decoded.producer or 0, decoded.sequence or 0, flags)
        return records_to_json(records, shadow)


def _record_checks(
    records: np.ndarray, known_cell: np.ndarray, future: np.ndarray | None
) -> list[tuple[np.ndarray, str, str]]:
    """The per-record checks, in order: a record is rejected for the first one it fails.

    `future` (event time too far ahead) depends on the partition's watermark, so the batch-wide
    pass in Ingestor.plan leaves it out (None) and compares each message's newest event instead.
    Every other check belongs here, so both paths apply the same rules.
    """
    ts = records["ts"]
    checks = [
        (raw_identifier_mask(records), Reason.RAW_IDENTIFIER, "device bytes are a raw identifier in clear"),
        (~_TYPE_OK[records["type"]], Reason.UNKNOWN_TYPE, "event type code not in v1"),
        (~_CLASS_OK[records["device_class"]], Reason.BAD_FIELD, "device class code not in v1"),
        ((ts < MIN_TS_MS) | (ts > MAX_TS_MS), Reason.BAD_TIME, "event time outside 2000-2100"),
        (future, Reason.FUTURE_TIME, "event time too far ahead of stream time"),
        (~known_cell, Reason.UNKNOWN_CELL, "cell id not in the areas file"),
    ]
    return [(mask, reason, detail) for mask, reason, detail in checks if mask is not None]


def _highest_watermark(states: Iterable[PartitionState]) -> int | None:
    marks = [s.watermark_ms for s in states if s.watermark_ms is not None]
    return max(marks) if marks else None


def _source(message: Message) -> tuple[tuple[str, bytes], ...]:
    return (
        ("source_topic", message.topic.encode()),
        ("source_partition", str(message.partition).encode()),
        ("source_offset", str(message.offset).encode()),
    )


def _stable_argsort(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of non-negative integers below `bound`: a linear-time radix sort when
    they fit in 16 bits (numpy's stable sort of 16-bit integers), a merge sort otherwise."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    if bound <= 1 << 32:
        return np.argsort(keys.astype(np.uint32), kind="stable")
    return np.argsort(keys, kind="stable")


def _distinct_per_key(
    composite: np.ndarray, devices: np.ndarray, bound: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group devices (already in device order) by an integer key below `bound`.

    Returns (the distinct keys ascending, CSR starts into members, the distinct devices of each
    key in ascending order, and a mask over the input marking the first copy of each
    (key, device) pair).
    """
    order = _stable_argsort(composite, bound)
    key, device = composite[order], devices[order]
    new_key = np.empty(len(key), dtype=bool)
    new_key[:1] = True
    np.not_equal(key[1:], key[:-1], out=new_key[1:])
    first = new_key.copy()
    first[1:] |= device[1:] != device[:-1]
    key, device, new_key = key[first], device[first], new_key[first]
    starts = np.flatnonzero(new_key)
    kept = np.empty(len(first), dtype=bool)
    kept[order] = first
    return key[starts], np.append(starts, len(key)), device, kept
