"""The free-parking scenario and the causal truth of daily visitors (producers/footfall_truth.py):

- the scenario configures by name, with overrides, and its counterfactual drops the uplift;
- daily visitors agree with a count of every person's cell, minute by minute, by visitor day,
  of the simulation's own run;
- the intervention raises the high street's true daily visitors from its first day on, more at
  weekends, and hardly moves the control; without an uplift the truth is exactly no effect.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
import pytest

from producers.footfall_truth import WEEKDAYS, WEEKEND, FootfallTruth, daily_visitors, footfall_effect, footfall_truth
from producers.mobility import DAY_MS
from producers.scenarios import FreeParking, configure, parse_overrides
from producers.simulator import Simulation
from streams.core.areas import load_areas
from streams.core.errors import ConfigError
from streams.core.settings import DEFAULT_AREAS

AREAS = load_areas(DEFAULT_AREAS)
AREA_CELLS = {a["id"]: sorted(a["cells"]) for a in json.loads(DEFAULT_AREAS.read_text())["areas"]}
HOUR_MS = 3_600_000


def test_free_parking_configures_by_name_with_overrides() -> None:
    config = configure("free-parking", parse_overrides(["uplift_pct=0", "weekend-uplift-pct=5", "intervention_day=3",
                                                        "control=arena", "market_share=0.4"]))
    scenario = config.scenario
    assert isinstance(scenario, FreeParking)
    assert (scenario.uplift_pct, scenario.weekend_uplift_pct, scenario.intervention_day, scenario.control) == (0.0, 5.0, 3, "arena")
    assert config.population.market_share == 0.4
    # Before the intervention nothing changes; after it, weekdays (Monday = 0) and weekends differ.
    assert [scenario.shop_factor(2, 5), scenario.shop_factor(3, 0), scenario.shop_factor(3, 5), scenario.shop_factor(4, 6)] == [1.0, 1.0, 1.05, 1.05]
    with pytest.raises(ConfigError, match="not a valid int"):
        configure("free-parking", {"intervention_day": "next week"})


def test_free_parking_defaults_quick_preset_and_counterfactual() -> None:
    scenario = configure("free-parking").scenario
    assert isinstance(scenario, FreeParking)
    start = datetime.fromtimestamp(scenario.start_ms() / 1000, tz=timezone.utc)
    assert (start.weekday(), start.hour, start.minute) == (0, 0, 0)  # a Monday, midnight UTC
    assert scenario.duration_s == 8 * 7 * 86400 + 4 * 3600  # eight weeks of whole visitor days
    assert scenario.intervention_from_day() == scenario.intervention_day == 28
    assert [scenario.shop_factor(28, 0), scenario.shop_factor(33, 5)] == [1.1, 1.15]
    assert scenario.control in AREAS.area_ids and scenario.high_street in AREAS.area_ids
    without = scenario.without_intervention()
    assert isinstance(without, FreeParking) and (without.uplift_pct, without.weekend_uplift_pct) == (0.0, 0.0)
    assert {without.shop_factor(day, day % 7) for day in range(56)} == {1.0}
    assert without.intervention_day == 28 and without.control == scenario.control
    quick = configure("free-parking", quick=True).scenario
    assert isinstance(quick, FreeParking)
    assert quick.duration_s <= 5 * 86400 and 0 < quick.intervention_day < quick.duration_s / 86400 - 1
    # The other scenarios: high-street's counterfactual drops its uplift; steady has none.
    high_street = configure("high-street").scenario
    assert high_street.without_intervention().shop_factor(5) == 1.0 < high_street.shop_factor(5)
    with pytest.raises(ConfigError, match="no intervention"):
        footfall_truth(AREAS, 500, 1, configure("steady"))


def test_daily_visitors_are_every_person_seen_in_the_area_minute_by_minute() -> None:
    """A reference from the simulation as the pipeline's run steps it (events and all): every
    person's cell (located afresh from the position) each minute, into a set per area and
    visitor day. Visitor days start at noon here: the run covers one whole day and two parts."""
    config = configure("free-parking", {"intervention_day": "0", "uplift_pct": "40"})
    start = config.scenario.start_ms() + 10 * HOUR_MS  # Monday 10:00
    end = start + 26 * HOUR_MS + 30 * 60_000
    truth = daily_visitors(AREAS, 400, 3, config, start, end, day_offset_s=12 * 3600, step_s=60)

    sim = Simulation(AREAS, 400, 3, start, step_s=60, config=config, truth=True)
    people = np.flatnonzero(sim.population.is_person)
    seen: dict[tuple[str, int], set[int]] = defaultdict(set)

    def look(at_ms: int) -> None:
        here = people[sim.mobility.present[people]]
        cells = AREAS.cell_ids[sim.city.locate(sim.mobility.pos[here])]
        day = (at_ms - 12 * HOUR_MS) // DAY_MS
        for area, area_cells in AREA_CELLS.items():
            seen[(area, day)].update(here[np.isin(cells, area_cells)].tolist())

    look(start)
    for _ in sim.run(end):
        look(sim.now_ms)
    monday_noon = start // DAY_MS * DAY_MS + 12 * HOUR_MS
    assert truth.day_start_ms.tolist() == [monday_noon] and truth.day_index.tolist() == [0] and truth.weekday.tolist() == [0]
    expected = [len(seen[(area, monday_noon // DAY_MS)]) for area in truth.area_ids]
    assert truth.visitors[0].tolist() == expected
    assert expected[truth.area_ids.index("high-street")] > 100


@pytest.fixture(scope="module")
def two_weeks() -> FootfallTruth:
    """Two weeks from a Monday, a strong intervention from the second Monday on, positions every
    five minutes (fast; the counts of small areas are lower than every minute, alike in both runs)."""
    config = configure("free-parking", {"uplift_pct": "50", "weekend_uplift_pct": "100", "intervention_day": "7"})
    return footfall_truth(AREAS, 1500, 2, config, duration_s=14 * 86400 + 4 * 3600, step_s=300)


def test_intervention_raises_high_street_daily_visitors_and_hardly_the_control(two_weeks: FootfallTruth) -> None:
    truth = two_weeks
    assert truth.day_index.tolist() == list(range(14)) and truth.weekday.tolist() == [d % 7 for d in range(14)]
    # Both runs draw the same random numbers until the intervention: the first week is one run.
    before = truth.day_index < 7
    assert np.array_equal(truth.visitors[before], truth.counterfactual[before])
    effect = footfall_effect(truth, "high-street", "east-district")
    assert (effect.before_days, effect.after_days) == (7, 7)
    assert effect.uplift > 0.25 and effect.extra_per_day > 0
    assert abs(effect.control_uplift) < 0.05  # passers-by and shoppers in its one street cell
    assert effect.did == pytest.approx((1 + effect.uplift) / (1 + effect.control_uplift) - 1)
    assert abs(effect.observed_did - effect.did) < 0.1  # a week against a week: the same weekdays
    weekdays = footfall_effect(truth, "high-street", "east-district", WEEKDAYS)
    weekend = footfall_effect(truth, "high-street", "east-district", WEEKEND)
    assert (weekdays.after_days, weekend.after_days) == (5, 2)
    assert weekend.uplift > 2 * weekdays.uplift > 0.2
    # Everyone in the city is in it every day: the city's daily visitors cannot change.
    assert footfall_effect(truth, "city", "east-district").uplift == 0.0


def test_footfall_effect_refuses_what_it_cannot_measure(two_weeks: FootfallTruth) -> None:
    with pytest.raises(ConfigError, match="unknown area"):
        footfall_effect(two_weeks, "high-street", "harbour")
    late = dataclasses.replace(two_weeks, intervention_day=20)
    with pytest.raises(ConfigError, match="before or after"):
        footfall_effect(late, "high-street", "east-district")


def test_without_an_uplift_the_truth_is_no_effect() -> None:
    config = configure("free-parking", parse_overrides(["uplift_pct=0", "weekend_uplift_pct=0"]), quick=True)
    truth = footfall_truth(AREAS, 800, 5, config, step_s=300)
    assert len(truth.day_index) == 4 and truth.intervention_day == 2
    assert np.array_equal(truth.visitors, truth.counterfactual) and truth.visitors.min() > 0
    effect = footfall_effect(truth, "high-street", "east-district")
    assert (effect.uplift, effect.control_uplift, effect.did, effect.extra_per_day) == (0.0, 0.0, 0.0, 0.0)
