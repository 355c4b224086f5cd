"""The network-event simulator: a city (city.py), its people and devices (population.py), where
they go (mobility.py, scenarios.py), what the network hears from them (signalling.py) and the
ground truth (truth.py), stepped together through time. docs/simulator.md explains the model.

Pure and deterministic: randomness comes from numpy Generators seeded from `seed` (one stream
each for the population, the plans and the radio), time from `start_ms`, so a seeded run is
exactly reproducible, event for event.

The simulator is also the producer edge: each device's pseudonym is re-keyed at every rotation
of the schedule (`rotation`, daily at 04:00 UTC by default), and in the overlap before a
rotation every event also gets a shadow copy under the next epoch's pseudonym
(producers/pseudonyms.py, docs/privacy.md).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from streams.areas import AreaMap
from streams.keys import Rotation
from streams.wire import EVENT_TYPE_NAMES, RECORD_DTYPE

from .city import City
from .mobility import DayPlanner, Mobility, WalkPlanner
from .population import PHONE, build_population
from .pseudonyms import KeySchedule, Pseudonymiser
from .scenarios import Config, Steady, configure
from .signalling import EventLog, Radio
from .truth import GroundTruth, TruthTable, WindowTruth

T3412_MS = 54 * 60_000

__all__ = ["Simulation", "WindowTruth", "GroundTruth", "TruthTable", "T3412_MS"]


class Simulation:
    """Steps a city's population through time and yields the operator's events, sorted by time.

    `devices` sizes the city: its residents carry about that many of the operator's devices
    (phones and M2M); scenario visitors and in-commuters come on top (see `population`).
    With `truth=True`, `truth` accumulates the ground truth per area and minute.
    `pseudonym_key` is the edge's master secret and `rotation` the pseudonym-key schedule (the
    worker must be given the same schedule: Settings.rotation).
    """

    def __init__(
        self,
        areas: AreaMap,
        devices: int,
        seed: int,
        start_ms: int,
        step_s: float = 10.0,
        scenario: str = "steady",
        config: Config | None = None,
        pseudonym_key: bytes = b"crowdpulse-demo-key",
        rotation: Rotation = Rotation(),
        truth: bool = False,
        bucket_s: int = 60,
        windows_s: tuple[int, ...] = (300, 900, 3600),
    ) -> None:
        if devices <= 0:
            raise ValueError("devices must be positive")
        self.config = config or configure(scenario)
        self.scenario = self.config.scenario
        self.areas = areas
        self.start_ms = int(start_ms)
        self.now_ms = int(start_ms)
        self.step_ms = int(step_s * 1000)
        if self.step_ms <= 0:
            raise ValueError("step_s must be positive")
        self.bucket_ms = bucket_s * 1000
        if truth and self.bucket_ms % self.step_ms:
            raise ValueError("with truth, the step must divide the bucket")
        pop_rng, plan_rng, radio_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        self.city = City(areas)
        s = self.scenario
        self.population = build_population(
            self.city, devices, pop_rng, self.config.population, in_commuters=s.in_commuters,
            visitors=s.visitors(self.city), train_share=s.train_share, pseudonym_key=pseudonym_key,
        )
        pop = self.population
        if isinstance(s, Steady):
            planner = WalkPlanner(self.city, pop, plan_rng, moves_per_hour=s.moves_per_hour)
        else:
            planner = DayPlanner(lambda day: s.day_plans(day, self.start_ms, self.city, pop, plan_rng), pop.n_carriers)
        # Without a truth to keep, carriers without the operator's devices are followed lazily
        # (Mobility: the same events, much less work per step).
        self.mobility = Mobility(self.city, pop, planner, self.start_ms, lazy=not truth)
        self.radio = Radio(
            self.city, pop, self.mobility, self.config.signalling,
            activity=lambda t, kind: s.activity(t, kind, self.start_ms), activity_max=s.activity_max(),
            start_ms=self.start_ms, rng=radio_rng,
        )
        # The population's keyed device id (from its simulated IMSI) is the stable identifier the
        # edge re-keys per epoch; it never leaves the simulator. One HMAC per device and epoch.
        self.rotation = rotation
        self.pseudonyms = Pseudonymiser(pop.pseudonym.view("<u8"), KeySchedule(pseudonym_key, rotation))
        # The windows' truth counts phones, as the pipeline does (M2M is in no area's HLL).
        phones = pop.device_class == PHONE
        self.truth = GroundTruth(areas, pop.n_visible, bucket_s, windows_s, self.start_ms, counted=phones) if truth else None
        self.event_counts = {name: 0 for name in EVENT_TYPE_NAMES.values()}

    def step(self, until_ms: int | None = None) -> np.ndarray:
        """Advance one step (to the next multiple of the step length, or `until_ms` if sooner);
        return its events (RECORD_DTYPE) sorted by event time, without their rotation shadow
        copies (for analysis and benchmarks: a publisher uses `step_with_shadows`)."""
        return self.step_with_shadows(until_ms)[0]

    def step_with_shadows(self, until_ms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance one step, as `step`; return its events and their shadow copies: the events in
        the overlap before a key rotation again, under the next epoch's pseudonyms, to be sent
        in shadow frames right after the events (empty outside the overlap)."""
        t0 = self.now_ms
        t1 = (t0 // self.step_ms + 1) * self.step_ms
        if until_ms is not None:
            t1 = min(t1, max(until_ms, t0 + 1))
        moves = self.mobility.advance(t0, t1)
        log = EventLog()
        self.radio.step(t0, t1, moves, log)
        device, ts, cell, kind = log.arrays()
        if self.truth is not None:
            self.truth.add(device, ts, cell)
            if t1 % self.bucket_ms == 0:
                self.truth.close(self.mobility.presence_by_area())
        for code, n in enumerate(np.bincount(kind).tolist()):
            if n:
                self.event_counts[EVENT_TYPE_NAMES[code]] += n
        self.now_ms = t1
        pop = self.population
        pseudonyms, shadow_pos, shadow_pseudonyms = self.pseudonyms.label(device, ts)
        out = np.zeros(len(device), dtype=RECORD_DTYPE)
        out["device"] = pseudonyms
        out["ts"] = ts
        out["cell"] = self.areas.cell_ids[cell]
        out["type"] = kind
        out["device_class"] = pop.device_class[device]
        out["segment"] = pop.segment[device]
        shadow = out[shadow_pos]  # a copy (fancy indexing)
        shadow["device"] = shadow_pseudonyms
        return out, shadow

    def run(self, until_ms: int) -> Iterator[np.ndarray]:
        while self.now_ms < until_ms:
            yield self.step(until_ms)
