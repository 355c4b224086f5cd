"""The simulator: deterministic, valid events, every scenario runs, parameters are checked, and
`crowdpulse simulate --out` is byte-for-byte reproducible with its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from producers.publisher import read_frames_file
from producers.scenarios import SCENARIOS, configure, parse_overrides
from producers.simulator import T3412_MS, Simulation, WindowTruth
from streams.cli import main
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.errors import ConfigError
from streams.core.segments import band as segment_band
from streams.core.segments import home_code
from streams.core.settings import DEFAULT_AREAS
from streams.core.wire import EVENT_TYPES, decode

START = parse_time("2026-01-05T06:00:00Z")
AREAS = load_areas(DEFAULT_AREAS)


def run(seed: int, minutes: int, devices: int = 2000, scenario: str = "steady", start: int = START, **overrides) -> tuple[Simulation, np.ndarray]:
    sim = Simulation(AREAS, devices, seed=seed, start_ms=start, config=configure(scenario, overrides))
    events = np.concatenate(list(sim.run(start + minutes * 60_000)))
    return sim, events


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_seed_same_events_other_seed_other_events(scenario: str) -> None:
    start = configure(scenario).scenario.start_ms()
    _, a = run(5, 30, 1500, scenario, start)
    _, b = run(5, 30, 1500, scenario, start)
    _, c = run(6, 30, 1500, scenario, start)
    assert len(a) > 500
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_events_are_valid_sorted_and_every_device_reports_within_t3412() -> None:
    sim, events = run(1, 60)
    assert np.all(np.diff(events["ts"]) >= 0)
    assert events["ts"].min() >= START and events["ts"].max() < START + 60 * 60_000
    assert np.isin(events["cell"], AREAS.cell_ids).all()
    assert set(np.unique(events["type"]).tolist()) <= set(EVENT_TYPES.values())
    first_hour = events[events["ts"] < START + T3412_MS + 60_000]
    # In `steady` nobody leaves or switches off: periodic updates (or meter reports) reach everyone.
    assert len(np.unique(first_hour["device"].view("<u8"))) == sim.population.n_visible
    # The wire's optional fields carry the device class and the home cell.
    m2m = sim.population.device_class == 1
    assert m2m.any() and (~m2m).any()
    pseudonyms = sim.pseudonyms.for_epoch(int(sim.rotation.epoch(START)))  # the run lies inside one epoch
    by_device = dict(zip(pseudonyms.view("<u8").tolist(), sim.population.device_class.tolist()))
    assert [by_device[d] for d in events["device"].view("<u8").tolist()] == events["device_class"].tolist()
    # The segment: home cell code (1 + cell index; everyone in this run lives in the city) and
    # an age band for people (1-3), none for M2M.
    home, band = home_code(events["segment"]), segment_band(events["segment"])
    assert (home >= 1).all() and (home <= len(AREAS.cell_ids)).all()
    phones = events["device_class"] == 0
    assert np.isin(band[phones], [1, 2, 3]).all() and (band[~phones] == 0).all()


@pytest.mark.parametrize("scenario, offset_min, step_s", [("steady", 0, 60), ("match-day", 120, 10), ("station-rush", 60, 60)])
def test_without_a_truth_quiet_carriers_are_left_out_and_the_events_are_the_same(scenario: str, offset_min: int, step_s: int) -> None:
    """Without a truth, carriers without the operator's devices are not simulated at all: the
    events must be exactly those of a run that moves them (a run with truth)."""
    start = configure(scenario).scenario.start_ms() + offset_min * 60_000
    sims = [Simulation(AREAS, 2500, seed=4, start_ms=start, step_s=step_s, config=configure(scenario), truth=truth)
            for truth in (True, False)]
    everyone, heard = sims[0].mobility, sims[1].mobility
    holders = sims[0].population.visible_per_carrier > 0
    assert not everyone.lazy and heard.lazy
    assert everyone.pop.n_carriers == len(holders) > heard.pop.n_carriers == holders.sum()
    for minute in range(45):
        end = start + (minute + 1) * 60_000
        a, b = (np.concatenate(list(sim.run(end))) for sim in sims)
        assert len(a) and a.tobytes() == b.tobytes()
    # The carriers both runs follow are where each other has them.
    assert np.array_equal(everyone.pos[holders], heard.pos, equal_nan=True)
    with pytest.raises(RuntimeError, match="no presence"):
        heard.presence_by_area()


def test_window_truth_equals_a_plain_set_computation() -> None:
    _, events = run(2, 20, devices=500)
    truth = WindowTruth(AREAS, 60, (300, 900))
    truth.add(events)
    newest = int(events["ts"].max()) // 60_000
    for area in ("stadium", "centre", "city"):
        cells = set(AREAS.area_by_id[area].cells)
        in_window = [(bytes(d), c, t) for d, t, c, k in zip(events["device"].tolist(), events["ts"].tolist(),
                                                             events["cell"].tolist(), events["device_class"].tolist())
                     if c in cells and t // 60_000 > newest - 5 and k == 0]  # phones only
        assert len(truth.distinct(area, newest, 300)) == len({d for d, _, _ in in_window})


def test_population_matches_the_configured_market_share_and_sims_per_person() -> None:
    sim = Simulation(AREAS, 30_000, seed=3, start_ms=START, config=configure("steady"))
    pop = sim.population
    people = pop.is_person
    sims = pop.n_devices[people].mean()
    assert 1.30 <= sims <= 1.40  # configured 1.35
    share = pop.visible_per_carrier[people].sum() / pop.n_devices[people].sum()
    assert 0.29 <= share <= 0.35  # 0.28 west, 0.36 east, 0.32 elsewhere
    east = np.isin(pop.home_cell, sim.city.cells_of("east-district")) & people
    west = np.isin(pop.home_cell, sim.city.cells_of("west-district")) & people
    east_share = pop.visible_per_carrier[east].sum() / pop.n_devices[east].sum()
    west_share = pop.visible_per_carrier[west].sum() / pop.n_devices[west].sum()
    assert 0.34 <= east_share <= 0.38 and 0.26 <= west_share <= 0.30
    assert abs(pop.n_visible - 30_000) / 30_000 < 0.05  # `devices` sizes the resident city


def test_overrides_are_typed_and_checked() -> None:
    config = configure("high-street", parse_overrides(["uplift_pct=35", "uplift-from-day=2", "market_share=0.4",
                                                       "t3412_s=1800", "diurnal=false"]))
    assert config.scenario.uplift_pct == 35.0 and config.scenario.uplift_from_day == 2
    assert config.population.market_share == 0.4 and config.signalling.t3412_s == 1800.0
    assert config.scenario.diurnal is False
    assert config.scenario.shop_factor(1) == 1.0 and config.scenario.shop_factor(2) == 1.35
    with pytest.raises(ValueError, match="unknown parameter"):
        configure("steady", {"no_such_thing": "1"})
    with pytest.raises(ValueError, match="not a valid int"):
        configure("high-street", {"uplift_from_day": "soon"})
    with pytest.raises(ValueError, match="unknown scenario"):
        configure("carnival")
    with pytest.raises(ValueError, match="name=value"):
        parse_overrides(["uplift_pct"])
    with pytest.raises(ValueError, match="must be positive"):
        configure("steady", {"t3412_s": "0"})


def test_quick_presets_are_smaller_and_valid() -> None:
    for name, cls in SCENARIOS.items():
        quick, full = configure(name, quick=True).scenario, configure(name).scenario
        assert quick.duration_s <= full.duration_s
        assert cls.quick_devices <= cls.full_devices


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
    assert len(rows) == 10 * len(AREAS.area_ids)  # ten whole minutes, every area
    assert {tuple(r["distinct_devices"]) for r in rows} == {("300", "900", "3600")}
    assert all(r["people"] >= 0 and r["devices_present"] <= r["devices_present_all"] for r in rows)


def test_simulate_out_of_a_scenario_starts_at_its_own_start_and_differs_by_seed(tmp_path: Path) -> None:
    outs = []
    for seed in (1, 1, 2):
        out = tmp_path / f"m{len(outs)}.frames"
        assert main(["simulate", "--scenario", "match-day", "--set", "attendance=3000", "--seed", str(seed),
                     "--devices", "1500", "--duration", "900", "--out", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] != outs[2]
    first = [decode(frame, 10**7).records for _, frame in read_frames_file(tmp_path / "m0.frames")]
    ts = np.concatenate([r["ts"] for r in first])
    start = configure("match-day").scenario.start_ms()
    assert ts.min() >= start and ts.max() < start + 900_000


def test_bad_simulate_arguments_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", "--set", "uplift_pct=1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown parameter" in capsys.readouterr().err


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_runs_on_the_second_shipped_city(scenario: str) -> None:
    harbour = load_areas(DEFAULT_AREAS.parent / "harbour-town.json")
    if scenario == "event":  # the harbour town has no arena: it says so, and the stadium will do
        with pytest.raises(ConfigError, match="event needs a venue area 'arena'"):
            Simulation(harbour, 1500, seed=1, start_ms=0, config=configure(scenario, quick=True))
    config = configure(scenario, {"venue": "stadium"} if scenario == "event" else None, quick=True)
    start = config.scenario.start_ms()
    sim = Simulation(harbour, 1500, seed=1, start_ms=start, config=config, truth=True)
    events = np.concatenate(list(sim.run(start + 20 * 60_000)))
    assert len(events) > 300 and np.isin(events["cell"], harbour.cell_ids).all()
    table = sim.truth.table()  # type: ignore[union-attr]
    assert len(table.as_of) == 20 and table.people[:, harbour.area_ids.index("city")].min() > 1500
