"""Scenarios: what the simulated city does on the simulated days, and how much phones talk.

Every scenario but `steady` builds day plans from one everyday routine (residents go to work or
out and come home, in-commuters arrive by train or by road, cars make trips) and adds its own
story on top:

- `steady`: constant population walking between neighbouring cells, constant signalling rates,
  no diurnal pattern. For tests and the default demo.
- `match-day`: a Saturday; supporters arrive at the stadium over the two hours before kick-off
  (visitors by train via the station or by road), a full stadium, a half-time dip in
  signalling, everyone leaves within about 30 minutes of the final whistle.
- `high-street`: ordinary weekdays and weekend peaks on the high street; from `uplift_from_day`
  on, high-street visits rise by `uplift_pct` percent (the "free parking" switch).
- `free-parking`: eight weeks of the everyday routine from a Monday, four before and four
  after an intervention (free parking) from `intervention_day`: high-street visits rise by
  `uplift_pct` percent on weekdays and `weekend_uplift_pct` on weekends. The footfall history
  for a difference in differences of daily visitors against a `control` area (the east
  district: the area the intervention touches least, see FreeParking);
  producers/footfall_truth.py gives its causal truth.
- `station-rush`: a weekday with many in-commuters by train: morning and evening peaks of
  people passing through the station in a few minutes each.

Scenario timelines are relative to the simulation's start (kick-off `kickoff_after_min` after
it); routines use the simulated clock's UTC time of day. Every field of a scenario, of
PopulationParams and of Signalling can be overridden by name (`--set name=value`).
Pure: numpy only; randomness from the Generator passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from streams.core.areas import AreaMap
from streams.core.errors import ConfigError

from .city import City
from .mobility import DAY_MS, EDGE, HOME, OUT, OUTSIDE, SHOP, STATION, VENUE, WORK, Plans, travel_ms
from .population import CAR, IN_COMMUTER, RESIDENT, VISITOR, WORKER, Population, PopulationParams
from .signalling import Signalling

MIN = 60_000
HOUR = 3_600_000
SLOTS = 7

# Relative signalling activity by UTC hour of day (1.0 = an ordinary daytime hour): quiet
# nights, a morning commute, lunch, and the busiest evenings. Interpolated linearly.
DIURNAL = np.array([0.25, 0.15, 0.1, 0.1, 0.1, 0.2, 0.5, 0.9, 1.1, 1.0, 1.0, 1.0,
                    1.15, 1.1, 1.0, 1.0, 1.05, 1.2, 1.25, 1.3, 1.35, 1.3, 0.9, 0.5])


@dataclass(frozen=True)
class Episode:
    """A period in which the focus area's occupancy moves one way (for surge lag)."""

    label: str
    from_ms: int
    to_ms: int
    direction: int  # +1 filling, -1 emptying


