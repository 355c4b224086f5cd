"""Where every carrier (person, car, meter) is, second by second: day plans, trips, presence.

A carrier follows a plan: a list of (time, place) segments. When a segment starts, the carrier
travels in a straight line from where it is to the segment's place, at walking speed for short
trips and at an urban mix of bus, tram and car for longer ones (cars always drive); people from
outside appear at the station or at the city's edge and vanish the same way. Positions are
continuous (metres); *where a carrier truly is* is the cell territory holding its position
(City.locate), kept per carrier and summed per cell incrementally for the ground truth.

Planners decide the segments: `DayPlanner` asks the scenario for one day of plans at a time
(scenarios.py); `WalkPlanner` (the `steady` scenario) moves carriers to random neighbouring
cells at a constant rate. Work per step is proportional to the carriers that move, not to the
population: one scan for due plan changes, one for travellers. Pure: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .city import City
from .population import CAR, IN_COMMUTER, METER, VISITOR, Population

INF = np.iinfo(np.int64).max
DAY_MS = 86_400_000
INF_OFFSET = np.iinfo(np.int32).max  # an unused plan slot

# Place kinds of plan segments.
KEEP = 0  # stay where you are (first segment of every day)
HOME = 1
WORK = 2
SHOP = 3  # the high street
OUT = 4  # leisure or errands somewhere in the city
VENUE = 5  # the scenario's venue (stadium)
STATION = 6
EDGE = 7  # the city's edge, where road traffic enters and leaves
OUTSIDE = 8  # not in the city: no position, no events

WALK_MPS = 1.3
URBAN_MPS = 7.0  # door to door by bus, tram or car, for trips longer than WALK_LIMIT_M
DRIVE_MPS = 9.0
WALK_LIMIT_M = 1500.0


def travel_ms(distance_m: np.ndarray, drives: np.ndarray | bool = False) -> np.ndarray:
    """Door-to-door travel time for straight-line distances."""
    speed = np.where(drives, DRIVE_MPS, np.where(distance_m < WALK_LIMIT_M, WALK_MPS, URBAN_MPS))
    return (distance_m / speed * 1000).astype(np.int64)


class Plans:
    """One day of plans: per carrier up to K segments (offset ms from day start, kind, place)."""

    def __init__(self, n: int, k: int, day_start_ms: int) -> None:
        self.day_start = day_start_ms
        self.offset = np.full((n, k), INF_OFFSET, dtype=np.int32)
        self.kind = np.full((n, k), KEEP, dtype=np.int8)
        self.place = np.full((n, k, 2), np.nan, dtype=np.float32)
        self.offset[:, 0] = 0  # KEEP at midnight: everyone starts the day where they are

    def set(self, rows: np.ndarray, slot: int, offset_ms: np.ndarray | int, kind: int, place: np.ndarray | None = None) -> None:
        self.offset[rows, slot] = np.clip(offset_ms, 0, DAY_MS - 1)
        self.kind[rows, slot] = kind
        if place is not None:
            self.place[rows, slot] = place

    def reset(self, rows: np.ndarray) -> None:
        self.offset[rows] = INF_OFFSET
        self.offset[rows, 0] = 0
        self.kind[rows] = KEEP
        self.place[rows] = np.nan

    def rows(self, carriers: np.ndarray) -> Plans:
        """The given carriers' plans (sorted indexes): one shard's share of the day."""
        part = Plans.__new__(Plans)
        part.day_start = self.day_start
        part.offset, part.kind, part.place = self.offset[carriers], self.kind[carriers], self.place[carriers]
        return part

    def finish(self) -> Plans:
        """Sort each carrier's segments by time (unused slots last)."""
        order = np.argsort(self.offset, axis=1, kind="stable")
        self.offset = np.take_along_axis(self.offset, order, axis=1)
        self.kind = np.take_along_axis(self.kind, order, axis=1)
        self.place = np.take_along_axis(self.place, order[:, :, None], axis=1)
        return self


