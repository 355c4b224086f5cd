"""The producer edge for an operator's own events (producers/edge.py): what it reads, what it
rejects (by line), and what leaves it: keyed pseudonyms only, with the rotation's shadows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from producers.edge import Edge, csv_header, parse_lines
from producers.pseudonyms import KeySchedule, pseudonymise
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.errors import ConfigError
from streams.core.rotation import Rotation
from streams.core.segments import band, home_code
from streams.core.settings import DEFAULT_AREAS
from streams.core.wire import EVENT_TYPES

AREAS = load_areas(DEFAULT_AREAS)
CELL = int(AREAS.cell_ids[3])
SECRET = b"an edge secret of enough bytes"
DAILY = Rotation(period_s=86_400, offset_s=4 * 3600, overlap_s=3600)


def lines(*events: object) -> list[tuple[int, str]]:
    return [(i + 1, e if isinstance(e, str) else json.dumps(e)) for i, e in enumerate(events)]


def event(**fields: object) -> dict:
    return {"subscriber": "262011234567890", "cell": CELL, "ts": "2026-03-07T18:04:05Z", "type": "tau", **fields}


def test_good_lines_become_records_and_bad_ones_are_rejected_by_number() -> None:
    batch = parse_lines(lines(
        event(), event(ts=1_772_906_645_000, type="data", m2m=True, home_cell=CELL, age_band=2),
        "not json", "", event(cell="1001"), event(ts="yesterday"), event(type="sms"), {"cell": CELL},
        event(age_band=7), event(subscriber=""),
    ), AREAS)
    assert len(batch.records) == 2 and batch.identities == ["262011234567890", "262011234567890"]
    first, second = batch.records
    assert first["ts"] == parse_time("2026-03-07T18:04:05Z") and first["type"] == EVENT_TYPES["tau"] and first["device_class"] == 0
    assert second["device_class"] == 1 and second["type"] == EVENT_TYPES["data"]
    assert home_code(second["segment"]) == 1 + 3 and band(second["segment"]) == 2
    assert [n for n, _ in batch.rejected] == [3, 5, 6, 7, 8, 9, 10]  # line 4 is blank
    assert dict(batch.rejected)[8] == "missing subscriber, ts, type"


def test_only_keyed_pseudonyms_leave_and_they_change_with_the_epoch() -> None:
    schedule = KeySchedule(SECRET, DAILY)
    day = parse_time("2026-03-07T12:00:00Z")
    batch = parse_lines(lines(
        event(ts=day), event(ts=day + 60_000), event(subscriber="262019999999999", ts=day),
        event(ts=day + 86_400_000),  # the next day: the next epoch
    ), AREAS)
    events, shadows = Edge(schedule).label(batch)
    devices = [bytes(d) for d in events["device"]]
    assert devices[0] == devices[1] != devices[2]  # one subscriber, one pseudonym within an epoch
    assert devices[3] != devices[0]  # unlinkable across a rotation
    epoch = int(DAILY.epoch(day))
    assert devices[0] == bytes(pseudonymise(np.array(["262011234567890"], dtype=object), schedule.key(epoch))[0])
    assert b"26201" not in events.tobytes() and len(shadows) == 0  # noon: not in the overlap


def test_events_in_the_overlap_before_a_rotation_get_shadows_under_the_next_key() -> None:
    schedule = KeySchedule(SECRET, DAILY)
    before = parse_time("2026-03-08T03:30:00Z")  # within the hour before 04:00
    events, shadows = Edge(schedule).label(parse_lines(lines(event(ts=before), event(ts=before - 7200_000)), AREAS))
    assert len(shadows) == 1 and shadows["ts"][0] == before
    next_key = schedule.key(int(DAILY.epoch(before)) + 1)
    assert bytes(shadows["device"][0]) == bytes(pseudonymise(np.array(["262011234567890"], dtype=object), next_key)[0])
    assert bytes(shadows["device"][0]) != bytes(events["device"][0])


def test_csv_rows_read_as_the_json_events_they_stand_for() -> None:
    header = csv_header("subscriber,cell,ts,type,m2m,home_cell,age_band")
    from_csv = parse_lines([(2, f"262011234567890,{CELL},2026-03-07T18:04:05Z,data,true,{CELL},2"), (3, f"7,{CELL},1772906645000,tau,,,"),
                            (4, "only,three,columns"), (5, f"9,{CELL},1772906645000,sms,,,")], AREAS, header)
    from_json = parse_lines(lines(event(type="data", m2m=True, home_cell=CELL, age_band=2), event(subscriber="7", ts=1_772_906_645_000)),
                            AREAS)
    assert from_csv.records.tobytes() == from_json.records.tobytes() and from_csv.identities == from_json.identities
    assert [n for n, _ in from_csv.rejected] == [4, 5] and "columns" in from_csv.rejected[0][1]


def test_a_csv_header_must_name_the_required_fields() -> None:
    with pytest.raises(ConfigError, match="subscriber, cell, ts, type"):
        csv_header("imsi,cell,ts,type")
