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

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from streams.core.areas import AreaMap
from streams.core.errors import ConfigError
from streams.core.rotation import Rotation
from streams.core.wire import EVENT_TYPE_NAMES, RECORD_DTYPE

from .city import City
from .mobility import DayPlanner, Mobility, Planner, Plans, WalkPlanner
from .population import PHONE, Population, build_population
from .pseudonyms import KeySchedule, Pseudonymiser
from .scenarios import Config, Steady, configure
from .signalling import EventLog, Radio, time_order
from .truth import GroundTruth, TruthTable, WindowTruth

T3412_MS = 54 * 60_000
#: The workers' default pseudonym-key schedule (daily at 04:00 UTC), unless a run says otherwise.
DEFAULT_ROTATION = Rotation()

__all__ = ["Simulation", "WindowTruth", "GroundTruth", "TruthTable", "T3412_MS"]


class Simulation:
    """Steps a city's population through time and yields the operator's events, sorted by time.

    `devices` sizes the city: its residents carry about that many of the operator's devices
    (phones and M2M); scenario visitors and in-commuters come on top (see `population`).
    With `truth=True`, `truth` accumulates the ground truth per area and minute.
    `pseudonym_key` is the edge's master secret and `rotation` the pseudonym-key schedule (the
    worker must be given the same schedule: Settings.rotation).

    `shards` > 1 splits the carriers into that many ranges, each moved and heard by its own
    Mobility and Radio with random streams of its own, stepped in threads (numpy runs its loops
    without the GIL: two shards generate about twice as fast on two cores). The city, the
    population and the day plans are the same as with one shard; the random draws of moves and
    signalling are not, so the events are another realisation of the same model, as
    reproducible for a given (seed, shards).
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
        rotation: Rotation = DEFAULT_ROTATION,
        truth: bool = False,
        bucket_s: int = 60,
        windows_s: tuple[int, ...] = (300, 900, 3600),
        shards: int = 1,
    ) -> None:
        if devices <= 0:
            raise ConfigError("devices must be positive")
        self.config = config or configure(scenario)
        self.scenario = self.config.scenario
        self.areas = areas
        self.start_ms = int(start_ms)
        self.now_ms = int(start_ms)
        self.step_ms = int(step_s * 1000)
        if self.step_ms <= 0:
            raise ConfigError("step_s must be positive")
        self.bucket_ms = bucket_s * 1000
        if truth and self.bucket_ms % self.step_ms:
            raise ConfigError("with truth, the step must divide the bucket")
        if shards < 1:
            raise ConfigError("shards must be >= 1")
        pop_seed, plan_seed, radio_seed = np.random.SeedSequence(seed).spawn(3)
        pop_rng, plan_rng = np.random.default_rng(pop_seed), np.random.default_rng(plan_seed)
        self.city = City(areas)
        s = self.scenario
        self.population = build_population(
            self.city, devices, pop_rng, self.config.population, in_commuters=s.in_commuters,
            visitors=s.visitors(self.city), train_share=s.train_share, pseudonym_key=pseudonym_key,
        )
        pop = self.population
        days = _Days(lambda day: s.day_plans(day, self.start_ms, self.city, pop, plan_rng))
        # One shard: the plans' and radio's own streams. Several: each its own pair of streams
        # (a different realisation of the same model, as reproducible).
        if shards == 1:
            streams = [(plan_rng, np.random.default_rng(radio_seed))]
        else:
            streams = [(np.random.default_rng(p), np.random.default_rng(r))
                       for p, r in zip(plan_seed.spawn(shards), radio_seed.spawn(shards))]
        self.shards: list[Shard] = []
        for (lo, hi), (shard_plan_rng, shard_radio_rng) in zip(_split(pop, shards), streams):
            # Without a truth to keep, carriers without the operator's devices (more than half
            # of them) are not simulated at all: nobody hears them. Nothing a device does
            # depends on them (day plans are built for everyone at once, and WalkPlanner draws
            # their moves from a stream of their own), so the events are the same either way.
            carriers = np.arange(lo, hi)
            if not truth:
                carriers = carriers[pop.visible_per_carrier[lo:hi] > 0]
            part = pop.subset(carriers)
            planner: Planner
            if isinstance(s, Steady):
                planner = WalkPlanner(self.city, part, shard_plan_rng, moves_per_hour=s.moves_per_hour)
            else:
                planner = DayPlanner(lambda day, rows=carriers: days.plans(day).rows(rows), part.n_carriers)
            mobility = Mobility(self.city, part, planner, self.start_ms, lazy=not truth)
            radio = Radio(
                self.city, part, mobility, self.config.signalling,
                activity=lambda t, kind: s.activity(t, kind, self.start_ms), activity_max=s.activity_max(),
                start_ms=self.start_ms, rng=shard_radio_rng, carrier_rows=(hi - lo, carriers - lo),
            )
            self.shards.append(Shard(int(pop.device_ptr[lo]), mobility, radio))
        # numpy releases the GIL inside its loops, so shards stepped in threads run in parallel.
        self._pool = ThreadPoolExecutor(shards, thread_name_prefix="simulation") if shards > 1 else None
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
        # Each shard moves its carriers, hears its devices and labels its events in its thread.
        if self._pool is None:
            parts = [self._shard_step(self.shards[0], t0, t1)]
        else:
            parts = list(self._pool.map(lambda shard: self._shard_step(shard, t0, t1), self.shards))
        for (device, ts, cell, kind), _, _ in parts:
            if self.truth is not None:
                self.truth.add(device, ts, cell)
            for code, n in enumerate(np.bincount(kind).tolist()):
                if n:
                    self.event_counts[EVENT_TYPE_NAMES[code]] += n
        if self.truth is not None and t1 % self.bucket_ms == 0:
            self.truth.close(np.sum([shard.mobility.presence_by_area() for shard in self.shards], axis=0))
        self.now_ms = t1
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        return _by_time([out for _, out, _ in parts]), _by_time([shadow for _, _, shadow in parts])

    def _shard_step(self, shard: Shard, t0: int, t1: int) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
        """One shard's step: its events as arrays (global device index, time, cell index, type)
        sorted by time, then as wire records with their shadow copies."""
        device, ts, cell, kind = shard.step(t0, t1).arrays()
        device = device + shard.first_device
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
        return (device, ts, cell, kind), out, shadow

    def run(self, until_ms: int) -> Iterator[np.ndarray]:
        while self.now_ms < until_ms:
            yield self.step(until_ms)

    @property
    def mobility(self) -> Mobility:
        """The carriers' Mobility (of a simulation in one shard)."""
        return self._only().mobility

    @property
    def radio(self) -> Radio:
        """The devices' Radio (of a simulation in one shard)."""
        return self._only().radio

    def _only(self) -> Shard:
        if len(self.shards) != 1:
            raise AttributeError("a sharded simulation has one Mobility and Radio per shard (Simulation.shards)")
        return self.shards[0]


