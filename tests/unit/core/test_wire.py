"""Wire format v1 (streams/core/wire.py): layout, round trips, and every rejection with its reason."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from streams.core.wire import (
    EVENT_TYPES,
    FLAG_SHADOW,
    HEADER_SIZE,
    MAX_RECORDS_PER_FRAME,
    MAX_TS_MS,
    MIN_TS_MS,
    RECORD_DTYPE,
    RECORD_SIZE,
    Reason,
    Reject,
    decode,
    decode_frame,
    decode_json,
    frame_bytes,
    records_to_json,
)

MAX_BYTES = 1 << 20
TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
GOOD_EVENT = {"device": "0011223344556677", "cell": 1038, "ts": TS, "type": "attach"}


def random_records(n: int, seed: int) -> np.ndarray:
    """Valid records with every field drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["device"] = np.frombuffer(rng.bytes(8 * n), dtype="V8")
    records["ts"] = rng.integers(MIN_TS_MS, MAX_TS_MS, size=n, endpoint=True)
    records["cell"] = rng.integers(0, 2**32, size=n, dtype=np.uint32)
    records["type"] = rng.choice(list(EVENT_TYPES.values()), size=n)
    records["device_class"] = rng.integers(0, 2, size=n)
    records["segment"] = rng.integers(0, 2**16, size=n)
    return records


def header(count: int, *, magic: bytes = b"CP", version: int = 1, flags: int = 0) -> bytes:
    """A header built by hand from the documented layout, independent of streams.core.wire.HEADER."""
    return struct.pack("<2sBBQQI", magic, version, flags, 7, 3, count)


def event_bytes(**changes: object) -> bytes:
    return json.dumps({**GOOD_EVENT, **changes}).encode()


def without(name: str) -> bytes:
    return json.dumps({k: v for k, v in GOOD_EVENT.items() if k != name}).encode()


def only_reject(decoded) -> Reject:
    assert len(decoded.records) == 0
    assert len(decoded.rejects) == 1
    return decoded.rejects[0]


# --- layout ----------------------------------------------------------------------------------


def test_header_and_record_are_24_bytes_each() -> None:
    assert HEADER_SIZE == 24
    assert RECORD_SIZE == 24
    offsets = {name: RECORD_DTYPE.fields[name][1] for name in RECORD_DTYPE.names}
    assert offsets == {"device": 0, "ts": 8, "cell": 16, "type": 20, "device_class": 21, "segment": 22}


def test_hand_built_frame_decodes_field_by_field() -> None:
    device = bytes.fromhex("a1b2c3d4e5f60718")
    value = struct.pack("<2sBBQQI", b"CP", 1, 0, 2**64 - 1, 2**63 + 5, 2)
    value += struct.pack("<8sqIBBH", device, TS, 2**32 - 1, 3, 1, 65_535)
    value += struct.pack("<8sqIBBH", bytes(8), MIN_TS_MS, 0, 6, 0, 0)

    decoded = decode(value, MAX_BYTES)

    assert decoded.kind == "frame"
    assert decoded.rejects == []
    assert decoded.producer == 2**64 - 1
    assert decoded.sequence == 2**63 + 5
    first, second = decoded.records
    assert bytes(first["device"]) == device
    assert (int(first["ts"]), int(first["cell"]), int(first["type"])) == (TS, 2**32 - 1, 3)
    assert (int(first["device_class"]), int(first["segment"])) == (1, 65_535)
    assert bytes(second["device"]) == bytes(8)
    assert (int(second["ts"]), int(second["cell"]), int(second["type"])) == (MIN_TS_MS, 0, 6)
    # And the encoder writes exactly these bytes.
    assert frame_bytes(decoded.records.copy(), 2**64 - 1, 2**63 + 5) == value


# --- round trips -----------------------------------------------------------------------------


def test_frame_round_trip_keeps_records_producer_and_sequence() -> None:
    records = random_records(500, seed=1)

    value = frame_bytes(records, producer=123_456_789, sequence=42)
    decoded = decode(value, MAX_BYTES)

    assert len(value) == 24 + 24 * 500
    assert decoded.kind == "frame"
    assert decoded.rejects == []
    assert (decoded.producer, decoded.sequence) == (123_456_789, 42)
    assert decoded.records.dtype == RECORD_DTYPE
    assert decoded.records.tobytes() == records.tobytes()


