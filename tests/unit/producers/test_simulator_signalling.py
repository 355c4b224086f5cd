"""Signalling rates stay within their configured bounds, and each mechanism (periodic TAU, data
sessions, pagings, handovers only when connected, ping-pong at coverage edges, power off at
night, meter reports, the diurnal pattern) does what the model says (docs/simulator.md)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from producers.scenarios import configure
from producers.simulator import Simulation
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.settings import DEFAULT_AREAS
from streams.core.wire import EVENT_TYPES

AREAS = load_areas(DEFAULT_AREAS)
START = parse_time("2026-01-05T06:00:00Z")
ATTACH, DETACH, HANDOVER, TAU, PAGING, DATA = (EVENT_TYPES[k] for k in ("attach", "detach", "handover", "tau", "paging", "data"))
QUIET = {"data_sessions_per_hour": 0.0, "pagings_per_hour": 0.0, "moves_per_hour": 0.0, "ping_pong_per_hour": 0.0,
         "idle_reselections_per_hour": 0.0, "travelling_activity": 1.0}


def simulate(minutes: float, devices: int = 2000, scenario: str = "steady", start: int = START, seed: int = 3, **overrides):
    sim = Simulation(AREAS, devices, seed=seed, start_ms=start, config=configure(scenario, overrides))
    events = np.concatenate(list(sim.run(start + int(minutes * 60_000))))
    return sim, events


def epoch_pseudonyms(sim: Simulation) -> np.ndarray:
    """Every device's pseudonym in the run's first key epoch (the runs checked by pseudonym lie
    inside one epoch: no 04:00 UTC rotation)."""
    return sim.pseudonyms.for_epoch(int(sim.rotation.epoch(sim.start_ms)))


def phones(sim: Simulation, events: np.ndarray) -> np.ndarray:
    return events[events["device_class"] == 0]


def test_idle_phones_report_exactly_once_per_t3412() -> None:
    sim, events = simulate(30, **QUIET, t3412_s=600.0, m2m_share=0.0)
    per_device = Counter(events["device"].view("<u8").tolist())
    assert set(np.unique(events["type"]).tolist()) == {TAU}
    assert len(per_device) == sim.population.n_visible
    assert set(per_device.values()) == {3}  # random phase in the first 10 minutes, then every 10


def test_data_session_rate_within_bounds() -> None:
    rate = 6.0
    overrides = dict(QUIET, data_sessions_per_hour=rate, session_mean_s=60.0, t3412_s=86_400.0)
    sim, events = simulate(60, **overrides)
    ev = phones(sim, events)
    n_phones = int((sim.population.device_class == 0).sum())
    observed = (ev["type"] == DATA).sum() / n_phones  # per phone and hour
    # A session that starts while one is open is no new event: expect rate x P(idle) ~ 0.91 rate.
    assert 0.86 * rate <= observed <= 0.96 * rate
    assert not (ev["type"] == PAGING).any() and not (ev["type"] == HANDOVER).any()


def test_paging_rate_within_bounds() -> None:
    rate = 4.0
    sim, events = simulate(60, **dict(QUIET, pagings_per_hour=rate, paging_session_s=30.0, t3412_s=86_400.0))
    ev = phones(sim, events)
    observed = (ev["type"] == PAGING).sum() / int((sim.population.device_class == 0).sum())
    assert 0.9 * rate <= observed <= 1.02 * rate
    assert not (ev["type"] == DATA).any()


def test_idle_phones_hand_over_never_but_update_on_a_new_tracking_area() -> None:
    sim, events = simulate(60, **dict(QUIET, moves_per_hour=3.0, t3412_s=86_400.0))
    ev = phones(sim, events)
    assert not (ev["type"] == HANDOVER).any()  # never connected
    assert (ev["type"] == TAU).sum() > 0.5 * int((sim.population.device_class == 0).sum())  # moves across TAs
    connected_sim, connected = simulate(60, **dict(QUIET, moves_per_hour=3.0, data_sessions_per_hour=20.0,
                                                   session_mean_s=600.0))
    assert (phones(connected_sim, connected)["type"] == HANDOVER).sum() > 100


def test_ping_pong_happens_only_at_coverage_edges_while_connected() -> None:
    long_sessions = dict(QUIET, data_sessions_per_hour=4.0, session_mean_s=900.0)
    sim, events = simulate(60, **long_sessions)
    assert not (phones(sim, events)["type"] == HANDOVER).any()  # nobody moves, no ping-pong
    sim, events = simulate(60, **dict(long_sessions, ping_pong_per_hour=60.0))
    handovers = phones(sim, events)
    handovers = handovers[handovers["type"] == HANDOVER]
    assert len(handovers) > 50
    # Each handing-over phone alternates between two cells, and only phones at an edge do it.
    cells = defaultdict(set)
    for device, cell in zip(handovers["device"].view("<u8").tolist(), handovers["cell"].tolist()):
        cells[device].add(cell)
    assert max(len(c) for c in cells.values()) == 2
    edge_share = sim.radio.edge[sim.population.device_class == 0].mean()
    assert len(cells) < 1.5 * edge_share * int((sim.population.device_class == 0).sum())


def test_phones_switched_off_at_night_detach_and_attach_and_are_silent_between() -> None:
    start = parse_time("2026-11-03T00:00:00Z")
    overrides = {"night_off_share": 0.3, "bedtime_h": 1.0, "wake_h": 3.0, "power_sd_min": 10.0}
    sim, events = simulate(240, 3000, "high-street", start, **overrides)
    ev = phones(sim, events)
    night_phones = int(sim.population.night_off[sim.population.carrier].sum())
    detach = ev[ev["type"] == DETACH]
    attach = ev[ev["type"] == ATTACH]
    assert 0.8 * night_phones <= len(detach) <= night_phones
    assert len(np.unique(detach["device"].view("<u8"))) == len(detach)
    assert set(attach["device"].view("<u8").tolist()) <= set(detach["device"].view("<u8").tolist())
    off_at = dict(zip(detach["device"].view("<u8").tolist(), detach["ts"].tolist()))
    on_at = dict(zip(attach["device"].view("<u8").tolist(), attach["ts"].tolist()))
    for device, ts in zip(ev["device"].view("<u8").tolist(), ev["ts"].tolist()):
        if device in off_at and device in on_at:
            assert not off_at[device] < ts < on_at[device], "a switched-off phone spoke"


def test_meters_report_on_their_period() -> None:
    sim, events = simulate(120, 4000, **dict(QUIET, meter_report_s=600.0))
    meters = np.flatnonzero(sim.population.kind[sim.population.carrier] == 5)
    pseudonyms = set(epoch_pseudonyms(sim)[meters].view("<u8").tolist())
    reports = events[(events["type"] == DATA) & np.isin(events["device"].view("<u8"), list(pseudonyms))]
    per_meter = Counter(reports["device"].view("<u8").tolist())
    assert len(per_meter) == len(meters) and set(per_meter.values()) == {12}
    assert (events[np.isin(events["device"].view("<u8"), list(pseudonyms))]["device_class"] == 1).all()


def test_cars_connect_for_their_trips_and_hand_over_along_the_road() -> None:
    start = parse_time("2026-11-03T07:00:00Z")  # a Tuesday: cars leave around 08:00
    sim, events = simulate(120, 4000, "high-street", start, car_pings_per_hour=0.0)
    cars = epoch_pseudonyms(sim)[sim.population.kind[sim.population.carrier] == 4].view("<u8")
    ev = events[np.isin(events["device"].view("<u8"), cars)]
    assert (ev["device_class"] == 1).all()
    assert (ev["type"] == DATA).sum() >= 0.5 * len(cars)  # no pings: every data event is a trip
    assert (ev["type"] == HANDOVER).sum() > len(cars)


def test_diurnal_pattern_quiet_nights_busy_evenings() -> None:
    night = parse_time("2026-11-03T03:00:00Z")
    evening = parse_time("2026-11-03T19:00:00Z")
    rates = []
    for start in (night, evening):
        sim, events = simulate(60, 2000, "high-street", start, night_off_share=0.0)
        ev = phones(sim, events)
        rates.append(np.isin(ev["type"], [DATA, PAGING]).sum())
    assert rates[1] > 5 * rates[0]
