"""A first honest network-event simulator: devices move across the city's cells and report the
way idle and active phones do. Pure and deterministic: randomness comes from one seeded
numpy Generator and time from the `start_ms` argument, so a seeded run is exactly reproducible.

Per device: a periodic location update (TAU) every T3412 = 54 minutes at a random phase; data
sessions starting at random (each one restarts the TAU timer when it ends); a rare paging; and a
random walk between neighbouring cells that is silent while idle (same tracking area) and a
handover while a session is active. The simulator issue makes this realistic (schedules,
scenarios, market share); this version is what the pipeline is built and tested on.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from streams.areas import AreaMap
from streams.wire import EVENT_TYPES, RECORD_DTYPE

T3412_MS = 54 * 60_000


@dataclass(frozen=True)
class Behaviour:
    """Rates per device, per hour, unless stated."""

    data_sessions_per_hour: float = 2.0
    session_mean_s: float = 180.0
    moves_per_hour: float = 1.5
    pagings_per_hour: float = 0.2
    #: Cells closer than this (metres) are neighbours for the random walk.
    neighbour_distance_m: float = 750.0


def pseudonyms(identities: np.ndarray, key: bytes) -> np.ndarray:
    """HMAC-SHA256(key, identity) truncated to 8 bytes, per device, as 'V8'.

    Computed once per device at the producer edge: no raw identifier ever reaches Kafka.
    """
    out = bytearray()
    for identity in identities.tolist():
        out += hmac.new(key, str(identity).encode(), hashlib.sha256).digest()[:8]
    return np.frombuffer(bytes(out), dtype="V8")


class Simulation:
    """Steps a population of devices through time and yields their events, sorted by time."""

    def __init__(
        self,
        areas: AreaMap,
        devices: int,
        seed: int,
        start_ms: int,
        step_s: float = 10.0,
        behaviour: Behaviour = Behaviour(),
        pseudonym_key: bytes = b"crowdpulse-demo-key",
    ) -> None:
        if devices <= 0:
            raise ValueError("devices must be positive")
        self.areas = areas
        self.behaviour = behaviour
        self.rng = np.random.default_rng(seed)
        self.now_ms = int(start_ms)
        self.step_ms = int(step_s * 1000)
        n_cells = len(areas.cells)
        xy = np.array([(c.x_m, c.y_m) for c in areas.cells])
        distance = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
        near = (distance <= behaviour.neighbour_distance_m) & (distance > 0)
        # Padded neighbour table: row c lists c's neighbours, repeated to a fixed width.
        width = max(1, int(near.sum(axis=1).max()))
        self.neighbours = np.empty((n_cells, width), dtype=np.int64)
        for c in range(n_cells):
            options = np.flatnonzero(near[c]) if near[c].any() else np.array([c])
            self.neighbours[c] = np.resize(options, width)
        self.cell = self.rng.integers(0, n_cells, size=devices)
        # Simulated IMSIs (MCC 001, MNC 01: the test network) turned into keyed pseudonyms.
        imsi = 1_010_000_000_000_00 + self.rng.choice(10**9, size=devices, replace=False)
        self.device = pseudonyms(imsi, pseudonym_key)
        self.next_tau = self.now_ms + self.rng.integers(0, T3412_MS, size=devices)
        self.session_end = np.zeros(devices, dtype=np.int64)

    def step(self) -> np.ndarray:
        """Advance one step; return its events (RECORD_DTYPE) sorted by event time."""
        t0, dt = self.now_ms, self.step_ms
        b = self.behaviour
        rng = self.rng
        n = len(self.cell)
        parts: list[np.ndarray] = []

        tau = np.flatnonzero(self.next_tau < t0 + dt)
        parts.append(self._events(tau, self.next_tau[tau], "tau"))
        self.next_tau[tau] += T3412_MS

        starts = np.flatnonzero(rng.random(n) < b.data_sessions_per_hour * dt / 3_600_000)
        start_ts = t0 + rng.integers(0, dt, size=len(starts))
        parts.append(self._events(starts, start_ts, "data"))
        length = rng.exponential(b.session_mean_s * 1000, size=len(starts)).astype(np.int64)
        self.session_end[starts] = start_ts + length
        # Leaving connected mode restarts the periodic-update timer.
        self.next_tau[starts] = start_ts + length + T3412_MS

        paged = np.flatnonzero(rng.random(n) < b.pagings_per_hour * dt / 3_600_000)
        parts.append(self._events(paged, t0 + rng.integers(0, dt, size=len(paged)), "paging"))

        movers = np.flatnonzero(rng.random(n) < b.moves_per_hour * dt / 3_600_000)
        move_ts = t0 + rng.integers(0, dt, size=len(movers))
        choice = rng.integers(0, self.neighbours.shape[1], size=len(movers))
        self.cell[movers] = self.neighbours[self.cell[movers], choice]
        active = self.session_end[movers] > move_ts
        parts.append(self._events(movers[active], move_ts[active], "handover"))

        self.now_ms = t0 + dt
        events = np.concatenate(parts)
        return events[np.argsort(events["ts"], kind="stable")]

    def run(self, until_ms: int) -> Iterator[np.ndarray]:
        while self.now_ms < until_ms:
            yield self.step()

    def _events(self, who: np.ndarray, ts: np.ndarray, kind: str) -> np.ndarray:
        out = np.zeros(len(who), dtype=RECORD_DTYPE)
        out["device"] = self.device[who]
        out["ts"] = ts
        out["cell"] = self.areas.cell_ids[self.cell[who]]
        out["type"] = EVENT_TYPES[kind]
        return out


class WindowTruth:
    """Exact distinct devices per (area, window) for every bucket end: what a perfect
    HyperLogLog would report. Keeps each (area, bucket)'s device set as a sorted array."""

    def __init__(self, areas: AreaMap, bucket_s: int, windows_s: tuple[int, ...]) -> None:
        self.areas = areas
        self.bucket_ms = bucket_s * 1000
        self.bucket_s = bucket_s
        self.windows_s = windows_s
        self.sets: dict[tuple[int, int], np.ndarray] = {}

    def add(self, events: np.ndarray) -> None:
        if not len(events):
            return
        cell_index, _ = self.areas.cell_index(events["cell"])
        pos, area = self.areas.expand_to_areas(cell_index)
        bucket = events["ts"][pos] // self.bucket_ms
        device = events["device"].view("<u8")[pos]
        for a in np.unique(area):
            mine = area == a
            for bk in np.unique(bucket[mine]):
                sel = device[mine & (bucket == bk)]
                key = (int(a), int(bk))
                old = self.sets.get(key)
                self.sets[key] = np.unique(sel if old is None else np.concatenate([old, sel]))

    def distinct(self, area: str, newest_bucket: int, window_s: int) -> np.ndarray:
        """The exact device set (uint64) of one area's window ending with `newest_bucket`."""
        a = self.areas.area_ids.index(area)
        n = window_s // self.bucket_s
        parts = [self.sets.get((a, b)) for b in range(newest_bucket - n + 1, newest_bucket + 1)]
        present = [p for p in parts if p is not None]
        return np.unique(np.concatenate(present)) if present else np.zeros(0, dtype=np.uint64)

    def rows(self, newest_bucket: int) -> list[dict]:
        """Truth rows for one window end (as_of = end of the newest bucket)."""
        as_of = (newest_bucket + 1) * self.bucket_ms
        return [
            {"as_of": as_of, "area": area, "window_s": w, "devices": int(len(self.distinct(area, newest_bucket, w)))}
            for area in self.areas.area_ids
            for w in self.windows_s
        ]
