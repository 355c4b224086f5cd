"""Segments (residents/visitors, age band): the wire code, the ingest keys against a plain-Python
grouping, M2M kept out of every area key, and the privacy rule over segments."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from streams.core.areas import load_areas
from streams.core.segments import BANDS, PUBLISHED, RESIDENTS, STORED, ResidentTable, band, encode, home_code
from streams.core.settings import Settings
from streams.core.windows import Span
from streams.core.wire import RECORD_DTYPE, frame_bytes
from streams.estimate.estimator import WindowBook, segment_counts
from streams.estimate.privacy import segment_pairs, suppressed_items
from streams.pipeline.ingest import Ingestor, Message

WALL = 1_767_600_000_000
BUCKET_MS = 60_000
AREAS = load_areas(Settings().areas_path)


def test_the_wire_code_holds_home_cell_and_band() -> None:
    code = encode(np.array([-1, 0, 63, 4094]), np.array([0, 1, 2, 3]))
    assert code.tolist() == [0, 1 | 1 << 12, 64 | 2 << 12, 4095 | 3 << 12]
    assert home_code(code).tolist() == [0, 1, 64, 4095] and band(code).tolist() == [0, 1, 2, 3]
    assert band(np.array([0xC000 | 5])).tolist() == [0]  # reserved bits are ignored
    with pytest.raises(ValueError, match="at most 4095 cells"):
        encode(np.array([4095]), np.array([1]))


def test_residents_are_devices_whose_home_cell_is_in_the_area() -> None:
    table = ResidentTable(AREAS)
    stadium, city = AREAS.area_ids.index("stadium"), AREAS.area_ids.index("city")
    home_in_stadium = int(np.searchsorted(AREAS.cell_ids, AREAS.area_by_id["stadium"].cells[0]))
    elsewhere = int(np.searchsorted(AREAS.cell_ids, 1001))
    assert 1001 not in AREAS.area_by_id["stadium"].cells
    codes = encode(np.array([home_in_stadium, elsewhere, -1]), np.array([1, 1, 1]))
    assert table.resident(np.full(3, stadium), codes).tolist() == [True, False, False]
    assert table.resident(np.full(3, city), codes).tolist() == [True, True, False]
    assert not table.resident(np.array([city]), np.array([4000])).any()  # beyond this file's cells


def test_ingest_segment_keys_match_a_plain_python_grouping() -> None:
    ingestor = Ingestor(Settings(), AREAS)
    rng = np.random.default_rng(8)
    n = 4000
    batch = np.zeros(n, dtype=RECORD_DTYPE)
    devices = rng.integers(1, 600, n)
    batch["device"] = devices.astype("<u8").view("V8")
    batch["ts"] = WALL - rng.integers(0, 300_000, n)
    batch["cell"] = rng.choice(AREAS.cell_ids, n)
    batch["type"] = 4
    # A device's attributes are its own: home cell (or none), band, class.
    home = rng.integers(-1, len(AREAS.cell_ids), 600)
    bands = rng.integers(0, 4, 600)
    m2m = rng.random(600) < 0.1
    batch["segment"] = encode(home[devices], bands[devices])
    batch["device_class"] = m2m[devices].astype(np.uint8)
    plan = ingestor.plan([Message("crowd.events", 0, 0, b"k", frame_bytes(batch, 1, 0))], WALL)

    expected: dict[str, set[bytes]] = defaultdict(set)
    for d, ts, cell in zip(devices.tolist(), batch["ts"].tolist(), batch["cell"].tolist()):
        if m2m[d]:
            continue
        bucket, member = ts // BUCKET_MS, int(d).to_bytes(8, "little")
        expected[ingestor.keys.cell_bucket(cell, bucket)].add(member)
        for area in AREAS.areas_of_cell(cell):
            expected[ingestor.keys.area_bucket(area, bucket)].add(member)
            if home[d] >= 0 and int(AREAS.cell_ids[home[d]]) in AREAS.area_by_id[area].cells:
                expected[ingestor.keys.area_bucket(area, bucket, segment=RESIDENTS)].add(member)
            if bands[d]:
                expected[ingestor.keys.area_bucket(area, bucket, segment=BANDS[int(bands[d])])].add(member)
    got = {key: set(members) for key, members in plan.hll_adds}
    assert len(got) == len(plan.hll_adds)
    assert got == expected
    assert plan.counted == n and plan.m2m_events == int(m2m[devices].sum())


def test_with_segments_off_ingest_writes_no_segment_key() -> None:
    ingestor = Ingestor(Settings(segments=False), AREAS)
    batch = np.zeros(50, dtype=RECORD_DTYPE)
    batch["device"] = np.arange(1, 51, dtype="<u8").view("V8")
    batch["ts"] = WALL - 1000
    batch["cell"] = AREAS.cell_ids[0]
    batch["type"] = 4
    batch["segment"] = encode(np.zeros(50, dtype=int), np.ones(50, dtype=int))
    plan = ingestor.plan([Message("crowd.events", 0, 0, b"k", frame_bytes(batch, 1, 0))], WALL)
    names = [key for key, _ in plan.hll_adds]
    assert plan.counted == 50 and names and not any(key.endswith(tuple(":" + s for s in STORED)) for key in names)


def test_segment_counts_derive_visitors_and_cap_at_the_total() -> None:
    out = segment_counts({900: 100}, {(900, "res"): 30, (900, "age_16_34"): 120})
    assert out[(900, "residents")] == 30 and out[(900, "visitors")] == 70
    assert out[(900, "age_16_34")] == 100 and out[(900, "age_65_plus")] == 0


def test_a_small_complement_withholds_the_segment_that_would_reveal_it() -> None:
    pairs = segment_pairs({"hall": [1, 2]}, (900,), PUBLISHED, nested=("residents",))
    counts = {("hall", 900): 400, ("hall", 900, "residents"): 390, ("hall", 900, "visitors"): 10}
    withheld = suppressed_items(counts, pairs, 15)
    # Visitors are 10 (< k); publishing residents (390) next to the total (400) would tell it.
    assert ("hall", 900, "visitors") in withheld and ("hall", 900, "residents") in withheld
    assert ("hall", 900) not in withheld


def test_nested_areas_close_segment_differences() -> None:
    pairs = segment_pairs({"city": [1, 2, 3], "hall": [1]}, (900,), PUBLISHED, nested=("residents", *BANDS.values()))
    counts = {
        ("city", 900): 5000, ("hall", 900): 800,
        ("city", 900, "age_65_plus"): 300, ("hall", 900, "age_65_plus"): 292,
    }
    withheld = suppressed_items(counts, pairs, 15)
    # 300 - 292 = 8 older people in the city outside the hall: one of the two must go.
    assert ("hall", 900, "age_65_plus") in withheld or ("city", 900, "age_65_plus") in withheld


def test_window_book_publishes_segments_inside_the_estimate() -> None:
    book = WindowBook(AREAS, (900,), 15, 60_000, keep_buckets=5, segments=True)
    assert {s for s in book.spans if s.segment} == {Span(0, 900, name) for name in ("res", *BANDS.values())}
    counts = {}
    for i, area in enumerate(AREAS.area_ids):
        total = 1000 * (i + 1)
        counts[(area, 4, Span(0, 900))] = total
        counts[(area, 4, Span(0, 900, "res"))] = total // 4
        counts[(area, 4, Span(0, 900, "age_16_34"))] = total // 3
        counts[(area, 4, Span(0, 900, "age_35_64"))] = total // 2
        counts[(area, 4, Span(0, 900, "age_65_plus"))] = 5  # below k everywhere
    published = {e["area"]: e for e in book.update(counts, newest=4)}
    arena = published["arena"]
    assert not arena["suppressed"]
    seg = arena["segments"]
    assert seg["residents"]["devices"] == arena["devices"] // 4
    assert seg["visitors"]["devices"] == arena["devices"] - arena["devices"] // 4
    assert seg["residents"]["people"] == round(arena["people"] * seg["residents"]["devices"] / arena["devices"])
    assert seg["age_65_plus"] is None  # 5 < k