def test_empty_frame_is_valid_and_holds_no_records() -> None:
    decoded = decode(frame_bytes(np.zeros(0, dtype=RECORD_DTYPE), 1, 0), MAX_BYTES)

    assert (decoded.kind, len(decoded.records), decoded.rejects) == ("frame", 0, [])


def test_frame_with_the_maximum_record_count_decodes() -> None:
    records = np.zeros(MAX_RECORDS_PER_FRAME, dtype=RECORD_DTYPE)

    decoded = decode_frame(frame_bytes(records, 1, 0))

    assert decoded.rejects == []
    assert len(decoded.records) == 65_536


def test_json_round_trip_keeps_records() -> None:
    records = random_records(300, seed=2)

    decoded = decode(records_to_json(records), MAX_BYTES)

    assert decoded.kind == "json"
    assert decoded.rejects == []
    assert (decoded.producer, decoded.sequence) == (None, None)
    assert decoded.records.tobytes() == records.tobytes()


def test_records_to_json_writes_the_interop_shape() -> None:
    records = np.zeros(1, dtype=RECORD_DTYPE)
    records[0] = (bytes.fromhex("00112233445566ff"), TS, 1038, 3, 1, 7)

    assert records_to_json(records) == (
        b'[{"device":"00112233445566ff","cell":1038,"ts":1700000000000,'
        b'"type":"handover","device_class":"m2m","segment":7}]'
    )


def test_single_json_object_decodes_with_optional_field_defaults() -> None:
    decoded = decode(event_bytes(), MAX_BYTES)

    assert decoded.kind == "json"
    assert decoded.rejects == []
    (record,) = decoded.records
    assert bytes(record["device"]) == bytes.fromhex("0011223344556677")
    assert (int(record["cell"]), int(record["ts"]), int(record["type"])) == (1038, TS, 1)
    assert (int(record["device_class"]), int(record["segment"])) == (0, 0)


def test_json_with_leading_whitespace_is_still_json() -> None:
    decoded = decode(b" \n\t" + event_bytes(), MAX_BYTES)

    assert (decoded.kind, len(decoded.records), decoded.rejects) == ("json", 1, [])


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"device": "AABBCCDDEEFF0011"}, "device", bytes.fromhex("aabbccddeeff0011")),
        ({"device": "aAbBcCdDeEfF0011"}, "device", bytes.fromhex("aabbccddeeff0011")),
        ({"cell": 0}, "cell", 0),
        ({"cell": 2**32 - 1}, "cell", 2**32 - 1),
        ({"ts": MIN_TS_MS}, "ts", MIN_TS_MS),
        ({"ts": MAX_TS_MS}, "ts", MAX_TS_MS),
        ({"type": "data"}, "type", 6),
        ({"device_class": "m2m"}, "device_class", 1),
        ({"device_class": "phone"}, "device_class", 0),
        ({"segment": 65_535}, "segment", 65_535),
    ],
)
def test_json_field_boundaries_are_accepted(changes: dict, field: str, expected: object) -> None:
    decoded = decode_json(event_bytes(**changes))

    assert decoded.rejects == []
    value = decoded.records[0][field]
    assert (bytes(value) if field == "device" else int(value)) == expected


# --- whole-message rejections ----------------------------------------------------------------


def test_empty_message_is_rejected() -> None:
    reject = only_reject(decode(b"", MAX_BYTES))

    assert reject == Reject(Reason.EMPTY, "empty message", b"", 1)


def test_message_over_max_bytes_is_rejected_whole() -> None:
    value = frame_bytes(random_records(10, seed=3), 1, 0)  # 264 bytes

    assert decode(value, max_bytes=264).rejects == []
    reject = only_reject(decode(value, max_bytes=263))
    assert reject == Reject(Reason.OVERSIZED, "264 bytes > limit 263", value, 1)


@pytest.mark.parametrize("value", [b"hello", b"\x00\x01\x02", b"C", b"cp\x01\x00", b"5", b'"a string"', b"null"])
def test_neither_frame_nor_json_is_undecodable(value: bytes) -> None:
    reject = only_reject(decode(value, MAX_BYTES))

    assert (reject.reason, reject.payload, reject.events) == (Reason.UNDECODABLE, value, 1)


