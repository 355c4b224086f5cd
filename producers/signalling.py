"""What the network hears from each of the operator's devices: the LTE/5G signalling that
decides what a HyperLogLog window can see.

- An idle phone is silent except for its periodic tracking-area update (TAU) when T3412 runs
  out (54 minutes by default, random phase), a paging response, or the start of a data
  session. Leaving connected mode restarts T3412; so does any TAU.
- Moving between cells of the same tracking area is silent while idle; entering another
  tracking area costs a TAU; in a data session every change of serving cell is a handover.
- Coverage overlaps: where the two nearest cells are nearly as close (the distance ratio below
  `edge_ratio`), a phone's own shadowing decides which serves it, a connected phone ping-pongs
  between them (handovers), and an idle one reselects now and then, which costs a TAU only
  when the two cells are in different tracking areas.
- Power: attach at power-on, detach at power-off (people who switch off at night). A device
  entering the city from outside (a train, a road) registers with a TAU at its first cell.
- M2M: meters report on a fixed period and otherwise sleep on a long T3412 (power saving);
  a car's telematics unit connects for each trip (handovers along the road) and is idle parked.

Data sessions and pagings are Poisson processes whose rate follows the scenario's activity
(diurnal pattern, venue phases), sampled by thinning: candidates at the peak rate, accepted in
proportion to the activity at that moment. Every timer is a per-device deadline, and each step
touches only the devices whose earliest deadline falls in it, so the cost follows the events.
Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streams.core.errors import ConfigError
from streams.core.wire import EVENT_TYPES

from .city import City
from .mobility import INF, Mobility, Moves
from .population import CAR, METER, Population

ATTACH, DETACH, HANDOVER, TAU, PAGING, DATA = (EVENT_TYPES[k] for k in ("attach", "detach", "handover", "tau", "paging", "data"))
DAY_MS = 86_400_000
#: Columns of Radio.timers; STOPPED are the ones that stop when a device leaves or powers off.
TIMERS = ("power", "session_end", "tau", "data", "page", "pp", "report")
STOPPED = slice(1, 6)
COLUMN = {name: j for j, name in enumerate(TIMERS)}


@dataclass(frozen=True)
class Signalling:
    """Signalling parameters; rates per device and hour of an ordinary daytime hour."""

    #: Periodic TAU timer of phones and cars (3GPP default 54 minutes).
    t3412_s: float = 3240.0
    #: Networks differ: above 0, each phone's T3412 is drawn once, uniform between `t3412_s` and
    #: this (robustness variants, e.g. 30 to 120 minutes; 0: every phone on `t3412_s`).
    t3412_max_s: float = 0.0
    #: Data sessions started from idle (background apps, messaging, browsing).
    data_sessions_per_hour: float = 3.0
    session_mean_s: float = 90.0
    #: Mobile-terminated pagings (calls, messages) of an idle phone; each opens a short session.
    pagings_per_hour: float = 0.4
    paging_session_s: float = 60.0
    #: Chatty and quiet phones: above 0, each phone's data and paging rates are multiplied by a
    #: lognormal factor of this log-sd and mean 1 (0: every phone alike).
    activity_spread: float = 0.0
    #: Activity of people on the move, relative to standing still.
    travelling_activity: float = 1.4
    #: Coverage edges: distance ratio (second nearest / nearest cell) below which two cells
    #: overlap; shadowing spread (log-distance) that decides who is served by the second one.
    edge_ratio: float = 1.12
    shadow_sigma: float = 0.08
    #: Handovers per hour of a connected phone at an edge (ping-pong), and idle reselections.
    ping_pong_per_hour: float = 40.0
    idle_reselections_per_hour: float = 2.0
    #: M2M: meters report every `meter_report_s` (random phase) and sleep on a long T3412.
    meter_report_s: float = 1800.0
    meter_t3412_s: float = 12 * 3600.0
    #: Parked cars: remote pings per hour (a trip always opens a session).
    car_pings_per_hour: float = 0.2
    #: Bedtime and wake-up of people who switch their phones off at night (UTC hours, sd minutes).
    bedtime_h: float = 23.5
    wake_h: float = 7.0
    power_sd_min: float = 45.0

    def __post_init__(self) -> None:
        for name in ("t3412_s", "session_mean_s", "paging_session_s", "meter_report_s", "meter_t3412_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.t3412_max_s and self.t3412_max_s < self.t3412_s:
            raise ConfigError("t3412_max_s must be 0 or at least t3412_s")
        for name in ("data_sessions_per_hour", "pagings_per_hour", "ping_pong_per_hour", "activity_spread",
                     "idle_reselections_per_hour", "car_pings_per_hour", "shadow_sigma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.edge_ratio < 1.0:
            raise ConfigError("edge_ratio must be >= 1")


class EventLog:
    """Events of one step, as parallel arrays (device index, time, cell index, type)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []

    def add(self, devices: np.ndarray, ts: np.ndarray, cells: np.ndarray, kind: int) -> None:
        if len(devices):
            self.parts.append((devices, np.asarray(ts, dtype=np.int64), cells, kind))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z, np.zeros(0, dtype=np.uint8)
        device = np.concatenate([p[0] for p in self.parts]).astype(np.int64)
        ts = np.concatenate([p[1] for p in self.parts])
        cell = np.concatenate([p[2] for p in self.parts]).astype(np.int64)
        kind = np.concatenate([np.full(len(p[0]), p[3], dtype=np.uint8) for p in self.parts])
        order = time_order(ts)
        return device[order], ts[order], cell[order], kind[order]


