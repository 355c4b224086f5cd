"""The optimised ingest hot path against plain per-event Python: batch-wide checks with the
per-message fallback, sort-based grouping, and the RESP bytes hll_store sends."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from streams.core import hll
from streams.core.areas import load_areas
from streams.core.keys import KeyLayout
from streams.core.rotation import Rotation
from streams.core.settings import Settings
from streams.core.windows import Span
from streams.core.wire import MAX_TS_MS, MIN_TS_MS, RECORD_DTYPE, frame_bytes, records_to_json
from streams.pipeline.hll_store import EMPTY_DENSE_HLL, pack_hll_adds, pack_span_requests
from streams.pipeline.ingest import HllAdds, Ingestor, Message

WALL = 1_767_600_000_000
GRACE_MS = 120_000
FUTURE_MS = 900_000
BUCKET_MS = 60_000


def random_batch(rng: np.random.Generator, cells: np.ndarray, messages: int) -> list[Message]:
    """Messages over 3 partitions, mostly good records, with every kind of bad one sprinkled in,
    event times that wander forward and back (so some are late) and some JSON messages."""
    out = []
    offsets = [0, 0, 0]
    base = [WALL - 3_600_000] * 3
    for _ in range(messages):
        p = int(rng.integers(0, 3))
        n = int(rng.integers(1, 300))
        recs = np.zeros(n, dtype=RECORD_DTYPE)
        recs["device"] = rng.integers(1, 400, n, dtype=np.uint64).view("V8")  # repeats on purpose
        base[p] += int(rng.integers(-20_000, 200_000))
        recs["ts"] = base[p] + rng.integers(-30_000, 30_000, n)
        recs["cell"] = rng.choice(cells, n)
        recs["type"] = rng.integers(1, 7, n)
        kind = rng.random()
        if kind < 0.1:  # some records of a partition that fell behind: late
            recs["ts"][: n // 2] -= 300_000
        elif kind < 0.2:  # one record far in the future, nothing else wrong
            recs["ts"][int(rng.integers(0, n))] = WALL + 3_000_000
        elif kind < 0.4:  # bad records of every kind
            k = rng.integers(0, n, 6)
            recs["type"][k[0]] = 0
            recs["device_class"][k[1]] = 7
            recs["ts"][k[2]] = MIN_TS_MS - 1 if rng.random() < 0.5 else MAX_TS_MS + 1
            recs["cell"][k[3]] = 7
            if rng.random() < 0.5:
                recs["ts"][k[4]] = WALL + 3_000_000  # far in the future
            recs["device"][k[5]] = np.frombuffer(b"+4477009", dtype="V8")[0]  # a raw identifier
        value = records_to_json(recs) if rng.random() < 0.15 else frame_bytes(recs, 9, offsets[p])
        out.append(Message("crowd.events", p, offsets[p], b"k", value))
        offsets[p] += 1
    return out


def reference(messages: list[Message], areas, settings: Settings):
    """docs/wire-format.md and docs/architecture.md, one event at a time."""
    from streams.core.wire import decode

    watermark: dict[int, int | None] = defaultdict(lambda: None)
    reasons: dict[str, int] = defaultdict(int)
    late = counted = 0
    sets: dict[str, set[bytes]] = defaultdict(set)
    known = set(areas.cell_ids.tolist())
    for m in messages:
        decoded = decode(m.value, settings.max_message_bytes)
        for r in decoded.rejects:
            reasons[r.reason] += r.events
        wm = watermark[m.partition]
        reference_ms = WALL if wm is None else max(WALL, wm)
        newest = None
        for device, ts, cell, etype, eclass, _seg in decoded.records.tolist():
            device = bytes(device)
            if all(c in b"0123456789+" for c in device):
                reasons["raw_identifier"] += 1
            elif etype not in range(1, 7):
                reasons["unknown_event_type"] += 1
            elif eclass not in (0, 1):
                reasons["bad_field"] += 1
            elif not MIN_TS_MS <= ts <= MAX_TS_MS:
                reasons["bad_event_time"] += 1
            elif ts > reference_ms + FUTURE_MS:
                reasons["future_event_time"] += 1
            elif cell not in known:
                reasons["unknown_cell"] += 1
            elif wm is not None and ts < wm - GRACE_MS:
                late += 1
            else:
                counted += 1
                newest = ts if newest is None else max(newest, ts)
                bucket = ts // BUCKET_MS
                sets[f"cp:{{c:{cell}}}:hll:60s:{bucket}"].add(device)
                for area in areas.areas_of_cell(cell):
                    sets[f"cp:{{a:{area}}}:hll:60s:{bucket}"].add(device)
        if newest is not None and (wm is None or newest > wm):
            watermark[m.partition] = newest
    return dict(reasons), late, counted, dict(sets), dict(watermark)


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_plans_exactly_like_the_rules_applied_event_by_event(seed: int) -> None:
    settings = Settings(grace_s=GRACE_MS // 1000, max_future_s=FUTURE_MS // 1000)
    areas = load_areas(settings.areas_path)
    rng = np.random.default_rng(seed)
    messages = random_batch(rng, areas.cell_ids, 60)
    ingestor = Ingestor(settings, areas)
    plan = ingestor.plan(messages, WALL)
    reasons, late, counted, sets, watermarks = reference(messages, areas, settings)
    assert plan.reasons == reasons
    assert (plan.late_events, plan.counted) == (late, counted)
    assert plan.events_in == plan.counted + plan.deadlettered + plan.late_events
    got = {key: set(members) for key, members in plan.hll_adds}
    assert got == sets
    assert all(len(members) == len(set(members)) for _, members in plan.hll_adds)
    assert {p: s.watermark_ms for p, s in plan.partitions.items()} == watermarks
    # Dead letters and late outputs come out in message order, whichever path a message took.
    offsets = [(m.partition, m.offset) for m in messages]
    order = [offsets.index((int(dict(d.headers)["source_partition"]), int(dict(d.headers)["source_offset"])))
             for d in plan.deadletters]
    assert order == sorted(order)


def test_members_are_grouped_in_key_then_device_order() -> None:
    settings = Settings()
    areas = load_areas(settings.areas_path)
    cell = int(areas.cell_ids[3])
    recs = np.zeros(5, dtype=RECORD_DTYPE)
    recs["device"] = np.array([9, 3, 9, 1, 3], dtype="<u8").view("V8")
    recs["ts"] = [WALL, WALL, WALL, WALL + BUCKET_MS, WALL]
    recs["cell"] = cell
    recs["type"] = 4
    plan = Ingestor(settings, areas).plan([Message("t", 0, 0, b"k", frame_bytes(recs, 1, 0))], WALL)
    bucket = WALL // BUCKET_MS
    as_ints = {key: [int.from_bytes(m, "little") for m in members] for key, members in plan.hll_adds}
    assert as_ints[f"cp:{{c:{cell}}}:hll:60s:{bucket}"] == [3, 9]
    assert as_ints[f"cp:{{c:{cell}}}:hll:60s:{bucket + 1}"] == [1]
    assert list(as_ints)[0] == f"cp:{{c:{cell}}}:hll:60s:{bucket}"  # cells first, then areas


def parse_resp(payload: bytes) -> list[list[bytes]]:
    """A minimal RESP array-of-bulk-strings parser."""
    commands, i = [], 0
    while i < len(payload):
        assert payload[i : i + 1] == b"*"
        end = payload.index(b"\r\n", i)
        n, i = int(payload[i + 1 : end]), end + 2
        args = []
        for _ in range(n):
            assert payload[i : i + 1] == b"$"
            end = payload.index(b"\r\n", i)
            size, i = int(payload[i + 1 : end]), end + 2
            args.append(payload[i : i + size])
            assert payload[i + size : i + size + 2] == b"\r\n"
            i += size + 2
        commands.append(args)
    return commands


def random_adds(seed: int, keys: list[str], sizes: list[int]) -> tuple[HllAdds, np.ndarray]:
    """Adds of random members, `sizes[i]` for keys[i], expiring at 11, 22, 33, ...; and the members."""
    members = np.random.default_rng(seed).integers(0, 2**64 - 1, sum(sizes), dtype=np.uint64, endpoint=True)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return HllAdds(keys, [11 * (i + 1) for i in range(len(keys))], starts, members), members


def test_packed_commands_carry_every_member_once_in_bounded_pfadds() -> None:
    adds, members = random_adds(1, ["a", "b", "c"], [3, 5, 12])
    chunks = pack_hll_adds(adds, max_members=5, dense_from=10)
    assert len(chunks) == 1
    payload, count = chunks[0]
    commands = parse_resp(payload)
    assert len(commands) == count
    raw = members.view("V8").tolist()
    assert commands == [
        [b"PFADD", b"a", *raw[0:3]], [b"PEXPIREAT", b"a", b"11"],
        [b"PFADD", b"b", *raw[3:8]], [b"PEXPIREAT", b"b", b"22"],
        [b"SET", b"c", EMPTY_DENSE_HLL, b"NX"],
        [b"PFADD", b"c", *raw[8:13]], [b"PFADD", b"c", *raw[13:18]], [b"PFADD", b"c", *raw[18:20]],
        [b"PEXPIREAT", b"c", b"33"],
    ]
    assert len(EMPTY_DENSE_HLL) == 16 + 12_288 and EMPTY_DENSE_HLL[:5] == b"HYLL\x00"


def test_large_keys_are_written_as_their_registers_through_the_writers_staging_key() -> None:
    adds, members = random_adds(4, ["a", "{big}:k", "c"], [4, 1_500, 3])
    (payload, count), = pack_hll_adds(adds, dense_from=1_000, staging=lambda key: f"{key}:stage:w1")
    commands = parse_resp(payload)
    assert len(commands) == count
    raw = members.view("V8").tolist()
    index, rank = hll.register_and_rank(members[4:1_504])
    (registers,) = hll.registers_of(index, rank, np.zeros(1_500, dtype=np.int64), 1)
    assert commands == [
        [b"SET", b"{big}:k:stage:w1", hll.dense_strings(registers[None, :])[0], b"PX", b"60000"],
        [b"PFMERGE", b"{big}:k", b"{big}:k:stage:w1"],
        [b"DEL", b"{big}:k:stage:w1"],
        [b"PEXPIREAT", b"{big}:k", b"22"],
        [b"PFADD", b"a", *raw[0:4]], [b"PEXPIREAT", b"a", b"11"],
        [b"PFADD", b"c", *raw[1_504:1_507]], [b"PEXPIREAT", b"c", b"33"],
    ]
    # Every member's register holds at least its rank: none is lost on the way.
    assert np.all(registers[index] >= rank) and int(np.count_nonzero(registers)) <= 1_500
    # Without a staging key (register writes off) the same key goes member by member.
    plain = parse_resp(pack_hll_adds(adds, dense_from=1_000)[0][0])
    assert [b"PFADD", b"{big}:k", *raw[4:1_504]] in plain and not any(c[0] == b"PFMERGE" for c in plain)


def test_a_batch_is_cut_into_pipeline_chunks_at_command_boundaries() -> None:
    adds, _ = random_adds(2, ["w", "x", "y", "z"], [300, 1, 2500, 40])
    whole = pack_hll_adds(adds, max_members=1000)
    chunks = pack_hll_adds(adds, max_members=1000, chunk_bytes=10_000)
    assert len(whole) == 1 and len(chunks) > 3
    assert b"".join(c for c, _ in chunks) == whole[0][0]
    for payload, count in chunks:
        assert len(parse_resp(payload)) == count  # every chunk holds whole commands


def test_packed_span_counts_are_the_pfcounts_of_the_spans_keys_across_a_rotation() -> None:
    # Daily rotation at 04:00: the points straddle a boundary, so older buckets are read from
    # their shadow (":next") keys, exactly as KeyLayout.area_span names them.
    keys = KeyLayout("ns", 60, Rotation(period_s=86_400, offset_s=4 * 3600, overlap_s=3600))
    boundary = (86_400 * 20_000 + 4 * 3600) // 60
    points = [("stadium", boundary + 10), ("city", boundary - 3), ("stadium", boundary + 70)]
    spans = [Span(0, 300), Span(0, 3600), Span(300, 3300), Span(1800, 1800), Span(0, 900, "res")]
    chunks = pack_span_requests(keys, [(point, spans) for point in points], chunk_commands=4)
    assert [count for _, count in chunks] == [4, 4, 4, 3]
    commands = [command for payload, _ in chunks for command in parse_resp(payload)]
    expected = [
        [b"PFCOUNT", *(name.encode() for name in keys.area_span(area, bucket, span[0], span[1], *span[2:]))]
        for area, bucket in points for span in spans
    ]
    assert commands == expected
    assert any(name.endswith(b":next") for name in commands[1]) and not any(b":next" in n for n in commands[-1])


def test_span_requests_pack_each_points_own_spans_in_order() -> None:
    keys = KeyLayout("ns", 60)
    requests = [(("stadium", 1000), [Span(300, 3300), Span(0, 60)]), (("city", 1000), []), (("city", 1001), [Span(0, 900, "res")])]
    commands = [c for payload, _ in pack_span_requests(keys, requests, chunk_commands=2) for c in parse_resp(payload)]
    assert commands == [
        [b"PFCOUNT", *(name.encode() for name in keys.area_span(area, bucket, *span))]
        for (area, bucket), spans in requests for span in spans
    ]
    assert len(commands) == 3 and len(commands[0]) == 1 + 55 and len(commands[1]) == 2


def test_a_taken_batch_is_planned_in_runs_of_bounded_bytes() -> None:
    from types import SimpleNamespace

    from streams.runtime.app import batches_of_bytes

    events = [SimpleNamespace(message=SimpleNamespace(value=b"x" * n)) for n in (10, 10, 25, 5, 0)]
    runs = batches_of_bytes(events, 20)
    assert [[len(e.message.value) for e in run] for run in runs] == [[10, 10], [25], [5, 0]]
    assert [e for run in runs for e in run] == events  # order kept, nothing dropped
    assert batches_of_bytes([], 20) == []
