"""Wire format v1 of `crowd.events`: the frame layout, and strict decoding of frames and JSON.

This module owns the format (producers/publisher.py builds frames with `frame_bytes`) and the
shape checks: a message either decodes into a numpy array of RECORD_DTYPE plus a list of rejects
with reasons, or is rejected whole. Semantic checks that need configuration (known cells, the
time bounds) live in streams/pipeline/ingest.py. Pure: no Kafka, no Redis. See docs/wire-format.md.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"CP"
VERSION = 1

# Header: magic (2s), version (u8), flags (u8, FLAG_* below), producer id (u64),
# frame sequence number (u64), record count (u32). Little-endian, no padding: 24 bytes.
HEADER = struct.Struct("<2sBBQQI")
HEADER_SIZE = HEADER.size

# Fixed-width record, little-endian, 24 bytes. `device` is the 8-byte keyed pseudonym, kept as
# raw bytes so it reaches Redis exactly as the producer wrote it.
RECORD_DTYPE = np.dtype(
    [
        ("device", "V8"),
        ("ts", "<i8"),  # event time, epoch milliseconds (UTC)
        ("cell", "<u4"),
        ("type", "u1"),  # EVENT_TYPES code
        ("device_class", "u1"),  # 0 phone, 1 m2m/IoT (optional; 0 when unknown)
        ("segment", "<u2"),  # subscriber segment code (optional; 0 when unknown)
    ]
)
RECORD_SIZE = RECORD_DTYPE.itemsize
assert HEADER_SIZE == 24 and RECORD_SIZE == 24

EVENT_TYPES: dict[str, int] = {
    "attach": 1,
    "detach": 2,
    "handover": 3,
    "tau": 4,
    "paging": 5,
    "data": 6,
}
EVENT_TYPE_NAMES: dict[int, str] = {code: name for name, code in EVENT_TYPES.items()}
DEVICE_CLASSES: dict[str, int] = {"phone": 0, "m2m": 1}
DEVICE_CLASS_NAMES: dict[int, str] = {code: name for name, code in DEVICE_CLASSES.items()}

# Frame flags. SHADOW: the records carry pseudonyms under the *next* rotation epoch's key, sent
# during the overlap before a key rotation so windows spanning it count each device once
# (docs/privacy.md, "Pseudonym rotation").
FLAG_SHADOW = 0x01
KNOWN_FLAGS = FLAG_SHADOW

MAX_RECORDS_PER_FRAME = 65_536
MAX_CELL_ID = 2**32 - 1
MAX_SEGMENT = 2**16 - 1
# Anything outside [MIN_TS_MS, MAX_TS_MS] cannot be an event time (before 2000, after 2100).
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

# Exactly 16 hex digits (bytes.fromhex alone would accept embedded spaces).
PSEUDONYM_HEX = re.compile(r"[0-9a-fA-F]{16}")
# What a raw subscriber identifier looks like: an IMSI (15 digits) or an MSISDN in E.164 form
# (up to 15 digits, optionally with "+"). Such a value must never travel further.
RAW_IDENTIFIER = re.compile(r"\+?[0-9]{6,15}")
REDACTED = "<redacted>"
JSON_REQUIRED = ("device", "cell", "ts", "type")
JSON_OPTIONAL = ("device_class", "segment", "shadow")


class Reason:
    """Dead-letter reasons: stable strings, used in the `reason` header and in metrics labels."""

    EMPTY = "empty_message"
    OVERSIZED = "oversized_message"
    UNDECODABLE = "undecodable"
    BAD_MAGIC = "bad_magic"
    UNKNOWN_VERSION = "unknown_version"
    BAD_FLAGS = "bad_flags"
    TRUNCATED = "truncated_frame"
    COUNT_MISMATCH = "count_mismatch"
    TOO_MANY_RECORDS = "too_many_records"
    BAD_JSON = "bad_json"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    UNKNOWN_TYPE = "unknown_event_type"
    BAD_TIME = "bad_event_time"
    FUTURE_TIME = "future_event_time"
    UNKNOWN_CELL = "unknown_cell"
    RAW_IDENTIFIER = "raw_identifier"  # an IMSI/MSISDN where a keyed pseudonym belongs
    PROCESSING_ERROR = "processing_error"  # the worker failed on this message (a bug, not input)


@dataclass(frozen=True)
class Reject:
    """Input that did not become records: the bytes to dead-letter, why, and how many events."""

    reason: str
    detail: str
    payload: bytes
    events: int = 1


@dataclass
class Decoded:
    """One Kafka message, decoded. `records` may be empty; `rejects` may be non-empty."""

    kind: str  # "frame" or "json"
    records: np.ndarray
    producer: int | None = None
    sequence: int | None = None
    rejects: list[Reject] = field(default_factory=list)
    #: Per record: pseudonym under the next rotation epoch's key (FLAG_SHADOW / "shadow": true).
    shadow: np.ndarray | None = None

    def shadow_mask(self) -> np.ndarray:
        return self.shadow if self.shadow is not None else np.zeros(len(self.records), dtype=bool)


def empty_records() -> np.ndarray:
    return np.zeros(0, dtype=RECORD_DTYPE)


def decode(value: bytes, max_bytes: int) -> Decoded:
    """Decode one message value: a v1 frame if it starts with MAGIC, else JSON.

    Never raises on input: everything wrong with it comes back as a Reject.
    """
    if not value:
        return _rejected("frame", Reason.EMPTY, "empty message", b"")
    if len(value) > max_bytes:
        return _rejected(
            "frame",
            Reason.OVERSIZED,
            f"{len(value)} bytes > limit {max_bytes}",
            value,
        )
    if value[:2] == MAGIC:
        return decode_frame(value)
    first = value.lstrip()[:1]
    if first in (b"{", b"["):
        return decode_json(value)
    return _rejected("frame", Reason.UNDECODABLE, "neither a v1 frame nor JSON", value)


def decode_frame(value: bytes) -> Decoded:
    """Decode a binary frame; the header must agree exactly with the length."""
    if len(value) < HEADER_SIZE:
        return _rejected(
            "frame", Reason.TRUNCATED, f"{len(value)} bytes < header {HEADER_SIZE}", value
        )
    magic, version, flags, producer, sequence, count = HEADER.unpack_from(value)
    if magic != MAGIC:
        return _rejected("frame", Reason.BAD_MAGIC, "bad magic", value)
    if version != VERSION:
        return _rejected("frame", Reason.UNKNOWN_VERSION, f"version {version}", value)
    if flags & ~KNOWN_FLAGS:
        return _rejected("frame", Reason.BAD_FLAGS, f"flags {flags:#04x} (v1 knows {KNOWN_FLAGS:#04x})", value)
    if count > MAX_RECORDS_PER_FRAME:
        return _rejected(
            "frame", Reason.TOO_MANY_RECORDS, f"{count} > {MAX_RECORDS_PER_FRAME}", value
        )
    body = len(value) - HEADER_SIZE
    if body != count * RECORD_SIZE:
        reason = Reason.TRUNCATED if body < count * RECORD_SIZE else Reason.COUNT_MISMATCH
        detail = f"header says {count} records, body holds {body} bytes"
        return _rejected("frame", reason, detail, value)
    records = np.frombuffer(value, dtype=RECORD_DTYPE, offset=HEADER_SIZE, count=count)
    shadow = np.full(count, bool(flags & FLAG_SHADOW))
    return Decoded("frame", records, producer=producer, sequence=sequence, shadow=shadow)


def decode_json(value: bytes) -> Decoded:
    """Decode one JSON event or an array of them; each bad element is rejected on its own."""
    try:
        doc = json.loads(value, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        return _rejected("json", Reason.BAD_JSON, f"invalid JSON: {exc}", value)
    except RecursionError:
        return _rejected("json", Reason.BAD_JSON, "invalid JSON: nested too deeply", value)
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > MAX_RECORDS_PER_FRAME:
        return _rejected(
            "json", Reason.TOO_MANY_RECORDS, f"{len(items)} > {MAX_RECORDS_PER_FRAME}", value
        )
    records = np.zeros(len(items), dtype=RECORD_DTYPE)
    good = np.zeros(len(items), dtype=bool)
    shadow = np.zeros(len(items), dtype=bool)
    rejects: list[Reject] = []
    for i, item in enumerate(items):
        problem = _fill_record(records, i, item)
        if problem is None:
            good[i] = True
            shadow[i] = item.get("shadow") is True
        else:
            reason, detail = problem
            rejects.append(Reject(reason, detail, _dump(_without_bad_device(item)), 1))
    return Decoded("json", records[good], rejects=rejects, shadow=shadow[good])


def _fill_record(records: np.ndarray, i: int, item: object) -> tuple[str, str] | None:
    """Validate one JSON event and write it into records[i]; return (reason, detail) if bad."""
    if not isinstance(item, dict):
        return Reason.BAD_FIELD, "event is not an object"
    missing = [name for name in JSON_REQUIRED if name not in item]
    if missing:
        return Reason.MISSING_FIELD, f"missing {', '.join(missing)}"
    device = item["device"]
    if _looks_raw(device):
        return Reason.RAW_IDENTIFIER, "device looks like a raw IMSI/MSISDN, not a keyed pseudonym"
    if not isinstance(device, str) or not PSEUDONYM_HEX.fullmatch(device):
        return Reason.BAD_FIELD, "device must be a 16-hex-character pseudonym"
    device_bytes = bytes.fromhex(device)
    cell = item["cell"]
    if not _is_int(cell) or not 0 <= cell <= MAX_CELL_ID:
        return Reason.BAD_FIELD, "cell must be an unsigned 32-bit integer"
    ts = item["ts"]
    if not _is_int(ts) or not MIN_TS_MS <= ts <= MAX_TS_MS:
        return Reason.BAD_TIME, "ts must be an integer epoch-ms time between 2000 and 2100"
    event_type = item["type"]
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        return Reason.UNKNOWN_TYPE, "type must be one of " + "|".join(EVENT_TYPES)
    device_class = item.get("device_class", "phone")
    if not isinstance(device_class, str) or device_class not in DEVICE_CLASSES:
        return Reason.BAD_FIELD, "device_class must be one of " + "|".join(DEVICE_CLASSES)
    segment = item.get("segment", 0)
    if not _is_int(segment) or not 0 <= segment <= MAX_SEGMENT:
        return Reason.BAD_FIELD, "segment must be an unsigned 16-bit integer"
    if not isinstance(item.get("shadow", False), bool):
        return Reason.BAD_FIELD, "shadow must be true or false"
    records[i] = (device_bytes, ts, cell, EVENT_TYPES[event_type], DEVICE_CLASSES[device_class], segment)
    return None


def records_to_json(records: np.ndarray, shadow: np.ndarray | None = None) -> bytes:
    """Encode records as a JSON array (the interop shape); used for late and rejected records."""
    events = [
        {
            "device": bytes(r["device"]).hex(),
            "cell": int(r["cell"]),
            "ts": int(r["ts"]),
            "type": EVENT_TYPE_NAMES.get(int(r["type"]), str(int(r["type"]))),
            "device_class": DEVICE_CLASS_NAMES.get(int(r["device_class"]), "phone"),
            "segment": int(r["segment"]),
        }
        for r in records
    ]
    if shadow is not None:
        for event, is_shadow in zip(events, shadow.tolist()):
            if is_shadow:
                event["shadow"] = True
    return json.dumps(events, separators=(",", ":")).encode()


def frame_bytes(records: np.ndarray, producer: int, sequence: int, flags: int = 0) -> bytes:
    """A v1 frame holding `records` (which must already have RECORD_DTYPE)."""
    if flags & ~KNOWN_FLAGS:
        raise ValueError(f"unknown frame flags {flags:#04x}")
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"records must have RECORD_DTYPE, not {records.dtype}")
    if len(records) > MAX_RECORDS_PER_FRAME:
        raise ValueError(f"{len(records)} records > {MAX_RECORDS_PER_FRAME} per frame")
    header = HEADER.pack(MAGIC, VERSION, flags, producer, sequence, len(records))
    return header + records.tobytes()


def _looks_raw(device: object) -> bool:
    if isinstance(device, int) and not isinstance(device, bool):
        device = str(device)
    return isinstance(device, str) and RAW_IDENTIFIER.fullmatch(device.replace(" ", "")) is not None


def _without_bad_device(item: object) -> object:
    """A rejected JSON event as it may be dead-lettered: a device field that is not a valid
    pseudonym might be a raw identifier, so it never leaves in clear."""
    if isinstance(item, dict) and "device" in item:
        device = item["device"]
        if not (isinstance(device, str) and PSEUDONYM_HEX.fullmatch(device)):
            return {**item, "device": REDACTED}
    return item


def raw_identifier_mask(records: np.ndarray) -> np.ndarray:
    """Frame records whose 8 device bytes are ASCII digits or '+': an identifier typed in clear.

    A keyed pseudonym is uniformly random, so this misfires on 1 in 10^11 devices.
    """
    raw = np.frombuffer(records["device"].tobytes(), dtype=np.uint8).reshape(-1, 8)
    return (((raw >= ord("0")) & (raw <= ord("9"))) | (raw == ord("+"))).all(axis=1)


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python; `true` is not a cell id.
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; they are not valid JSON numbers.
    raise ValueError(f"{name} is not a valid JSON number")


def _dump(item: object) -> bytes:
    try:
        return json.dumps(item, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        return repr(item).encode()


def _rejected(kind: str, reason: str, detail: str, value: bytes) -> Decoded:
    return Decoded(kind, empty_records(), rejects=[Reject(reason, detail, value, 1)])


__all__ = [
    "DEVICE_CLASSES",
    "EVENT_TYPES",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "Decoded",
    "Reason",
    "Reject",
    "decode",
    "frame_bytes",
    "records_to_json",
]