@dataclass(frozen=True)
class Scenario:
    name: ClassVar[str] = "base"
    #: Overrides for `--quick` evaluation runs (small, fast), and the evaluation sizes.
    quick: ClassVar[dict[str, Any]] = {}
    quick_devices: ClassVar[int] = 5_000
    full_devices: ClassVar[int] = 100_000

    #: Default start (file output and evaluate) and simulated duration.
    start: str = "2026-11-02T06:00:00Z"
    duration_s: float = 3600.0
    #: Area ids the routine uses (missing areas: shop -> anywhere central, station -> by road).
    high_street: str = "high-street"
    station: str = "station"
    #: The area whose fill and emptying the evaluation times (surge lag); "" for none.
    focus: str = ""
    diurnal: bool = True
    # Everyday routine -------------------------------------------------------------------
    #: People living outside who work in the city, as a share of residents; by train or road.
    in_commuters: float = 0.1
    train_share: float = 0.7
    leave_home_h: float = 7.8
    leave_home_sd_min: float = 50.0
    work_h: float = 8.7
    #: Probabilities per person and day (weekday), high-street visits and other outings.
    p_lunch_shop: float = 0.06
    p_evening_shop: float = 0.06
    p_evening_out: float = 0.16
    p_day_shop: float = 0.16
    p_day_out: float = 0.34
    #: Saturday; Sunday has half the shopping.
    weekend_shop: float = 0.4
    weekend_out: float = 0.35
    shop_dwell_min: float = 45.0
    out_dwell_min: float = 100.0

    # --- configuration -----------------------------------------------------------------------
    def visitors(self, city: City) -> int:
        """People from outside the city the scenario needs (besides in-commuters)."""
        return 0

    def start_ms(self) -> int:
        return _parse_iso(self.start)

    def shop_factor(self, day_index: int, weekday: int = 0) -> float:
        """High-street visits on simulated day `day_index` (0 = the first; `weekday`: Monday = 0)
        relative to an ordinary day of the routine."""
        return 1.0

    def without_intervention(self) -> Scenario:
        """The counterfactual: the same scenario as it would run without its intervention."""
        return self

    def intervention_from_day(self) -> int | None:
        """The first simulated day the intervention acts on (None: the scenario has none)."""
        return None

    def episodes(self, start_ms: int) -> list[Episode]:
        return []

    # --- signalling activity -------------------------------------------------------------------
    def activity(self, t_ms: np.ndarray, place_kind: np.ndarray, start_ms: int) -> np.ndarray:
        """Relative data/paging activity of devices at time t in the given kind of place."""
        if not self.diurnal:
            return np.ones(len(t_ms))
        hour = (t_ms % DAY_MS) / HOUR
        return np.interp(hour, np.arange(25), np.append(DIURNAL, DIURNAL[0]))

    def activity_max(self) -> float:
        return float(DIURNAL.max()) if self.diurnal else 1.0

    # --- day plans -----------------------------------------------------------------------------
    def day_plans(self, day_start: int, sim_start: int, city: City, pop: Population, rng: np.random.Generator) -> Plans:
        """Everyone's segments for the day starting at `day_start` (UTC midnight)."""
        plans = Plans(pop.n_carriers, SLOTS, day_start)
        weekday = int((day_start // DAY_MS + 3) % 7)  # 1970-01-01 was a Thursday; Monday = 0
        day_index = int((day_start - sim_start // DAY_MS * DAY_MS) // DAY_MS)
        places = Places(city, self, rng)
        factor = self.shop_factor(day_index, weekday)
        workers = np.flatnonzero(pop.kind == WORKER)
        others = np.flatnonzero(pop.kind == RESIDENT)
        if weekday < 5:
            self._workday(plans, workers, pop, places, rng, factor, friday=weekday == 4)
            self._free_day(plans, others, pop, places, rng, self.p_day_shop * factor, self.p_day_out, 11.0, 1.5,
                           p_evening=0.12)
            self._in_commuters(plans, np.flatnonzero(pop.kind == IN_COMMUTER), pop, city, places, rng)
        else:
            shop = self.weekend_shop * (1.0 if weekday == 5 else 0.5) * factor
            everyone = np.concatenate([workers, others])
            self._free_day(plans, everyone, pop, places, rng, shop, self.weekend_out, 13.0, 2.0,
                           p_evening=0.25 if weekday == 5 else 0.12)
        self._cars(plans, np.flatnonzero(pop.kind == CAR), pop, places, rng, weekday)
        outsiders = (pop.kind == VISITOR) | ((pop.kind == IN_COMMUTER) & (weekday >= 5))
        plans.set(np.flatnonzero(outsiders), 0, 0, OUTSIDE)
        self.overlay(plans, day_index, day_start, sim_start, city, pop, places, rng)
        return plans.finish()

    def overlay(self, plans: Plans, day_index: int, day_start: int, sim_start: int, city: City,
                pop: Population, places: Places, rng: np.random.Generator) -> None:
        """The scenario's own story on top of the routine."""

    def _workday(self, plans: Plans, rows: np.ndarray, pop: Population, places: Places,
                 rng: np.random.Generator, factor: float, friday: bool) -> None:
        n = len(rows)
        leave = _clock(rng.normal(self.leave_home_h * HOUR, self.leave_home_sd_min * MIN, n), 5.5, 10.5)
        plans.set(rows, 1, leave, WORK, pop.work_xy[rows])
        lunch = rng.random(n) < self.p_lunch_shop * factor
        lunch_at = rng.uniform(12 * HOUR, 13.5 * HOUR, n).astype(np.int64)
        plans.set(rows[lunch], 2, lunch_at[lunch], SHOP, places.shop(int(lunch.sum())))
        back = lunch_at + rng.uniform(20 * MIN, 50 * MIN, n).astype(np.int64)
        plans.set(rows[lunch], 3, back[lunch], WORK, pop.work_xy[rows[lunch]])
        end = _clock(leave + rng.normal(self.work_h * HOUR, 50 * MIN, n), 12.0, 20.5)
        u = rng.random(n)
        evening_scale = 1.5 if friday else 1.0
        p_shop = self.p_evening_shop * factor * evening_scale
        shop = u < p_shop
        out = ~shop & (u < p_shop + self.p_evening_out * evening_scale)
        home = ~shop & ~out
        plans.set(rows[shop], 4, end[shop], SHOP, places.shop(int(shop.sum())))
        plans.set(rows[out], 4, end[out], OUT, places.out(int(out.sum())))
        plans.set(rows[home], 4, end[home], HOME, pop.home_xy[rows[home]])
        went = shop | out
        dwell = np.where(shop, _dwell(rng, self.shop_dwell_min, n), _dwell(rng, self.out_dwell_min, n))
        plans.set(rows[went], 5, _clock(end + dwell, 0, 23.9)[went], HOME, pop.home_xy[rows[went]])

    def _free_day(self, plans: Plans, rows: np.ndarray, pop: Population, places: Places, rng: np.random.Generator,
                  p_shop: float, p_out: float, at_h: float, sd_h: float, p_evening: float) -> None:
        n = len(rows)
        u = rng.random(n)
        shop = u < min(p_shop, 0.95)
        out = ~shop & (u < min(p_shop, 0.95) + p_out)
        at = _clock(rng.normal(at_h * HOUR, sd_h * HOUR, n), 8.0, 19.0)
        plans.set(rows[shop], 1, at[shop], SHOP, places.shop(int(shop.sum())))
        plans.set(rows[out], 1, at[out], OUT, places.out(int(out.sum())))
        went = shop | out
        dwell = np.where(shop, _dwell(rng, self.shop_dwell_min, n), _dwell(rng, self.out_dwell_min, n))
        plans.set(rows[went], 2, _clock(at + dwell, 0, 23.9)[went], HOME, pop.home_xy[rows[went]])
        evening = rng.random(n) < p_evening
        ev_at = _clock(rng.normal(19.5 * HOUR, 60 * MIN, n), 17.0, 22.0)
        plans.set(rows[evening], 3, ev_at[evening], OUT, places.out(int(evening.sum())))
        plans.set(rows[evening], 4, _clock(ev_at + _dwell(rng, 90, n), 0, 23.9)[evening], HOME, pop.home_xy[rows[evening]])

    def _in_commuters(self, plans: Plans, rows: np.ndarray, pop: Population, city: City,
                      places: Places, rng: np.random.Generator) -> None:
        n = len(rows)
        if not n:
            return
        train = pop.train[rows] & places.has_station
        arrive = _clock(rng.normal(7.9 * HOUR, 40 * MIN, n), 5.5, 10.5)
        entry = np.where(train[:, None], places.station(n), city.sample_edge(n, rng))
        plans.set(rows, 0, 0, OUTSIDE)
        plans.set(rows, 1, arrive, STATION if places.has_station else EDGE, entry)
        plans.set(rows[~train], 1, arrive[~train], EDGE)
        through = np.where(train, rng.uniform(2 * MIN, 6 * MIN, n), 1000).astype(np.int64)
        plans.set(rows, 2, arrive + through, WORK, pop.work_xy[rows])
        leave = _clock(arrive + rng.normal(8.8 * HOUR, 45 * MIN, n), 12.0, 21.0)
        exit_ = np.where(train[:, None], places.station(n), city.sample_edge(n, rng))
        plans.set(rows, 3, leave, STATION if places.has_station else EDGE, exit_)
        plans.set(rows[~train], 3, leave[~train], EDGE)
        way = travel_ms(np.hypot(*(exit_ - pop.work_xy[rows]).T), ~train)
        wait = np.where(train, rng.uniform(2 * MIN, 12 * MIN, n), 60_000).astype(np.int64)
        plans.set(rows, 4, _clock(leave + way + wait, 0, 23.95), OUTSIDE)

    def _cars(self, plans: Plans, rows: np.ndarray, pop: Population, places: Places,
              rng: np.random.Generator, weekday: int) -> None:
        n = len(rows)
        if not n:
            return
        if weekday < 5:
            go = _clock(rng.normal(8 * HOUR, 60 * MIN, n), 5.0, 12.0)
            back = _clock(rng.normal(17.5 * HOUR, 60 * MIN, n), 13.0, 22.0)
        else:
            go = _clock(rng.normal(12 * HOUR, 120 * MIN, n), 8.0, 18.0)
            back = _clock(go + _dwell(rng, 120, n), 0, 23.0)
        plans.set(rows, 1, go, OUT, places.out(n))
        plans.set(rows, 2, back, HOME, pop.home_xy[rows])


class Places:
    """Random places of each kind, drawn as plans are built."""

    def __init__(self, city: City, scenario: Scenario, rng: np.random.Generator) -> None:
        self.city, self.rng = city, rng
        ids = city.areas.area_by_id
        self.has_station = scenario.station in ids
        self._street = city.footprint(scenario.high_street) if scenario.high_street in ids else None
        self._station = city.footprint(scenario.station) if self.has_station else None

    def shop(self, n: int) -> np.ndarray:
        if self._street is None:
            return self.out(n)
        return self.city.sample_footprint(self._street, n, self.rng)

    def out(self, n: int) -> np.ndarray:
        return self.city.sample_cells(self.city.work_weight, n, self.rng)

    def station(self, n: int) -> np.ndarray:
        if self._station is None:
            return self.city.sample_edge(n, self.rng)
        return self.city.sample_footprint(self._station, n, self.rng)


@dataclass(frozen=True)
class Steady(Scenario):
    name: ClassVar[str] = "steady"
    quick: ClassVar[dict[str, Any]] = {"duration_s": 3600.0}
    quick_devices: ClassVar[int] = 5_000
    full_devices: ClassVar[int] = 50_000
    start: str = "2026-01-05T06:00:00Z"
    duration_s: float = 3600.0
    diurnal: bool = False
    in_commuters: float = 0.0
    #: Random-walk moves per carrier per hour.
    moves_per_hour: float = 1.5


@dataclass(frozen=True)
class MatchDay(Scenario):
    name: ClassVar[str] = "match-day"
    quick: ClassVar[dict[str, Any]] = {"attendance": 8_000, "kickoff_after_min": 150.0, "duration_s": 5 * 3600.0,
                                       "start": "2026-11-14T12:30:00Z"}
    quick_devices: ClassVar[int] = 6_000
    #: Kick-off to the final whistle, half-time and stoppages included (minutes).
    MATCH_MIN: ClassVar[float] = 110.0
    full_devices: ClassVar[int] = 100_000
    start: str = "2026-11-14T12:00:00Z"  # a Saturday
    duration_s: float = 6.5 * 3600
    focus: str = "stadium"
    venue: str = "stadium"
    #: Supporters at the match; 0: 95% of the venue's capacity (57,000 in the example city).
    attendance: int = 0
    #: Share of supporters who live in the city (at most 40% of residents); the rest visit.
    resident_share: float = 0.45
    kickoff_after_min: float = 180.0
    arrival_ramp_min: float = 120.0
    late_share: float = 0.03
    exit_min: float = 30.0
    early_leavers: float = 0.05
    #: Relative signalling of devices in the stadium: before kick-off, in play, at half-time
    #: (the dip), after the final whistle.
    pre_match_activity: float = 1.3
    in_play_activity: float = 0.7
    halftime_activity: float = 0.35
    post_match_activity: float = 1.5

    def crowd(self, city: City) -> int:
        return self.attendance or self.full_house(city.areas)

    def full_house(self, areas: AreaMap) -> int:
        """The crowd when `attendance` is not set: 95% of the venue's capacity."""
        if self.venue not in areas.area_by_id:
            raise ConfigError(f"{self.name} needs a venue area {self.venue!r} (set venue=AREA)")
        return int(0.95 * areas.area_by_id[self.venue].capacity)

    def visitors(self, city: City) -> int:
        return int(round(self.crowd(city) * (1 - self.resident_share)))

    def kickoff(self, start_ms: int) -> int:
        return start_ms + int(self.kickoff_after_min * MIN)

    def phases(self, start_ms: int) -> tuple[int, int, int, int]:
        """Kick-off, half-time start, second half start, final whistle (epoch ms)."""
        k = self.kickoff(start_ms)
        return k, k + 47 * MIN, k + 62 * MIN, k + int(self.MATCH_MIN * MIN)

    def episodes(self, start_ms: int) -> list[Episode]:
        k, _, _, whistle = self.phases(start_ms)
        ramp = int(self.arrival_ramp_min * MIN)
        return [Episode("fill", k - ramp - 30 * MIN, k + 15 * MIN, +1),
                Episode("empty", whistle - 5 * MIN, whistle + 75 * MIN, -1)]

    def activity(self, t_ms: np.ndarray, place_kind: np.ndarray, start_ms: int) -> np.ndarray:
        base = super().activity(t_ms, place_kind, start_ms)
        k, half, second, whistle = self.phases(start_ms)
        phase = np.select(
            [t_ms < k, t_ms < half, t_ms < second, t_ms < whistle],
            [self.pre_match_activity, self.in_play_activity, self.halftime_activity, self.in_play_activity],
            self.post_match_activity,
        )
        return np.where(place_kind == VENUE, base * phase, base)

    def activity_max(self) -> float:
        return super().activity_max() * max(1.0, self.pre_match_activity, self.in_play_activity,
                                            self.halftime_activity, self.post_match_activity)

    def overlay(self, plans: Plans, day_index: int, day_start: int, sim_start: int, city: City,
                pop: Population, places: Places, rng: np.random.Generator) -> None:
        k, _, _, whistle = self.phases(sim_start)
        if not day_start <= k < day_start + DAY_MS:
            return
        if self.venue not in city.areas.area_by_id:
            raise ConfigError(f"{self.name} needs a venue area {self.venue!r} (set venue=AREA)")
        venue = city.footprint(self.venue)
        residents = np.flatnonzero((pop.kind == WORKER) | (pop.kind == RESIDENT))
        n_res = min(int(round(self.crowd(city) * self.resident_share)), int(0.4 * len(residents)))
        # Supporters from the city: a fixed random subset (the Generator is seeded).
        fans = np.sort(rng.choice(residents, size=n_res, replace=False)) if n_res else residents[:0]
        visitors = np.flatnonzero(pop.kind == VISITOR)
        rows = np.concatenate([fans, visitors])
        n = len(rows)
        if not n:
            return
        seat = city.sample_footprint(venue, n, rng)
        # Arrival at the gate: density rising linearly towards kick-off over the ramp; a few late.
        ramp = self.arrival_ramp_min * MIN
        arrive: np.ndarray = k - ramp * (1 - np.sqrt(rng.random(n)))
        late = rng.random(n) < self.late_share
        arrive[late] = k + rng.uniform(0, 15 * MIN, int(late.sum()))
        leave = whistle + self.exit_min * MIN * rng.beta(1.5, 3.0, n)
        early = rng.random(n) < self.early_leavers
        leave[early] = whistle - rng.uniform(0, 15 * MIN, int(early.sum()))
        arrive, leave = arrive.astype(np.int64) - day_start, leave.astype(np.int64) - day_start  # type: ignore[assignment]
        plans.reset(rows)
        is_fan = np.arange(n) < len(fans)
        # Residents walk or ride from home.
        f = np.flatnonzero(is_fan)
        to_venue = travel_ms(np.hypot(*(seat[f] - pop.home_xy[rows[f]]).T))
        plans.set(rows[f], 1, arrive[f] - to_venue, VENUE, seat[f])
        plans.set(rows[f], 2, leave[f], HOME, pop.home_xy[rows[f]])
        # Visitors: by train through the station, or by road from the city's edge.
        v = np.flatnonzero(~is_fan)
        train = pop.train[rows[v]] & places.has_station
        gate = np.where(train[:, None], places.station(len(v)), city.sample_edge(len(v), rng))
        way = travel_ms(np.hypot(*(seat[v] - gate).T), ~train)
        plans.set(rows[v], 0, 0, OUTSIDE)
        enter = arrive[v] - way - np.where(train, rng.uniform(1 * MIN, 4 * MIN, len(v)), 1000).astype(np.int64)
        plans.set(rows[v], 1, enter, STATION if places.has_station else EDGE, gate)
        plans.set(rows[v[~train]], 1, enter[~train], EDGE)
        plans.set(rows[v], 2, arrive[v] - way, VENUE, seat[v])
        plans.set(rows[v], 3, leave[v], STATION if places.has_station else EDGE, gate)
        plans.set(rows[v[~train]], 3, leave[v][~train], EDGE)
        wait = np.where(train, rng.uniform(2 * MIN, 15 * MIN, len(v)), 60_000).astype(np.int64)
        plans.set(rows[v], 4, leave[v] + way + wait, OUTSIDE)


@dataclass(frozen=True)
class Event(MatchDay):
    """Another kind of event: a concert at the arena. No half-time dip (phones in use throughout
    the show), more leaving before the end, a quicker way in and out of a smaller venue. The
    calibration's randomised networks draw its knobs (calibrate.NetworkPrior), so that a match
    day is not the only way the table knows a venue to fill and empty."""

    name: ClassVar[str] = "event"
    focus: str = "arena"
    venue: str = "arena"
    start: str = "2026-11-13T16:00:00Z"  # a Friday
    arrival_ramp_min: float = 60.0
    exit_min: float = 20.0
    early_leavers: float = 0.2
    pre_match_activity: float = 1.1
    in_play_activity: float = 1.0
    halftime_activity: float = 1.0
    post_match_activity: float = 1.2


@dataclass(frozen=True)
class HighStreet(Scenario):
    name: ClassVar[str] = "high-street"
    quick: ClassVar[dict[str, Any]] = {"duration_s": 86400.0, "uplift_from_day": 1,
                                       "start": "2026-11-05T12:00:00Z"}
    quick_devices: ClassVar[int] = 4_000
    full_devices: ClassVar[int] = 30_000
    start: str = "2026-11-02T00:00:00Z"  # a Monday
    duration_s: float = 7 * 86400.0
    focus: str = "high-street"
    #: From day `uplift_from_day` (0 = the first simulated day) on, high-street visits x (1 + pct/100).
    uplift_pct: float = 20.0
    uplift_from_day: int = 3

    def shop_factor(self, day_index: int, weekday: int = 0) -> float:
        return 1.0 + self.uplift_pct / 100.0 if day_index >= self.uplift_from_day else 1.0

    def without_intervention(self) -> Scenario:
        return dataclasses.replace(self, uplift_pct=0.0)

    def intervention_from_day(self) -> int | None:
        return self.uplift_from_day


@dataclass(frozen=True)
class FreeParking(Scenario):
    """Did free parking bring more visitors? Weeks of the routine, an intervention in the middle.

    The intervention only adds shop trips, and they all go to the high street's footprint. No
    area of the example city is untouched by them: the centre holds the whole street, the west
    district two of its three cells and the east district one; the venues hold none but lie on
    the way to it, so they gain passers-by. The control is the east district because it gains
    least: a district's daily visitors are mostly people who live or work there and count every
    day anyway. Measured with footfall_truth (the defaults; 5,000 devices with three seeds and
    10,000 with one), daily visitors in the after weeks: the high street +4.8 to +5.6%, the east
    district +0.3 to +0.4% (weekdays +0.15 to +0.25%, weekends +0.7 to +1.0%), arena and stadium
    +0.6 to +1.5% (weekends +1 to +5%: few visitors, much noise), the station next to the
    street +2.3 to +3.4%.
    """

    name: ClassVar[str] = "free-parking"
    #: Monday to Thursday, the intervention from Wednesday: two ordinary weekdays before, two after.
    quick: ClassVar[dict[str, Any]] = {"duration_s": 4 * 86400.0 + 4 * 3600.0, "intervention_day": 2}
    quick_devices: ClassVar[int] = 4_000
    full_devices: ClassVar[int] = 10_000
    start: str = "2026-11-02T00:00:00Z"  # a Monday
    #: Eight weeks, and the four hours into the ninth Monday that complete the last visitor
    #: day (pseudonyms rotate daily at 04:00 UTC, so a visitor day runs 04:00 to 04:00).
    duration_s: float = 56 * 86400.0 + 4 * 3600.0
    focus: str = "high-street"
    #: From day `intervention_day` (0 = the first simulated day) on, high-street visits x
    #: (1 + pct/100): `uplift_pct` Monday to Friday, `weekend_uplift_pct` on Saturday and Sunday.
    uplift_pct: float = 10.0
    weekend_uplift_pct: float = 15.0
    intervention_day: int = 28
    #: The area to compare the high street with (difference in differences): one the
    #: intervention hardly touches.
    control: str = "east-district"

    def shop_factor(self, day_index: int, weekday: int = 0) -> float:
        if day_index < self.intervention_day:
            return 1.0
        return 1.0 + (self.weekend_uplift_pct if weekday >= 5 else self.uplift_pct) / 100.0

    def without_intervention(self) -> Scenario:
        return dataclasses.replace(self, uplift_pct=0.0, weekend_uplift_pct=0.0)

    def intervention_from_day(self) -> int | None:
        return self.intervention_day


@dataclass(frozen=True)
class StationRush(Scenario):
    name: ClassVar[str] = "station-rush"
    quick: ClassVar[dict[str, Any]] = {"duration_s": 6 * 3600.0}
    quick_devices: ClassVar[int] = 5_000
    full_devices: ClassVar[int] = 60_000
    start: str = "2026-11-03T05:00:00Z"  # a Tuesday
    duration_s: float = 16 * 3600.0
    focus: str = "station"
    in_commuters: float = 0.4
    train_share: float = 0.85

    def episodes(self, start_ms: int) -> list[Episode]:
        day = start_ms // DAY_MS * DAY_MS
        return [Episode("morning-in", day + 6 * HOUR, day + 8 * HOUR, +1),
                Episode("morning-out", day + 8 * HOUR, day + 10 * HOUR, -1),
                Episode("evening-in", day + 15 * HOUR + 30 * MIN, day + 17 * HOUR + 30 * MIN, +1),
                Episode("evening-out", day + 17 * HOUR + 30 * MIN, day + 20 * HOUR, -1)]


SCENARIOS: dict[str, type[Scenario]] = {s.name: s for s in (Steady, MatchDay, Event, HighStreet, FreeParking, StationRush)}


@dataclass(frozen=True)
class Config:
    """Everything a simulation needs besides the city, the device count and the seed."""

    scenario: Scenario = field(default_factory=Steady)
    population: PopulationParams = field(default_factory=PopulationParams)
    signalling: Signalling = field(default_factory=Signalling)


def configure(name: str = "steady", overrides: Mapping[str, Any] | None = None, quick: bool = False) -> Config:
    """Build a scenario by name, with `--quick` presets and name=value overrides applied.

    An override names a field of the scenario, of PopulationParams or of Signalling; string
    values are converted to the field's type.
    """
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    cls = SCENARIOS[name]
    values: dict[str, Any] = dict(cls.quick) if quick else {}
    values.update(overrides or {})
    parts: dict[str, dict[str, Any]] = {"scenario": {}, "population": {}, "signalling": {}}
    owners: list[tuple[str, type[Any]]] = [("scenario", cls), ("population", PopulationParams), ("signalling", Signalling)]
    if name == "steady":
        parts["population"]["night_off_share"] = 0.0
    for key, raw in values.items():
        for part, klass in owners:
            fields = {f.name: f for f in dataclasses.fields(klass)}
            if key in fields:
                parts[part][key] = _convert(key, raw, fields[key], klass)
                break
        else:
            raise ConfigError(f"unknown parameter {key!r} for scenario {name}")
    return Config(cls(**parts["scenario"]), PopulationParams(**parts["population"]), Signalling(**parts["signalling"]))


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """`["a=1", "b=x"]` -> {"a": "1", "b": "x"} (the CLI's repeated --set)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected name=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _convert(key: str, raw: Any, f: dataclasses.Field, klass: type) -> Any:
    if not isinstance(raw, str):
        return raw
    default = f.default if f.default is not dataclasses.MISSING else None
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            if not math.isfinite(value):
                raise ConfigError(raw)
            return value
        if isinstance(default, tuple):
            # "area:share,area:share" for the per-area market share
            pairs = [p.split(":") for p in raw.split(",") if p]
            return tuple((a.strip(), float(s)) for a, s in pairs)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def _clock(offset_ms: np.ndarray, lo_h: float, hi_h: float) -> np.ndarray:
    return np.clip(offset_ms, lo_h * HOUR, hi_h * HOUR).astype(np.int64)


def _dwell(rng: np.random.Generator, median_min: float, n: int) -> np.ndarray:
    """Lognormal stay with the given median (sigma 0.5): most between half and twice that."""
    return (median_min * MIN * np.exp(rng.normal(0.0, 0.5, n))).astype(np.int64)


def _parse_iso(text: str) -> int:
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)
