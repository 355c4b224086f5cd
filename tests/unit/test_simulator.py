"""The first simulator: deterministic, valid events, idle phones heard at least every T3412."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from producers.publisher import read_frames_file
from producers.simulator import T3412_MS, Simulation, WindowTruth
from streams.areas import load_areas
from streams.cli import main, parse_time
from streams.settings import DEFAULT_AREAS
from streams.wire import EVENT_TYPES, decode

START = parse_time("2026-01-05T06:00:00Z")
AREAS = load_areas(DEFAULT_AREAS)


def run(seed: int, minutes: int, devices: int = 2000) -> np.ndarray:
    sim = Simulation(AREAS, devices, seed=seed, start_ms=START)
    return np.concatenate(list(sim.run(START + minutes * 60_000)))


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = run(5, 30), run(5, 30), run(6, 30)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_events_are_valid_sorted_and_every_device_reports_within_t3412() -> None:
    events = run(1, 60)
    assert np.all(np.diff(events["ts"]) >= 0)
    assert events["ts"].min() >= START and events["ts"].max() < START + 60 * 60_000
    assert np.isin(events["cell"], AREAS.cell_ids).all()
    assert set(np.unique(events["type"]).tolist()) <= set(EVENT_TYPES.values())
    first_hour = events[events["ts"] < START + T3412_MS + 60_000]
    assert len(np.unique(first_hour["device"].view("<u8"))) == 2000  # periodic updates reach everyone


def test_window_truth_equals_a_plain_set_computation() -> None:
    events = run(2, 20, devices=500)
    truth = WindowTruth(AREAS, 60, (300, 900))
    truth.add(events)
    newest = int(events["ts"].max()) // 60_000
    for area in ("stadium", "centre", "city"):
        cells = set(AREAS.area_by_id[area].cells)
        in_window = [(bytes(d), c, t) for d, t, c in zip(events["device"].tolist(), events["ts"].tolist(), events["cell"].tolist())
                     if c in cells and t // 60_000 > newest - 5]
        assert len(truth.distinct(area, newest, 300)) == len({d for d, _, _ in in_window})


def test_simulate_out_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b"):
        out, truth = tmp_path / f"{name}.frames", tmp_path / f"{name}.truth"
        code = main(["simulate", "--seed", "9", "--devices", "800", "--duration", "600", "--out", str(out), "--truth", str(truth)])
        assert code == 0
        paths.append((out, truth))
    (out_a, truth_a), (out_b, truth_b) = paths
    assert out_a.read_bytes() == out_b.read_bytes() and len(out_a.read_bytes()) > 0
    assert truth_a.read_text() == truth_b.read_text()
    frames = list(read_frames_file(out_a))
    decoded = [decode(frame, 10**7) for _, frame in frames]
    assert all(not d.rejects and len(d.records) for d in decoded)
    rows = [json.loads(line) for line in truth_a.read_text().splitlines()]
    assert {r["window_s"] for r in rows} == {300, 900, 3600}
    assert len(rows) == 10 * len(AREAS.area_ids) * 3  # ten whole minutes, every area and window