@dataclass
class Shard:
    """A contiguous range of carriers, their devices from `first_device` on, moved and heard by
    their own Mobility and Radio (indexes local to the shard)."""

    first_device: int
    mobility: Mobility
    radio: Radio

    def step(self, t0: int, t1: int) -> EventLog:
        moves = self.mobility.advance(t0, t1)
        log = EventLog()
        self.radio.step(t0, t1, moves, log)
        return log


class _Days:
    """A scenario's plans for each day, built once for the whole population (the shards take
    their rows): the plans do not depend on how the carriers are sharded."""

    def __init__(self, build: Callable[[int], Plans]) -> None:
        self.build = build
        self.lock = threading.Lock()
        self.day = -1
        self.built: Plans | None = None

    def plans(self, day_start_ms: int) -> Plans:
        with self.lock:  # the shards roll into a new day at the same step, in their threads
            if self.day != day_start_ms:
                self.built, self.day = self.build(day_start_ms), day_start_ms
            assert self.built is not None
            return self.built


def _by_time(records: list[np.ndarray]) -> np.ndarray:
    """The shards' records (each sorted by time) in one array sorted by time, stably."""
    out = np.concatenate(records)
    return out[time_order(out["ts"])]


def _split(pop: Population, shards: int) -> list[tuple[int, int]]:
    """Carrier ranges with about the same number of the operator's devices each (the work of a
    step follows the devices heard and the carriers that move)."""
    cuts = np.searchsorted(pop.device_ptr, np.linspace(0, pop.n_visible, shards + 1)[1:-1])
    bounds = [0, *np.minimum(cuts, pop.n_carriers).tolist(), pop.n_carriers]
    return list(zip(bounds[:-1], bounds[1:]))
