"""The causal truth of daily visitors (footfall), with and without a scenario's intervention.

A *visitor* of an area on a day is a person who was in the area (their position in the
territory of one of its cells, as everywhere in the simulator's truth) at some time during the
day. Days are *visitor days*: they start at `day_offset_s` after UTC midnight (04:00 by default,
when crowdpulse's pseudonyms rotate, so one pseudonym stands for one person for exactly one
visitor day). Every person counts, whether they carry the operator's phones, another
operator's or none, switched on or off: the pipeline estimates people (the operator's phones
scaled up by its market share), not phones. Cars and meters are not people and never count.

Positions come from the simulator's own Mobility, built by `Simulation` from the same areas,
devices, seed, start and configuration: the people, day plans and trips of the run whose events
the pipeline sees (with any number of threads: the plans do not depend on them). They are
sampled every `step_s`. At the simulation's own step (10 s) they are exactly the run's; the
default minute is five times faster and differs in two ways: a trip that begins while another
is under way starts from where the carrier was at the last step, and a person who crosses a
cell's territory between two samples is not counted there. The second matters for small areas
full of passers-by (in the example city, a minute counts 3.5% fewer daily visitors of the high
street than 10 s, 13% fewer of the arena, 0.5% of the centre) and not for a ratio of two runs
sampled alike.

`footfall_truth` runs a scenario twice: as configured, and as its counterfactual
(`Scenario.without_intervention`: the same seed, the uplift set to 0). Both runs draw the same
random numbers until the intervention's first day; from then on they diverge (the number of
shop trips changes what the plan generator draws next), so the counterfactual of the after
period is another realisation of the same city without the intervention: a statistical, not a
person-by-person, counterfactual. Effects are therefore ratios of sums over many days
(`footfall_effect`), whose noise shrinks with the days and the devices. Pure: numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from streams.core.areas import AreaMap
from streams.core.errors import ConfigError

from .mobility import DAY_MS
from .scenarios import Config
from .simulator import Simulation

#: Visitor days start at 04:00 UTC, when crowdpulse's pseudonyms rotate (streams.core.rotation).
DAY_OFFSET_S = 4 * 3600
WEEKDAYS = (0, 1, 2, 3, 4)
WEEKEND = (5, 6)


@dataclass(frozen=True)
class DailyVisitors:
    """Distinct people per complete visitor day and area of one run."""

    area_ids: list[str]
    day_start_ms: np.ndarray  # (D,) epoch ms, start of each visitor day
    day_index: np.ndarray  # (D,) the simulated day it starts on (0 = the day the run starts)
    weekday: np.ndarray  # (D,) of that day, Monday = 0
    visitors: np.ndarray  # (D, A) people present in the area at some time of the day


@dataclass(frozen=True)
class FootfallTruth:
    """Daily visitors of a run with its intervention and of its counterfactual, day by day."""

    area_ids: list[str]
    day_start_ms: np.ndarray  # (D,)
    day_index: np.ndarray  # (D,)
    weekday: np.ndarray  # (D,)
    visitors: np.ndarray  # (D, A) with the intervention: the run the pipeline sees
    counterfactual: np.ndarray  # (D, A) the same scenario without it (same seed)
    #: The first simulated day of the intervention: visitor days from then on are "after".
    intervention_day: int


@dataclass(frozen=True)
class FootfallEffect:
    """What the intervention did to an area's daily visitors, against a control area.

    With V1 the true daily visitors with the intervention, V0 without, A the after days
    (day_index >= intervention_day) and B the before days (both of the selected weekdays):

    - uplift = sum_A V1[area] / sum_A V0[area] - 1: the causal effect on the area;
    - control_uplift: the same for the control area (0 but for noise, if the control is
      untouched);
    - did = (1 + uplift) / (1 + control_uplift) - 1: the causal effect net of any effect on the
      control; what a ratio difference in differences estimates when its trends are parallel;
    - observed_did = (mean_A V1[area] / mean_B V1[area]) / (mean_A V1[control] / mean_B
      V1[control]) - 1: the difference in differences computed from the true daily visitors of
      the run with the intervention, i.e. by a perfect counter. An estimate from the pipeline's
      counts is to be compared with this one (its measurement error) and this with `did` (the
      design's own error: trends that are not parallel, noise);
    - extra_per_day = mean_A (V1[area] - V0[area]): visitors the intervention added per day.
    """

    area: str
    control: str
    before_days: int
    after_days: int
    uplift: float
    control_uplift: float
    did: float
    observed_did: float
    extra_per_day: float


def daily_visitors(
    areas: AreaMap,
    devices: int,
    seed: int,
    config: Config,
    start_ms: int,
    end_ms: int,
    day_offset_s: int = DAY_OFFSET_S,
    step_s: float = 60.0,
) -> DailyVisitors:
    """True daily visitors per area of the run `Simulation(areas, devices, seed, start_ms,
    config=config)` until `end_ms`, for every visitor day that lies wholly inside the run."""
    if not 0 <= day_offset_s < DAY_MS // 1000:
        raise ConfigError("day_offset_s must be in [0, 86400)")
    step_ms = int(step_s * 1000)
    if step_ms <= 0 or end_ms <= start_ms:
        raise ConfigError("the step and the run must be positive")
    # The simulation builds population, plans and Mobility exactly as for the pipeline's run;
    # with a truth it moves every carrier, not only those with the operator's devices.
    sim = Simulation(areas, devices, seed, start_ms, config=config, truth=True)
    mobility = sim.mobility
    membership = sim.city.membership
    is_person = sim.population.is_person
    first_midnight = start_ms // DAY_MS * DAY_MS
    first_boundary = first_midnight + day_offset_s * 1000
    # Slot s + 1 holds visitor day s (-1: the one already running at the start).
    n_slots = (end_ms - first_boundary) // DAY_MS + 2
    counts = np.zeros((n_slots, len(areas.area_ids)), dtype=np.int64)
    # The last slot each person was counted in, per area: a person counts once per area and day.
    last = np.full((len(is_person), len(areas.area_ids)), -1, dtype=np.int32)

    def count(carriers: np.ndarray, at_ms: int) -> None:
        slot = (at_ms - first_boundary) // DAY_MS + 1
        carriers = carriers[is_person[carriers]]
        cells = mobility.cells(carriers)
        here = cells >= 0
        carriers, cells = carriers[here], cells[here]
        seen = last[carriers]
        fresh = membership[cells] & (seen != slot)
        counts[slot] += fresh.sum(axis=0)
        last[carriers] = np.where(fresh, slot, seen)

    count(np.flatnonzero(mobility.present), start_ms)
    t0 = start_ms
    while t0 < end_ms:
        next_boundary = first_boundary + ((t0 - first_boundary) // DAY_MS + 1) * DAY_MS
        t1 = min((t0 // step_ms + 1) * step_ms, next_boundary, end_ms)
        moves = mobility.advance(t0, t1)
        if t1 == next_boundary:
            count(np.flatnonzero(mobility.present), t1)  # a new day: everyone is where they are
        else:
            count(moves.moved, t1)
        t0 = t1

    slot_start = first_boundary + (np.arange(n_slots) - 1) * DAY_MS
    whole = (slot_start >= start_ms) & (slot_start + DAY_MS <= end_ms)
    day_start = slot_start[whole]
    day_index = (day_start - first_midnight) // DAY_MS
    weekday = (day_start // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    return DailyVisitors(list(areas.area_ids), day_start, day_index, weekday, counts[whole])


def footfall_truth(
    areas: AreaMap,
    devices: int,
    seed: int,
    config: Config,
    start_ms: int | None = None,
    duration_s: float | None = None,
    day_offset_s: int = DAY_OFFSET_S,
    step_s: float = 60.0,
) -> FootfallTruth:
    """True daily visitors of a scenario run with its intervention and without it (same seed).

    `start_ms` and `duration_s` default to the scenario's own; give the ones the simulation
    really ran with (evaluate moves a future start back by whole weeks).
    """
    scenario = config.scenario
    intervention_day = scenario.intervention_from_day()
    if intervention_day is None:
        raise ConfigError(f"scenario {scenario.name} has no intervention")
    start = scenario.start_ms() if start_ms is None else start_ms
    end = start + int((scenario.duration_s if duration_s is None else duration_s) * 1000)
    without = dataclasses.replace(config, scenario=scenario.without_intervention())
    runs = [daily_visitors(areas, devices, seed, c, start, end, day_offset_s, step_s) for c in (config, without)]
    with_it, without_it = runs
    return FootfallTruth(with_it.area_ids, with_it.day_start_ms, with_it.day_index, with_it.weekday,
                         with_it.visitors, without_it.visitors, intervention_day)


def footfall_effect(truth: FootfallTruth, area: str, control: str, weekdays: Collection[int] | None = None) -> FootfallEffect:
    """The intervention's effect on `area`'s daily visitors against `control` (FootfallEffect),
    over the visitor days of the given weekdays (Monday = 0; None: every day)."""
    for name in (area, control):
        if name not in truth.area_ids:
            raise ConfigError(f"unknown area {name!r}")
    a, c = truth.area_ids.index(area), truth.area_ids.index(control)
    chosen = np.ones(len(truth.day_index), dtype=bool) if weekdays is None else np.isin(truth.weekday, list(weekdays))
    after = chosen & (truth.day_index >= truth.intervention_day)
    before = chosen & (truth.day_index < truth.intervention_day)
    if not after.any() or not before.any():
        raise ConfigError("the truth has no visitor days before or after the intervention (of those weekdays)")
    with_it, without_it = truth.visitors.astype(np.float64), truth.counterfactual.astype(np.float64)
    uplift = with_it[after, a].sum() / without_it[after, a].sum() - 1
    control_uplift = with_it[after, c].sum() / without_it[after, c].sum() - 1

    def trend(column: int) -> float:
        return float(with_it[after, column].mean() / with_it[before, column].mean())

    return FootfallEffect(
        area=area,
        control=control,
        before_days=int(before.sum()),
        after_days=int(after.sum()),
        uplift=float(uplift),
        control_uplift=float(control_uplift),
        did=float((1 + uplift) / (1 + control_uplift) - 1),
        observed_did=trend(a) / trend(c) - 1,
        extra_per_day=float((with_it[after, a] - without_it[after, a]).mean()),
    )