def test_bad_magic_is_rejected_by_the_frame_decoder() -> None:
    # decode() only sends messages starting with b"CP" to decode_frame, so call it directly.
    value = header(0, magic=b"XP")

    reject = only_reject(decode_frame(value))

    assert (reject.reason, reject.payload, reject.events) == (Reason.BAD_MAGIC, value, 1)


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (header(1, version=2) + bytes(24), Reason.UNKNOWN_VERSION, "version 2"),
        (header(1, version=0) + bytes(24), Reason.UNKNOWN_VERSION, "version 0"),
        (header(1, flags=2) + bytes(24), Reason.BAD_FLAGS, "flags 0x02 (v1 knows 0x01)"),
        (header(1, flags=128) + bytes(24), Reason.BAD_FLAGS, "flags 0x80 (v1 knows 0x01)"),
        (b"CP", Reason.TRUNCATED, "2 bytes < header 24"),
        (header(0)[:23], Reason.TRUNCATED, "23 bytes < header 24"),
        (header(3) + bytes(48), Reason.TRUNCATED, "header says 3 records, body holds 48 bytes"),
        (header(1) + bytes(23), Reason.TRUNCATED, "header says 1 records, body holds 23 bytes"),
        (header(1) + bytes(25), Reason.COUNT_MISMATCH, "header says 1 records, body holds 25 bytes"),
        (header(0) + bytes(24), Reason.COUNT_MISMATCH, "header says 0 records, body holds 24 bytes"),
        (header(65_537), Reason.TOO_MANY_RECORDS, "65537 > 65536"),
        (header(2**32 - 1), Reason.TOO_MANY_RECORDS, "4294967295 > 65536"),
    ],
)
def test_bad_frame_is_rejected_whole(value: bytes, reason: str, detail: str) -> None:
    decoded = decode(value, MAX_BYTES)

    assert decoded.kind == "frame"
    assert only_reject(decoded) == Reject(reason, detail, value, 1)


@pytest.mark.parametrize(
    "value",
    [b"{not json", b"[1,", b"{}}", b'{"a": 1} x', b"[NaN]", b"[Infinity]", b"[-Infinity]", b'{"ts": NaN}', b"{\xff}"],
)
def test_invalid_json_is_rejected_whole(value: bytes) -> None:
    decoded = decode(value, MAX_BYTES)

    reject = only_reject(decoded)
    assert decoded.kind == "json"
    assert (reject.reason, reject.payload, reject.events) == (Reason.BAD_JSON, value, 1)
    assert reject.detail.startswith("invalid JSON: ")


def test_nan_in_an_event_field_is_bad_json_not_a_bad_time() -> None:
    value = b'{"device": "0011223344556677", "cell": 1038, "ts": NaN, "type": "attach"}'

    reject = only_reject(decode(value, MAX_BYTES))

    assert reject.reason == Reason.BAD_JSON
    assert reject.detail == "invalid JSON: NaN is not a valid JSON number"


def test_json_array_longer_than_a_frame_is_rejected_whole() -> None:
    value = b"[" + b",".join([b"{}"] * (MAX_RECORDS_PER_FRAME + 1)) + b"]"

    reject = only_reject(decode_json(value))

    assert reject == Reject(Reason.TOO_MANY_RECORDS, "65537 > 65536", value, 1)


# --- per-event JSON rejections ---------------------------------------------------------------

