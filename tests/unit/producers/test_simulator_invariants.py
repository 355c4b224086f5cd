"""State the simulator's shortcuts rely on holds after every step (producers/signalling.py,
producers/mobility.py): the radio reads and writes a device's ping-pong timer only at a coverage
edge, a device's earliest deadline is recomputed only where one of its timers changed, a
carrier's pixel is kept with its position, and the per-cell counts are kept incrementally."""

from __future__ import annotations

import numpy as np
import pytest

from producers.mobility import INF
from producers.scenarios import configure
from producers.simulator import Simulation
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.settings import DEFAULT_AREAS

AREAS = load_areas(DEFAULT_AREAS)


@pytest.mark.parametrize("scenario, start, truth", [
    ("steady", "2026-01-05T06:00:00Z", False),
    ("match-day", "2026-11-14T12:30:00Z", True),
    ("station-rush", "2026-11-03T06:00:00Z", False),
])
def test_timer_and_position_state_stays_consistent(scenario: str, start: str, truth: bool) -> None:
    t0 = parse_time(start)
    sim = Simulation(AREAS, 3000, seed=5, start_ms=t0, step_s=60.0, config=configure(scenario, {}, quick=True), truth=truth)
    radio, mob = sim.radio, sim.mobility
    for _ in range(90):
        sim.step()
        # No ping-pong timer runs off a coverage edge.
        assert not (radio.next_pp != INF)[~radio.edge].any()
        # Every device's earliest deadline is the minimum of its timers.
        assert np.array_equal(radio.next_due, radio.timers.min(axis=1))
        # Every carrier's pixel is that of its position; absent carriers have none.
        assert np.array_equal(mob.px[mob.present], sim.city.pixel(mob.pos[mob.present]))
        assert (mob.px[~mob.present] == -1).all()
        if not mob.lazy:  # the per-cell counts, kept incrementally, are those of a recount
            counts = mob.cell_counts.copy()
            mob._recount()
            assert np.array_equal(mob.cell_counts, counts)