class Planner(Protocol):
    def start(self, now_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kind, place, next change) of every carrier at the start."""
        ...

    def due(self, carriers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The segment the carriers enter now: (kind, place, their next change)."""
        ...

    def roll(self, day_start_ms: int) -> np.ndarray | None:
        """A new day began: every carrier's next change, or None if days mean nothing here."""
        ...


class DayPlanner:
    """Plans one day at a time with `build(day_start_ms) -> Plans` (a scenario's day)."""

    def __init__(self, build, n: int) -> None:
        self.build = build
        self.n = n
        self.plans: Plans | None = None
        self.ptr = np.zeros(n, dtype=np.int64)

    def _next(self, carriers: np.ndarray) -> np.ndarray:
        plans = self.plans
        assert plans is not None
        k = plans.offset.shape[1]
        ptr = self.ptr[carriers]
        inside = ptr < k
        offset = np.full(len(carriers), INF_OFFSET, dtype=np.int64)
        offset[inside] = plans.offset[carriers[inside], ptr[inside]]
        return np.where(offset == INF_OFFSET, INF, plans.day_start + offset)

    def start(self, now_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        day_start = now_ms // DAY_MS * DAY_MS
        self.plans = self.build(day_start)
        everyone = np.arange(self.n)
        # Carriers start in the segment they would be in at `now`, already there.
        started = self.plans.offset.astype(np.int64) + day_start <= now_ms
        self.ptr = started.sum(axis=1)
        current = np.maximum(self.ptr - 1, 0)
        kind = self.plans.kind[everyone, current]
        place = self.plans.place[everyone, current].astype(np.float64)
        return kind, place, self._next(everyone)

    def due(self, carriers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plans = self.plans
        assert plans is not None
        ptr = self.ptr[carriers]
        kind = plans.kind[carriers, ptr]
        place = plans.place[carriers, ptr].astype(np.float64)
        self.ptr[carriers] = ptr + 1
        return kind, place, self._next(carriers)

    def roll(self, day_start_ms: int) -> np.ndarray:
        self.plans = self.build(day_start_ms)
        self.ptr[:] = 0
        return self._next(np.arange(self.n))


class WalkPlanner:
    """Constant-rate moves to a random point in a neighbouring cell's territory (steady state)."""

    def __init__(self, city: City, population: Population, rng: np.random.Generator,
                 moves_per_hour: float = 1.5, neighbour_m: float = 750.0) -> None:
        self.city, self.rng = city, rng
        # Carriers without the operator's devices draw from a stream of their own, so that the
        # others' moves do not depend on whether they are simulated at all (Simulation, truth).
        self.quiet = population.visible_per_carrier == 0
        self.quiet_rng = np.random.default_rng(rng.integers(0, 2**63))
        self.rate_per_ms = moves_per_hour / 3_600_000
        self.static = population.kind == METER
        self.mobility: Mobility | None = None
        d = np.hypot(city.xy[:, None, 0] - city.xy[None, :, 0], city.xy[:, None, 1] - city.xy[None, :, 1])
        near = (d <= neighbour_m) & (d > 0)
        width = max(1, int(near.sum(axis=1).max()))
        self.neighbours = np.empty((city.n_cells, width), dtype=np.int64)
        for c in range(city.n_cells):
            options = np.flatnonzero(near[c]) if near[c].any() else np.array([c])
            self.neighbours[c] = np.resize(options, width)
        self.home = population.home_xy

    def _waits(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.rate_per_ms <= 0:
            return np.full(n, INF // 2, dtype=np.int64)  # nobody moves (never reached)
        return np.maximum(1, rng.exponential(1 / self.rate_per_ms, size=n)).astype(np.int64)

    def start(self, now_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.home)
        nxt = np.empty(n, dtype=np.int64)
        nxt[~self.quiet] = now_ms + self._waits(int((~self.quiet).sum()), self.rng)
        nxt[self.quiet] = now_ms + self._waits(int(self.quiet.sum()), self.quiet_rng)
        nxt[self.static] = INF
        return np.full(n, HOME, dtype=np.int8), self.home.copy(), nxt

    def due(self, carriers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        quiet = self.quiet[carriers]
        if not quiet.any():  # (always without a truth: quiet carriers are not simulated then)
            return self._due(carriers, self.rng)
        kind = np.full(len(carriers), OUT, dtype=np.int8)
        place = np.empty((len(carriers), 2))
        nxt = np.empty(len(carriers), dtype=np.int64)
        for rows, rng in ((~quiet, self.rng), (quiet, self.quiet_rng)):
            _, place[rows], nxt[rows] = self._due(carriers[rows], rng)
        return kind, place, nxt

    def _due(self, carriers: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.mobility is not None
        here = self.mobility.cells(carriers)
        choice = rng.integers(0, self.neighbours.shape[1], size=len(carriers))
        target = self.neighbours[np.maximum(here, 0), choice]
        half = 0.4 * self.city.spacing_m
        place = self.city.xy[target] + rng.uniform(-half, half, size=(len(carriers), 2))
        return np.full(len(carriers), OUT, dtype=np.int8), place, self.mobility.next_change[carriers] + self._waits(len(carriers), rng)

    def roll(self, day_start_ms: int) -> None:
        return None


@dataclass
class Moves:
    """What changed for carriers during one step."""

    moved: np.ndarray  # present carriers whose position changed (travelling, arrived, appeared)
    appeared: np.ndarray  # carriers that entered the city (subset of moved)
    vanished: np.ndarray  # carriers that left it
    departed: np.ndarray  # carriers that started a trip
    arrived: np.ndarray  # carriers that finished one


class Mobility:
    """Positions, trips and presence of every carrier; per-cell presence counts for the truth.

    `lazy`: no truth to keep, so no per-cell counts and no presence (`presence_by_area`). A
    Simulation without a truth gives its Mobility only the carriers that hold some of the
    operator's devices (see Simulation): the others are heard by nobody.
    """

    def __init__(self, city: City, population: Population, planner: Planner, start_ms: int, lazy: bool = False) -> None:
        self.city = city
        self.pop = population
        self.planner = planner
        n = population.n_carriers
        kind, place, self.next_change = planner.start(start_ms)
        self.day_start = start_ms // DAY_MS * DAY_MS
        self.place_kind = kind.astype(np.int8)
        default = np.where(population.kind == VISITOR, OUTSIDE,
                           np.where(population.kind == IN_COMMUTER, OUTSIDE, HOME)).astype(np.int8)
        keep = self.place_kind == KEEP
        self.place_kind[keep] = default[keep]
        place = np.where(np.isnan(place), population.home_xy, place)
        self.present = self.place_kind != OUTSIDE
        self.pos = np.where(self.present[:, None], place, np.nan)
        self.pos[self.present & np.isnan(self.pos[:, 0])] = city.centroid  # (cannot happen for sane plans)
        self.travelling = np.zeros(n, dtype=bool)
        self.trip_from = np.zeros((n, 2))
        self.trip_to = np.zeros((n, 2))
        self.trip_dep = np.zeros(n, dtype=np.int64)
        self.trip_arr = np.zeros(n, dtype=np.int64)
        outsider = (population.kind == IN_COMMUTER) | (population.kind == VISITOR)
        self.drives = (population.kind == CAR) | (outsider & ~population.train)
        # The raster pixel of every present carrier's position (-1 when absent). The carrier's
        # cell is its pixel's territory (`cells`), and the radio's coverage lookups of the
        # carriers that moved reuse it. (int32, as in City's raster: every traveller's pixel is
        # rewritten each step, and the cell is not stored apart: one array less to write.)
        self.px = np.full(n, -1, dtype=np.int32)
        self.px[self.present] = city.pixel(self.pos[self.present])
        # Per-cell presence, kept incrementally: people, operator devices, devices of all operators.
        self.weight_columns = [
            population.is_person.astype(np.int64), population.visible_per_carrier, population.n_devices.astype(np.int64)
        ]
        self.cell_counts = np.zeros((city.n_cells, 3), dtype=np.int64)
        self._count(np.flatnonzero(self.present), +1)
        self.lazy = lazy
        self.now_ms = start_ms  # positions are as of this time (the last step's end)
        if isinstance(planner, WalkPlanner):
            planner.mobility = self

    def cells(self, carriers: np.ndarray) -> np.ndarray:
        """The cell each carrier is in (the territory of its pixel), -1 when not in the city."""
        px = self.px[carriers]
        return np.where(px >= 0, self.city.nearest_px.reshape(-1)[px], -1)

    def _count(self, carriers: np.ndarray, sign: int, cells: np.ndarray | None = None) -> None:
        """Add (sign +1) or remove (-1) the carriers from the per-cell counts of their cells
        (`cells`, if not where they are now)."""
        if len(carriers):
            if cells is None:
                cells = self.cells(carriers)
            for j in range(3):
                counts = np.bincount(cells, weights=self.weight_columns[j][carriers], minlength=self.city.n_cells)
                self.cell_counts[:, j] += sign * counts.astype(np.int64)

    def _recount(self) -> None:
        """Per-cell counts from scratch."""
        self.cell_counts[:] = 0
        self._count(np.flatnonzero(self.present), +1)

    def _relocate(self, carriers: np.ndarray, pos: np.ndarray | None = None) -> None:
        """Recompute where the carriers are (after their positions or presence changed).
        `pos`: their positions, if the caller has them and all of them are present."""
        if not len(carriers):
            return
        if pos is None:
            here = self.present[carriers]
            px = np.full(len(carriers), -1, dtype=np.int64)
            px[here] = self.city.pixel(_rows(self.pos, carriers[here]))
        else:
            px = self.city.pixel(pos)
        if self.lazy:  # the counts are only needed for the truth
            self.px[carriers] = px
            return
        old = self.cells(carriers)
        self.px[carriers] = px
        loc = np.where(px >= 0, self.city.nearest_px.reshape(-1)[px], -1)
        # Only carriers that changed cell (or came or went) change the per-cell counts: most
        # travellers are still in the cell they were in a step ago.
        changed = np.flatnonzero(loc != old)
        if len(changed):
            moved, was, now = carriers[changed], old[changed], loc[changed]
            self._count(moved[was >= 0], -1, was[was >= 0])
            self._count(moved[now >= 0], +1, now[now >= 0])

    def advance(self, t0: int, t1: int) -> Moves:
        """Run plans and trips through [t0, t1); positions are as of t1."""
        departed: list[np.ndarray] = []
        appeared: list[np.ndarray] = []
        vanished: list[np.ndarray] = []
        day_end = self.day_start + DAY_MS
        for limit in (min(t1, day_end), t1):
            if limit == t1 and t1 > day_end:
                self.day_start = day_end
                rolled = self.planner.roll(day_end)
                if rolled is not None:
                    self.next_change = rolled
            due = np.flatnonzero(self.next_change < limit)
            for _ in range(16):  # a carrier may pass through several segments in one step
                if not len(due):
                    break
                when = self.next_change[due]
                kind, place, nxt = self.planner.due(due)
                self.next_change[due] = nxt
                d, a, v = self._enter(due, when, kind, place)
                departed.append(d)
                appeared.append(a)
                vanished.append(v)
                # Only the carriers that just changed segment got a new deadline: only they can
                # be due again in this phase (filtering keeps index order).
                due = due[self.next_change[due] < limit]
            if t1 <= day_end:
                break
        departed_all = _cat(departed)
        appeared_all = _cat(appeared)
        vanished_all = _cat(vanished)
        travelling = np.flatnonzero(self.travelling)
        arrived, pos = self._follow(travelling, t1)
        self.travelling[arrived] = False
        self.now_ms = t1
        # Who moved: the travellers and the few that set off, came or went (sorted, distinct),
        # merged without a pass over every carrier. The travellers (all present) are relocated
        # from the positions just computed, the others from their stored positions (one that
        # is also a traveller is relocated twice: the second time changes nothing).
        others = _distinct(np.concatenate([departed_all, appeared_all, vanished_all]))
        self._relocate(travelling, pos)
        self._relocate(others)
        moved = _merge(travelling, others)
        moved = moved[self.present[moved]]
        return Moves(moved, _distinct(appeared_all), _distinct(vanished_all), _distinct(departed_all), arrived)

    def _follow(self, carriers: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Put travelling carriers where their trips have them at t; return those that arrived,
        and the carriers' new positions."""
        if not len(carriers):
            return carriers, np.zeros((0, 2))
        dep = self.trip_dep[carriers]
        span = np.maximum(self.trip_arr[carriers] - dep, 1)
        frac = np.clip((t - dep) / span, 0.0, 1.0)[:, None]
        start = _rows(self.trip_from, carriers)
        pos = start + frac * (_rows(self.trip_to, carriers) - start)
        _set_rows(self.pos, carriers, pos)
        return carriers[frac[:, 0] >= 1.0], pos

    def _enter(self, carriers: np.ndarray, when: np.ndarray, kind: np.ndarray, place: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Carriers enter new segments at `when`: leave, appear, or set off towards the place."""
        keep = kind == KEEP
        if keep.any():  # (never, with the steady scenario's planner: no copies then)
            carriers, when, kind, place = carriers[~keep], when[~keep], kind[~keep], place[~keep]
        if not len(carriers):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        self.place_kind[carriers] = kind
        leaving = kind == OUTSIDE
        gone = carriers[leaving & self.present[carriers]]
        self.present[gone] = False
        self.travelling[gone] = False
        self.pos[gone] = np.nan
        coming = ~leaving & ~self.present[carriers]
        arrivals = carriers[coming]
        self.present[arrivals] = True
        self.pos[arrivals] = place[coming]
        self.travelling[arrivals] = False
        moving = ~leaving & ~coming
        if moving.all():  # (always, with the steady scenario's planner: no copies then)
            movers, dest, dep = carriers, place, when
        else:
            movers, dest, dep = carriers[moving], place[moving], when[moving]
        if len(movers):
            # A trip starts from where the carrier is now (its position as of the last step).
            start = _rows(self.pos, movers)
            distance = np.hypot(*(dest - start).T)
            _set_rows(self.trip_from, movers, start)
            _set_rows(self.trip_to, movers, dest)
            self.trip_dep[movers] = dep
            self.trip_arr[movers] = dep + travel_ms(distance, self.drives[movers])
            self.travelling[movers] = True
        return movers, arrivals, gone

    def presence_by_area(self) -> np.ndarray:
        """(areas, 3): people, operator devices and devices of all operators truly present."""
        if self.lazy:
            raise RuntimeError("a Mobility without a truth keeps no per-cell counts: it knows no presence")
        return self.city.membership.T.astype(np.int64) @ self.cell_counts


def _rows(xy: np.ndarray, index: np.ndarray) -> np.ndarray:
    """xy[index] for an (n, 2) float64 array, gathered through its complex128 view: a 1-D
    gather of 16-byte items is ~3x faster than numpy's row gather. Same values, bit for bit."""
    return xy.view(np.complex128).reshape(-1)[index].view(np.float64).reshape(-1, 2)


def _set_rows(xy: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """xy[index] = values (rows of an (n, 2) float64 array), through the complex128 views."""
    xy.view(np.complex128).reshape(-1)[index] = np.ascontiguousarray(values, dtype=np.float64).view(np.complex128).reshape(-1)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) by sorting: numpy 2's hash-based unique is several times slower on
    tens of thousands of distinct integers."""
    if len(values) < 2:
        return values
    v = np.sort(values)
    return v[np.concatenate([[True], v[1:] != v[:-1]])]


def _merge(ordered: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """The sorted union of a sorted, distinct array and a few sorted, distinct values."""
    if not len(extra):
        return ordered
    at = np.searchsorted(ordered, extra)
    known = at < len(ordered)
    known[known] = ordered[at[known]] == extra[known]
    return np.insert(ordered, at[~known], extra[~known])