DEVICE_DETAIL = "device must be a 16-hex-character pseudonym"
RAW_DETAIL = "device looks like a raw IMSI/MSISDN, not a keyed pseudonym"
CELL_DETAIL = "cell must be an unsigned 32-bit integer"
TS_DETAIL = "ts must be an integer epoch-ms time between 2000 and 2100"
TYPE_DETAIL = "type must be one of attach|detach|handover|tau|paging|data"
CLASS_DETAIL = "device_class must be one of phone|m2m"
SEGMENT_DETAIL = "segment must be an unsigned 16-bit integer"


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (without("device"), Reason.MISSING_FIELD, "missing device"),
        (without("cell"), Reason.MISSING_FIELD, "missing cell"),
        (without("ts"), Reason.MISSING_FIELD, "missing ts"),
        (without("type"), Reason.MISSING_FIELD, "missing type"),
        (b"{}", Reason.MISSING_FIELD, "missing device, cell, ts, type"),
        (event_bytes(device="001122334455667"), Reason.RAW_IDENTIFIER, RAW_DETAIL),  # 15 digits: an IMSI
        (event_bytes(device="00112233445566778"), Reason.BAD_FIELD, DEVICE_DETAIL),
        (event_bytes(device="001122334455667g"), Reason.BAD_FIELD, DEVICE_DETAIL),
        (event_bytes(device="zzzzzzzzzzzzzzzz"), Reason.BAD_FIELD, DEVICE_DETAIL),
        (event_bytes(device=1234567890123456), Reason.BAD_FIELD, DEVICE_DETAIL),
        (event_bytes(device=None), Reason.BAD_FIELD, DEVICE_DETAIL),
        (event_bytes(cell=-1), Reason.BAD_FIELD, CELL_DETAIL),
        (event_bytes(cell=2**32), Reason.BAD_FIELD, CELL_DETAIL),
        (event_bytes(cell=True), Reason.BAD_FIELD, CELL_DETAIL),
        (event_bytes(cell=1038.0), Reason.BAD_FIELD, CELL_DETAIL),
        (event_bytes(cell="1038"), Reason.BAD_FIELD, CELL_DETAIL),
        (event_bytes(cell=None), Reason.BAD_FIELD, CELL_DETAIL),
        (event_bytes(ts=float(TS)), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(ts=str(TS)), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(ts=MIN_TS_MS - 1), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(ts=MAX_TS_MS + 1), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(ts=TS // 1000), Reason.BAD_TIME, TS_DETAIL),  # seconds, not milliseconds
        (event_bytes(ts=-TS), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(ts=10**30), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(ts=True), Reason.BAD_TIME, TS_DETAIL),
        (event_bytes(type="ATTACH"), Reason.UNKNOWN_TYPE, TYPE_DETAIL),
        (event_bytes(type="sms"), Reason.UNKNOWN_TYPE, TYPE_DETAIL),
        (event_bytes(type=1), Reason.UNKNOWN_TYPE, TYPE_DETAIL),
        (event_bytes(device_class="tablet"), Reason.BAD_FIELD, CLASS_DETAIL),
        (event_bytes(device_class=1), Reason.BAD_FIELD, CLASS_DETAIL),
        (event_bytes(device_class=None), Reason.BAD_FIELD, CLASS_DETAIL),
        (event_bytes(segment=-1), Reason.BAD_FIELD, SEGMENT_DETAIL),
        (event_bytes(segment=65_536), Reason.BAD_FIELD, SEGMENT_DETAIL),
        (event_bytes(segment=1.5), Reason.BAD_FIELD, SEGMENT_DETAIL),
        (event_bytes(segment="3"), Reason.BAD_FIELD, SEGMENT_DETAIL),
        (b"[5]", Reason.BAD_FIELD, "event is not an object"),
        (b'["0011223344556677"]', Reason.BAD_FIELD, "event is not an object"),
        (b"[[]]", Reason.BAD_FIELD, "event is not an object"),
    ],
)
def test_bad_event_is_rejected_with_its_reason(value: bytes, reason: str, detail: str) -> None:
    decoded = decode(value, MAX_BYTES)

    reject = only_reject(decoded)
    assert decoded.kind == "json"
    assert (reject.reason, reject.detail, reject.events) == (reason, detail, 1)
    # The payload is the event itself, re-serialised compactly (a single object is not wrapped),
    # except that a device field which is not a valid pseudonym is redacted: it may be a raw id.
    item = json.loads(value)
    item = item[0] if isinstance(item, list) else item
    if reason in (Reason.RAW_IDENTIFIER,) or detail == DEVICE_DETAIL:
        item = {**item, "device": "<redacted>"}
    assert reject.payload == json.dumps(item, separators=(",", ":")).encode()


def test_json_scalar_at_top_level_is_rejected_by_the_json_decoder() -> None:
    # decode() routes only '{' and '[' to JSON; decode_json itself treats a scalar as one event.
    for value, item in [(b"5", b"5"), (b'"0011223344556677"', b'"0011223344556677"'), (b"null", b"null")]:
        reject = only_reject(decode_json(value))
        assert reject == Reject(Reason.BAD_FIELD, "event is not an object", item, 1)