def time_order(ts: np.ndarray) -> np.ndarray:
    """The stable sort order of event times. A step's events lie within 65.5 s of each other as
    a rule: as uint16 offsets numpy radix-sorts them (the same order, several times faster)."""
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    offset = ts - ts.min()
    return np.argsort(offset.astype(np.uint16) if offset.max() < 1 << 16 else ts, kind="stable")


class Radio:
    """Per-device radio state and timers; `step` turns a time slice and the moves into events.

    `carrier_rows` (count, row of each carrier): when `pop` was cut from a larger population
    (Simulation leaves out carriers without devices), the per-carrier draws are made for all of
    that population's `count` carriers and each carrier reads its own `row`, so that leaving the
    others out changes no one's draws."""

    def __init__(self, city: City, pop: Population, mobility: Mobility, params: Signalling,
                 activity: Callable[[np.ndarray, np.ndarray], np.ndarray], activity_max: float,
                 start_ms: int, rng: np.random.Generator,
                 carrier_rows: tuple[int, np.ndarray] | None = None) -> None:
        self.city, self.pop, self.mob, self.p, self.rng = city, pop, mobility, params, rng
        self.activity, self.activity_max = activity, max(activity_max, 1e-9)
        n = pop.n_visible
        carrier = pop.carrier
        kind = pop.kind[carrier]
        self.meter = kind == METER
        self.car = kind == CAR
        self.t3412 = np.where(self.meter, int(params.meter_t3412_s * 1000), int(params.t3412_s * 1000)).astype(np.int64)
        # The variants draw only when asked, so the default model's random streams stay as they were.
        if params.t3412_max_s > 0:
            own = rng.uniform(params.t3412_s, params.t3412_max_s, n) * 1000
            self.t3412 = np.where(self.meter, self.t3412, own.astype(np.int64))
        chattiness = np.ones(n)
        if params.activity_spread > 0:
            sd = params.activity_spread
            chattiness = rng.lognormal(-sd * sd / 2, sd, n)
        # Peak candidate rates (per ms) for thinning; meters have none, parked cars few.
        peak = self.activity_max * max(1.0, params.travelling_activity)
        data = np.where(self.car, params.car_pings_per_hour, params.data_sessions_per_hour * peak * chattiness)
        self.data_rate = np.where(self.meter, 0.0, data) / 3_600_000
        self.page_rate = np.where(self.meter | self.car, 0.0, params.pagings_per_hour * peak * chattiness) / 3_600_000
        self.shadow = rng.normal(0.0, params.shadow_sigma, n) if params.shadow_sigma > 0 else np.zeros(n)
        # Cell indexes fit in int32 (as in the coverage raster): half the memory traffic of int64.
        self.serving = np.full(n, -1, dtype=np.int32)
        self.alt = np.full(n, -1, dtype=np.int32)
        # log(distance ratio) per raster pixel, as _cover compares it with the shadowing (float32,
        # the log of each pixel's float32 ratio: the same values as taking it per device).
        self.log_ratio_px = np.log(city.ratio_px.reshape(-1))
        self.edge = np.zeros(n, dtype=bool)
        present = mobility.present[carrier]
        self._cover(np.flatnonzero(present))
        # Power: some people switch off at night.
        night = pop.night_off[carrier]
        self.bed = np.full(n, -1, dtype=np.int64)
        self.wake = np.full(n, -1, dtype=np.int64)
        rows, row = carrier_rows if carrier_rows is not None else (pop.n_carriers, np.arange(pop.n_carriers))
        per_person_bed = rng.normal(params.bedtime_h * 3_600_000, params.power_sd_min * 60_000, rows)
        per_person_wake = rng.normal(params.wake_h * 3_600_000, params.power_sd_min * 60_000, rows)
        self.bed[night] = (per_person_bed[row[carrier[night]]] % DAY_MS).astype(np.int64)
        self.wake[night] = (per_person_wake[row[carrier[night]]] % DAY_MS).astype(np.int64)
        self.on = ~night | ~_between(start_ms % DAY_MS, self.bed, self.wake)
        # Timers (absolute ms; INF = not running), one row per device: a device's earliest
        # deadline is then one row read and a min (`_earliest`) instead of seven gathers. The
        # named timers are column views of the table: writes through them land in it.
        self.timers = np.full((n, len(TIMERS)), INF, dtype=np.int64)
        self.next_power, self.session_end, self.next_tau, self.next_data, self.next_page, self.next_pp, \
            self.next_report = (self.timers[:, j] for j in range(len(TIMERS)))
        self.next_power[night] = _next_time_of_day(start_ms, np.where(self.on[night], self.bed[night], self.wake[night]))
        live = np.flatnonzero(present & self.on)
        # Random phases: the population has been running for a while at the start.
        self.next_tau[live] = start_ms + (rng.random(len(live)) * self.t3412[live]).astype(np.int64)
        self._start_timers(live, start_ms)
        period = int(params.meter_report_s * 1000)
        meters = np.flatnonzero(self.meter)
        self.next_report[meters] = start_ms + rng.integers(0, period, len(meters))
        self.next_due = self._earliest(np.arange(n))

    # --- helpers -------------------------------------------------------------------------------
    def _earliest(self, d: np.ndarray) -> np.ndarray:
        # One row gather, then a column-wise minimum (numpy's min over a short last axis is slow).
        rows = np.take(self.timers, d, axis=0)
        out = np.minimum(rows[:, 0], rows[:, 1])
        for j in range(2, rows.shape[1]):
            np.minimum(out, rows[:, j], out=out)
        return out

    def _after(self, t: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """t + an exponential wait (ms, >= 1) at `rate` per ms; INF where the rate is 0.

        One draw per device whatever its rate (the random stream must not depend on the
        rates), but the arithmetic only where the rate is positive: most devices that move are
        at no coverage edge, and meters have no data rate."""
        draw = self.rng.exponential(1.0, len(rate))
        out = np.full(len(rate), INF, dtype=np.int64)
        live = np.flatnonzero(rate > 0)
        if len(live) == len(rate):  # (every rate positive, as for data sessions: no indexing)
            return t + np.maximum(1, np.minimum(draw / rate, 1e15)).astype(np.int64)
        if len(live):
            wait = np.maximum(1, np.minimum(draw[live] / rate[live], 1e15))
            out[live] = (t[live] if np.ndim(t) else t) + wait.astype(np.int64)
        return out

    def _start_timers(self, d: np.ndarray, t: np.ndarray | int) -> None:
        t = np.broadcast_to(np.asarray(t, dtype=np.int64), d.shape)
        self.next_data[d] = self._after(t, self.data_rate[d])
        self.next_page[d] = self._after(t, self.page_rate[d])
        self._schedule_pp(d, t)

    def _schedule_pp(self, d: np.ndarray, t: np.ndarray) -> None:
        edge = self.edge[d]
        pp = self._pp_after(d, t, edge)
        # Written only at a coverage edge: elsewhere the timer was not running and still is not
        # (_pp_after; _mobility writes the timers of movers that just left an edge itself).
        at_edge = np.flatnonzero(edge)
        self.next_pp[d[at_edge]] = pp[at_edge]

    def _pp_after(self, d: np.ndarray, t: np.ndarray, edge: np.ndarray) -> np.ndarray:
        """New ping-pong deadlines of devices `d` from `t` (`edge`: whether each is at a coverage
        edge). Only devices at an edge ping-pong: the rates of the others are 0 (no timer, INF).
        So a device at no edge never has a ping-pong timer running."""
        # (`edge` is only ever set by _cover, together with an `alt` cell: no need to test alt >= 0.)
        at_edge = np.flatnonzero(edge)
        rate = np.zeros(len(d))
        if len(at_edge):
            e = d[at_edge]
            ta = self.city.tracking_area
            connected = self.session_end[e] != INF
            other_ta = ta[np.maximum(self.alt[e], 0)] != ta[np.maximum(self.serving[e], 0)]
            rate[at_edge] = np.where(connected, self.p.ping_pong_per_hour,
                                     np.where(other_ta, self.p.idle_reselections_per_hour, 0.0)) / 3_600_000
        return self._after(t, rate)

    def _cover(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Re-evaluate the serving cell of devices whose carrier moved; returns their old and
        new serving cells and whether each is now at a coverage edge."""
        old = self.serving[d]  # (a copy: fancy indexing)
        # The raster pixels of the carriers' positions, as Mobility computed them when it last
        # placed them (every carrier handed to us here was placed this step or at the start).
        px = self.mob.px[self.pop.carrier[d]]
        first, second = self.city.nearest_px.reshape(-1)[px], self.city.second_px.reshape(-1)[px]
        use_second = self.log_ratio_px[px] < self.shadow[d]
        serving = np.where(use_second, second, first)
        self.serving[d] = serving
        self.alt[d] = np.where(use_second, first, second)
        edge = (self.city.ratio_px.reshape(-1)[px] < self.p.edge_ratio) & (first != second)
        self.edge[d] = edge
        return old, serving, edge

    def _open_session(self, d: np.ndarray, t: np.ndarray, length: np.ndarray) -> None:
        end = self.session_end[d]
        self.session_end[d] = np.maximum(np.where(end == INF, 0, end), t + length)
        self.next_tau[d] = INF  # T3412 does not run in connected mode
        self._schedule_pp(d, t)

    def _context(self, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        carrier = self.pop.carrier[d]
        a = self.activity(t, self.mob.place_kind[carrier])
        return np.where(self.mob.travelling[carrier], a * self.p.travelling_activity, a)

    # --- one step ------------------------------------------------------------------------------
    def step(self, t0: int, t1: int, moves: Moves, log: EventLog) -> None:
        touched = self._mobility(t0, t1, moves, log)
        self.next_due[touched] = self._earliest(touched)
        due = np.flatnonzero(self.next_due < t1)
        for _ in range(32):  # a device may fire several timers in one step
            if not len(due):
                break
            self._fire(due, t0, t1, log)
            self.next_due[due] = self._earliest(due)
            # _fire only changes the timers of `due`, so only they can be due again this step
            # (no new scan of every device); filtering keeps them in index order.
            due = due[self.next_due[due] < t1]

    def _mobility(self, t0: int, t1: int, moves: Moves, log: EventLog) -> np.ndarray:
        pop = self.pop
        # Leaving the city: no event here (it re-registers elsewhere); everything stops.
        gone = pop.devices_of(moves.vanished)
        self.timers[gone, STOPPED] = INF
        self.serving[gone] = -1
        moved = pop.devices_of(moves.moved)
        if not len(moved):
            return gone
        # Only a device at a coverage edge can have a ping-pong timer running (_pp_after): of
        # the movers, only those that were at one need their timers read (the rest are INF).
        was_edge = self.edge[moved]
        pp_before = np.full(len(moved), INF, dtype=np.int64)
        at = np.flatnonzero(was_edge)
        pp_before[at] = self.next_pp[moved[at]]
        when = t0 + self.rng.integers(0, max(1, t1 - t0), len(moved))
        # The movers that came into the city: their (few) devices found among the movers' by
        # binary search (both are sorted), not by testing every mover's carrier.
        came = np.zeros(len(moved), dtype=bool)
        if len(moves.appeared):
            arrivals = pop.devices_of(moves.appeared)
            at = np.minimum(np.searchsorted(moved, arrivals), len(moved) - 1)
            came[at[moved[at] == arrivals]] = True
        old, serving, edge = self._cover(moved)
        # Only devices that changed serving cell or came into the city can make a sound: the
        # rest of this is done for them alone (most movers are still served by the same cell).
        news = np.flatnonzero((old != serving) | came)
        m, w, came, old, serving = moved[news], when[news], came[news], old[news], serving[news]
        changed = ~came
        on = self.on[m]
        connected = self.session_end[m] != INF
        ho = changed & on & connected
        log.add(m[ho], w[ho], serving[ho], HANDOVER)
        ta = self.city.tracking_area
        new_ta = changed & on & ~connected & (ta[np.maximum(old, 0)] != ta[serving])
        arrive = came & on
        tau = m[new_ta | arrive]
        log.add(tau, w[new_ta | arrive], serving[new_ta | arrive], TAU)
        self.next_tau[tau] = w[new_ta | arrive] + self.t3412[tau]
        # Devices that just entered the city start their processes now.
        entered = m[arrive]
        self._start_timers(entered, w[arrive])
        # Cars connect for the whole trip (telematics).
        departed = pop.devices_of(moves.departed)
        cars = departed[self.car[departed] & self.on[departed]]
        if len(cars):
            carrier = pop.carrier[cars]
            t_dep = np.clip(self.mob.trip_dep[carrier], t0, t1 - 1)
            idle = self.session_end[cars] == INF
            log.add(cars[idle], t_dep[idle], self.serving[cars[idle]], DATA)
            self._open_session(cars, t_dep, np.maximum(self.mob.trip_arr[carrier] - t_dep, 1000))
        # Moving changes who is at a coverage edge: redraw the ping-pong timers of the movers
        # (one random draw each). Most are at no edge, had no timer running and still have none:
        # only those at an edge before or now get a new one written.
        pp = self._pp_after(moved, when, edge)
        either = np.flatnonzero(was_edge | edge)
        self.next_pp[moved[either]] = pp[either]
        # The devices whose timers changed (the caller recomputes their earliest deadline).
        redrawn = moved[either[pp[either] != pp_before[either]]]
        return np.concatenate([gone, tau, entered, cars, redrawn])

    def _fire(self, due: np.ndarray, t0: int, t1: int, log: EventLog) -> None:
        p = self.p
        rng = self.rng
        # The due devices' timer rows, read in one gather instead of one gather per timer. Each
        # section below changes timers of the devices that fired in it only, and no section
        # changes the power, session-end, data, paging or report timer of a device before that
        # timer's own section has read it, except the power section (a device switched off
        # stops its timers, one switched on starts them): its devices' rows are read again
        # after it. The TAU and ping-pong timers, which most sections change, are read afresh
        # when their sections come.
        rows = np.take(self.timers, due, axis=0)

        def pick(column: int, fresh: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            deadline = self.timers[:, column][due] if fresh else rows[:, column]
            fires = np.flatnonzero(deadline < t1)
            # A deadline left over from an earlier step fires at this step's start, never
            # earlier: events of a closed minute stay closed (the truth depends on it).
            return fires, due[fires], np.maximum(deadline[fires], t0)

        # Power off / on (people who switch off at night).
        fired, d, t = pick(COLUMN["power"])
        if len(d):
            turning_on = ~self.on[d]
            self.next_power[d] = t + _next_offset(t, np.where(turning_on, self.bed[d], self.wake[d]))
            self.on[d] = turning_on
            # Only a device inside the city is heard; one outside just changes state.
            here = self.serving[d] >= 0
            off = ~turning_on & here
            log.add(d[off], t[off], self.serving[d[off]], DETACH)
            self.timers[d[~turning_on], STOPPED] = INF
            on = turning_on & here
            log.add(d[on], t[on], self.serving[d[on]], ATTACH)
            self.next_tau[d[on]] = t[on] + self.t3412[d[on]]
            self._start_timers(d[on], t[on])
            rows[fired] = self.timers[d]
        # Sessions ending: back to idle, T3412 restarts.
        _, d, t = pick(COLUMN["session_end"])
        if len(d):
            self.session_end[d] = INF
            self.next_tau[d] = t + self.t3412[d]
            self._schedule_pp(d, t)
        # Data session candidates (thinning by the activity at that moment).
        _, d, t = pick(COLUMN["data"])
        if len(d):
            self.next_data[d] = self._after(t, self.data_rate[d])
            keep = self.car[d] | (rng.random(len(d)) * self.activity_max * max(1.0, p.travelling_activity) < self._context(d, t))
            d, t = d[keep], t[keep]
            idle = self.session_end[d] == INF
            log.add(d[idle], t[idle], self.serving[d[idle]], DATA)
            self._open_session(d, t, rng.exponential(p.session_mean_s * 1000, len(d)).astype(np.int64) + 1000)
        # Pagings: only an idle phone is paged; a connected one just receives.
        _, d, t = pick(COLUMN["page"])
        if len(d):
            self.next_page[d] = self._after(t, self.page_rate[d])
            keep = rng.random(len(d)) * self.activity_max * max(1.0, p.travelling_activity) < self._context(d, t)
            d, t = d[keep], t[keep]
            idle = self.session_end[d] == INF
            d, t = d[idle], t[idle]
            log.add(d, t, self.serving[d], PAGING)
            self._open_session(d, t, rng.exponential(p.paging_session_s * 1000, len(d)).astype(np.int64) + 1000)
        # Meter reports: a short session on a fixed period.
        _, d, t = pick(COLUMN["report"])
        if len(d):
            self.next_report[d] = t + int(p.meter_report_s * 1000)
            live = self.on[d] & (self.serving[d] >= 0)
            d, t = d[live], t[live]
            idle = self.session_end[d] == INF
            log.add(d[idle], t[idle], self.serving[d[idle]], DATA)
            self._open_session(d, t, np.full(len(d), 5000, dtype=np.int64))
        # Periodic TAU.
        _, d, t = pick(COLUMN["tau"], fresh=True)
        if len(d):
            log.add(d, t, self.serving[d], TAU)
            self.next_tau[d] = t + self.t3412[d]
        # Ping-pong at coverage edges.
        # (Only devices at a coverage edge have this timer running, see _pp_after: only theirs
        # are read.)
        at_edge = np.flatnonzero(self.edge[due])
        deadline = self.next_pp[due[at_edge]]
        fires = np.flatnonzero(deadline < t1)
        d, t = due[at_edge[fires]], np.maximum(deadline[fires], t0)
        if len(d):
            self.serving[d], self.alt[d] = self.alt[d].copy(), self.serving[d].copy()
            connected = self.session_end[d] != INF
            log.add(d[connected], t[connected], self.serving[d[connected]], HANDOVER)
            ta = self.city.tracking_area
            idle_ta = ~connected & (ta[self.serving[d]] != ta[self.alt[d]])
            log.add(d[idle_ta], t[idle_ta], self.serving[d[idle_ta]], TAU)
            self.next_tau[d[idle_ta]] = t[idle_ta] + self.t3412[d[idle_ta]]
            self._schedule_pp(d, t)


def _between(tod: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Is time of day `tod` inside [start, end) (intervals may wrap midnight)?"""
    return np.where(start <= end, (tod >= start) & (tod < end), (tod >= start) | (tod < end))


def _next_offset(t: np.ndarray, tod: np.ndarray) -> np.ndarray:
    """Milliseconds from t to the next occurrence of time of day `tod` (1 ms .. 1 day)."""
    wait = (tod - t % DAY_MS) % DAY_MS
    return np.where(wait == 0, DAY_MS, wait)


def _next_time_of_day(t: int, tod: np.ndarray) -> np.ndarray:
    return t + _next_offset(np.full(len(tod), t, dtype=np.int64), tod)
