"""Ground truth computed two ways agrees, and the scenarios tell the stories they promise.

- Distinct devices per window: the fast ring of last sightings (GroundTruth) against a set of
  pseudonyms per area and minute (WindowTruth), for every area, window and minute.
- People and devices present: the incrementally kept per-cell counts against a recount from
  every carrier's position with plain Python and the areas file's own cell lists.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from producers.city import City
from producers.mobility import DAY_MS, SHOP
from producers.scenarios import configure
from producers.simulator import Simulation, WindowTruth
from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS

AREAS = load_areas(DEFAULT_AREAS)
AREA_CELLS = {a["id"]: set(a["cells"]) for a in json.loads(DEFAULT_AREAS.read_text())["areas"]}
CELL_IDS = AREAS.cell_ids.tolist()


def stepped(scenario: str, devices: int, minutes: int, offset_min: int = 0, **overrides):
    """Run a scenario with truth, yielding (sim, events) after every step."""
    config = configure(scenario, overrides)
    start = config.scenario.start_ms() + offset_min * 60_000
    sim = Simulation(AREAS, devices, seed=11, start_ms=start, config=config, truth=True)
    end = start + minutes * 60_000
    while sim.now_ms < end:
        yield sim, sim.step(end)


def recount_presence(sim: Simulation) -> np.ndarray:
    """People, operator devices and all devices per area, from positions, in plain Python."""
    mob, pop = sim.mobility, sim.population
    cells = sim.city.locate(np.nan_to_num(mob.pos))
    per_cell: Counter = Counter()
    for c, present, person, visible, every in zip(cells.tolist(), mob.present.tolist(), pop.is_person.tolist(),
                                                  pop.visible_per_carrier.tolist(), pop.n_devices.tolist()):
        if present:
            per_cell[(CELL_IDS[c], "people")] += int(person)
            per_cell[(CELL_IDS[c], "visible")] += visible
            per_cell[(CELL_IDS[c], "all")] += every
    return np.array([[sum(per_cell[(c, k)] for c in AREA_CELLS[a]) for k in ("people", "visible", "all")]
                     for a in AREAS.area_ids])


@pytest.mark.parametrize(
    "scenario, devices, minutes, offset_min",
    [("steady", 1500, 40, 0), ("match-day", 2500, 75, 150), ("station-rush", 2500, 60, 120)],
)
def test_truth_two_ways_agrees(scenario: str, devices: int, minutes: int, offset_min: int) -> None:
    reference = WindowTruth(AREAS, 60, (300, 900, 3600))
    presence = []
    sim = None
    for sim, events in stepped(scenario, devices, minutes, offset_min):
        reference.add(events)
        if sim.now_ms % 60_000 == 0:
            presence.append(recount_presence(sim))
    assert sim is not None and sim.truth is not None
    table = sim.truth.table()
    assert len(table.as_of) == minutes
    checked = 0
    for t, as_of in enumerate(table.as_of.tolist()):
        newest = as_of // 60_000 - 1
        for a, area in enumerate(AREAS.area_ids):
            for i, w in enumerate(table.windows_s):
                assert table.distinct[t, a, i] == len(reference.distinct(area, newest, w)), (area, w, t)
                checked += int(table.distinct[t, a, i] > 0)
        assert (table.people[t] == presence[t][:, 0]).all()
        assert (table.devices_present[t] == presence[t][:, 1]).all()
        assert (table.devices_present_all[t] == presence[t][:, 2]).all()
    assert checked > minutes * 10  # not a comparison of zeros
    assert table.people[:, AREAS.area_ids.index("city")].max() > devices  # people outnumber operator devices


def test_raster_territories_match_the_nearest_cell_site() -> None:
    city = City(AREAS)
    rng = np.random.default_rng(0)
    lo, hi = city.bounds
    points = rng.uniform(lo, hi, size=(20_000, 2))
    d = np.hypot(points[:, None, 0] - city.xy[None, :, 0], points[:, None, 1] - city.xy[None, :, 1])
    nearest = np.argmin(d, axis=1)
    ordered = np.sort(d, axis=1)
    clear = ordered[:, 1] - ordered[:, 0] > 2 * city.res  # away from a territory boundary
    assert clear.mean() > 0.8
    assert (city.locate(points)[clear] == nearest[clear]).all()


def _event_at_venue(scenario: str, venue: str, attendance: int, seed: int, after_end_min: int):
    """Run an event scenario with truth; return its phases, the venue's people present `at` a
    time (less its baseline before the crowd) and the `rate` of non-handover events per person
    in the venue between two times (what the network hears, against the truth)."""
    config = configure(scenario, {"attendance": attendance})
    start = config.scenario.start_ms()
    sim = Simulation(AREAS, 4000, seed=seed, start_ms=start, config=config, truth=True)
    phases = config.scenario.phases(start)
    cells = np.array(sorted(AREA_CELLS[venue]), dtype=np.uint32)
    per_minute: Counter = Counter()
    for events in sim.run(phases[-1] + after_end_min * 60_000):
        here = events[np.isin(events["cell"], cells) & (events["type"] != 3)]  # not handovers
        for minute, n in zip(*np.unique(here["ts"] // 60_000, return_counts=True)):
            per_minute[int(minute)] += int(n)
    table = sim.truth.table()  # type: ignore[union-attr]
    v = AREAS.area_ids.index(venue)
    people = dict(zip((table.as_of // 60_000 - 1).tolist(), table.people[:, v].tolist()))
    baseline = people[start // 60_000 + 30]

    def at(t: int) -> int:
        return people[t // 60_000] - baseline

    def rate(t0: int, t1: int) -> float:
        minutes = range(t0 // 60_000 + 2, t1 // 60_000 - 1)
        return sum(per_minute[m] for m in minutes) / sum(people[m] for m in minutes)

    return phases, at, rate


def test_match_day_fills_and_empties_the_stadium_and_signalling_dips_at_half_time() -> None:
    (kickoff, half, second, whistle), at, rate = _event_at_venue("match-day", "stadium", 4000, seed=2, after_end_min=60)
    assert at(kickoff + 30 * 60_000) >= 0.9 * 4000
    assert at(kickoff - 120 * 60_000) < 0.1 * 4000  # the ramp starts two hours before
    assert at(kickoff - 60 * 60_000) < at(kickoff - 30 * 60_000) < at(kickoff)
    assert at(whistle + 35 * 60_000) < 0.1 * 4000  # everyone leaves within ~30 minutes
    in_play = rate(kickoff + 10 * 60_000, half)
    half_time = rate(half, second)
    assert half_time < 0.75 * in_play  # the truth is flat, what the network hears dips
    assert abs(at(half + 7 * 60_000) - at(half - 5 * 60_000)) < 0.02 * 4000


def test_an_event_fills_and_empties_the_arena_without_a_half_time_dip() -> None:
    (doors, half, second, end), at, rate = _event_at_venue("event", "arena", 3000, seed=3, after_end_min=40)
    assert at(doors + 30 * 60_000) >= 0.9 * 3000
    assert at(doors - 70 * 60_000) < 0.1 * 3000  # arrivals over the hour before
    # A fifth leave in the last quarter hour of the show, the rest within 20 minutes of its end.
    assert 0.7 * 3000 < at(end - 2 * 60_000) < 0.9 * 3000
    assert at(end + 25 * 60_000) < 0.1 * 3000
    # Unlike a match: phones stay in use through the "half-time" the phases still mark.
    assert rate(half, second) > 0.8 * rate(doors + 10 * 60_000, half)


def test_high_street_uplift_raises_visits_from_the_given_day() -> None:
    config = configure("high-street", {"uplift_pct": "30", "uplift_from_day": "1"})
    start = config.scenario.start_ms()  # Monday
    sim = Simulation(AREAS, 20_000, seed=4, start_ms=start, config=config)
    rng = np.random.default_rng(5)
    visits = []
    for day in range(2):  # Monday (no uplift), Tuesday (+30%)
        plans = config.scenario.day_plans(start + day * DAY_MS, start, sim.city, sim.population, rng)
        visits.append(int((plans.kind == SHOP).sum()))
    assert 1.2 < visits[1] / visits[0] < 1.4
    saturday = config.scenario.day_plans(start + 5 * DAY_MS, start, sim.city, sim.population, rng)
    assert (saturday.kind == SHOP).sum() > visits[1]  # weekend peak


def test_station_rush_brings_commuters_through_the_station_in_the_morning() -> None:
    counts = {}
    for sim, _ in stepped("station-rush", 3000, 240, 0):  # 05:00 to 09:00
        if sim.now_ms % 60_000 == 0:
            hour = sim.now_ms % DAY_MS / 3_600_000
            counts[round(hour, 2)] = int(sim.mobility.presence_by_area()[AREAS.area_ids.index("station"), 0])
    early = max(v for h, v in counts.items() if h <= 5.5)
    rush = max(v for h, v in counts.items() if 7.0 <= h <= 8.5)
    assert rush > 3 * max(early, 10)