def test_array_mixing_good_and_bad_events_keeps_the_good_ones_in_order() -> None:
    items = [
        {**GOOD_EVENT, "cell": 1},
        {**GOOD_EVENT, "cell": -1},
        {**GOOD_EVENT, "cell": 2, "type": "tau", "device_class": "m2m", "segment": 9},
        {k: v for k, v in GOOD_EVENT.items() if k != "ts"},
        {**GOOD_EVENT, "type": "sms"},
        7,
        {**GOOD_EVENT, "cell": 3},
    ]

    decoded = decode(json.dumps(items).encode(), MAX_BYTES)

    assert decoded.kind == "json"
    assert decoded.records["cell"].tolist() == [1, 2, 3]
    assert decoded.records["type"].tolist() == [1, 4, 1]
    assert decoded.records["device_class"].tolist() == [0, 1, 0]
    assert decoded.records["segment"].tolist() == [0, 9, 0]
    dumped = [json.dumps(item, separators=(",", ":")).encode() for item in items]
    assert decoded.rejects == [
        Reject(Reason.BAD_FIELD, CELL_DETAIL, dumped[1], 1),
        Reject(Reason.MISSING_FIELD, "missing ts", dumped[3], 1),
        Reject(Reason.UNKNOWN_TYPE, TYPE_DETAIL, dumped[4], 1),
        Reject(Reason.BAD_FIELD, "event is not an object", dumped[5], 1),
    ]


def test_empty_json_array_holds_no_records_and_no_rejects() -> None:
    decoded = decode(b"[]", MAX_BYTES)

    assert (decoded.kind, len(decoded.records), decoded.rejects) == ("json", 0, [])


# --- encoder guards --------------------------------------------------------------------------


def test_frame_bytes_refuses_other_dtypes() -> None:
    with pytest.raises(TypeError, match="RECORD_DTYPE"):
        frame_bytes(np.zeros(3, dtype=np.uint8), 1, 0)


def test_frame_bytes_refuses_more_records_than_a_frame_holds() -> None:
    with pytest.raises(ValueError, match="65537 records > 65536 per frame"):
        frame_bytes(np.zeros(MAX_RECORDS_PER_FRAME + 1, dtype=RECORD_DTYPE), 1, 0)


# --- found by review: decode() never raises, and accepts only 16-hex-digit devices ---------


def test_unhashable_device_class_is_a_bad_field_not_an_exception() -> None:
    reject = only_reject(decode(event_bytes(device_class=["phone"]), MAX_BYTES))

    assert reject.reason == Reason.BAD_FIELD


def test_deeply_nested_json_is_bad_json_not_an_exception() -> None:
    value = b"[" * 100_000  # 100 kB: well under the default 1 MiB message limit

    reject = only_reject(decode(value, MAX_BYTES))

    assert reject.reason == Reason.BAD_JSON


def test_device_with_spaces_is_rejected() -> None:
    decoded = decode(event_bytes(device="0011223344 55 66"), MAX_BYTES)

    # Digits with spaces are how a phone number is written: refused as a raw identifier.
    assert decoded.rejects and decoded.rejects[0].reason == Reason.RAW_IDENTIFIER
    assert b"0011223344" not in decoded.rejects[0].payload


def test_shadow_flag_and_field_mark_next_epoch_pseudonyms() -> None:
    records = np.zeros(2, dtype=RECORD_DTYPE)
    records["ts"], records["cell"], records["type"] = TS, 1038, 4
    assert decode(frame_bytes(records, 1, 0, flags=FLAG_SHADOW), MAX_BYTES).shadow_mask().tolist() == [True, True]
    assert decode(frame_bytes(records, 1, 0), MAX_BYTES).shadow_mask().tolist() == [False, False]
    doc = [json.loads(event_bytes()), {**json.loads(event_bytes()), "shadow": True}]
    decoded = decode(json.dumps(doc).encode(), MAX_BYTES)
    assert decoded.shadow_mask().tolist() == [False, True]
    assert json.loads(records_to_json(decoded.records, decoded.shadow))[1]["shadow"] is True
    bad = decode(event_bytes(shadow="yes"), MAX_BYTES)
    assert bad.rejects[0].reason == Reason.BAD_FIELD and bad.rejects[0].detail == "shadow must be true or false"
