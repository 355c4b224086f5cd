"""`crowdpulse simulate`: runs a Simulation and publishes its frames, paced to a speed-up over
real time (or as fast as possible), optionally writing the exact per-window truth."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streams.areas import AreaMap

from .publisher import Framer
from .simulator import Simulation, WindowTruth

log = logging.getLogger(__name__)


class Sink(Protocol):
    frames: int
    events: int

    def send(self, frames) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SimulationRun:
    devices: int
    seed: int
    start_ms: int
    duration_s: float  # simulated seconds
    speedup: float  # 0 = as fast as possible
    partitions: int
    producer_id: int
    bucket_s: int = 60
    windows_s: tuple[int, ...] = (300, 900, 3600)
    truth_path: Path | None = None


def run_simulation(run: SimulationRun, areas: AreaMap, sink: Sink, stop: threading.Event | None = None) -> dict:
    """Publish the run's events through `sink`; returns a summary (events, frames, rates)."""
    stop = stop or threading.Event()
    sim = Simulation(areas, run.devices, run.seed, run.start_ms)
    framer = Framer(run.producer_id, run.partitions, areas.cell_ids)
    truth = WindowTruth(areas, run.bucket_s, run.windows_s) if run.truth_path else None
    truth_file = open(run.truth_path, "w") if run.truth_path else None
    end_ms = run.start_ms + int(run.duration_s * 1000)
    wall_start = time.monotonic()
    bucket_ms = run.bucket_s * 1000
    last_bucket = run.start_ms // bucket_ms
    try:
        while sim.now_ms < end_ms and not stop.is_set():
            events = sim.step()
            events = events[events["ts"] < end_ms]
            sink.send(framer.frames(events))
            if truth is not None and truth_file is not None:
                truth.add(events)
                current = sim.now_ms // bucket_ms
                for done in range(last_bucket, current):
                    for row in truth.rows(done):
                        truth_file.write(json.dumps(row) + "\n")
                last_bucket = current
            if run.speedup > 0:
                due = wall_start + (sim.now_ms - run.start_ms) / 1000 / run.speedup
                delay = due - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
    finally:
        sink.close()
        if truth_file is not None:
            truth_file.close()
    wall = time.monotonic() - wall_start
    return {
        "events": sink.events,
        "frames": sink.frames,
        "simulated_s": (sim.now_ms - run.start_ms) / 1000,
        "wall_s": round(wall, 3),
        "events_per_s": round(sink.events / wall, 1) if wall > 0 else None,
    }


def frames_for(run: SimulationRun, areas: AreaMap) -> list[tuple[int, bytes, bytes]]:
    """All frames of a (small) run in memory: for tests that need the exact input."""
    sim = Simulation(areas, run.devices, run.seed, run.start_ms)
    framer = Framer(run.producer_id, run.partitions, areas.cell_ids)
    end_ms = run.start_ms + int(run.duration_s * 1000)
    out: list[tuple[int, bytes, bytes]] = []
    for events in sim.run(end_ms):
        out.extend(framer.frames(events[events["ts"] < end_ms]))
    return out


__all__ = ["SimulationRun", "run_simulation", "frames_for"]
