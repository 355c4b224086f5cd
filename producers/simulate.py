"""`crowdpulse simulate`: runs a Simulation and publishes its frames, paced to a speed-up over
real time (or as fast as possible), optionally writing the ground truth as JSON lines, with a
progress line on long runs. In the overlap before a pseudonym-key rotation each step's shadow
copies follow its events, in frames flagged as shadows (docs/privacy.md)."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from streams.core.areas import AreaMap
from streams.core.rotation import Rotation

from .publisher import Framer
from .scenarios import configure
from .simulator import Simulation


class Sink(Protocol):
    frames: int
    events: int  # sent (handed to the sink), undelivered ones included
    undelivered_frames: int  # final once closed
    undelivered_events: int

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
    scenario: str = "steady"
    #: name=value overrides of scenario, population and signalling parameters (scenarios.configure).
    overrides: tuple[tuple[str, str], ...] = ()
    quick: bool = False
    #: The pseudonym-key schedule; the worker's must be the same (both from Settings.rotation).
    rotation: Rotation = Rotation()
    #: Simulated seconds per step (must divide `bucket_s` with a truth file). The command keeps
    #: the Simulation's default (10 s), so a seed gives the same events as before; a longer step
    #: publishes faster (the per-step costs are shared by more events; `crowdpulse bench` uses 60).
    step_s: float = 10.0
    #: Threads generating the events (Simulation's shards). One reproduces the events of a seed
    #: as before; more are another realisation of the same model, faster on as many cores.
    threads: int = 1

    def simulation(self, areas: AreaMap, truth: bool = False) -> Simulation:
        config = configure(self.scenario, dict(self.overrides), quick=self.quick)
        return Simulation(
            areas, self.devices, self.seed, self.start_ms, step_s=self.step_s, config=config, rotation=self.rotation,
            truth=truth, bucket_s=self.bucket_s, windows_s=self.windows_s, shards=self.threads,
        )


def run_simulation(
    run: SimulationRun,
    areas: AreaMap,
    sink: Sink,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    sim: Simulation | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Publish the run's events through `sink`; returns a summary (events, frames, rates).

    The steps are generated in a thread of their own, at most two ahead of the one being framed
    and sent here: generating and publishing overlap (on two cores, both run at once). `sim` may
    be built by the caller (to keep its ground truth: read it after this returns);
    `on_step(now_ms)` is called after each step has been sent, with the simulated time it ended
    at (pacing or back-pressure hooks).
    """
    stop = stop or threading.Event()
    sim = sim or run.simulation(areas, truth=run.truth_path is not None)
    framer = Framer(run.producer_id, run.partitions, areas.cell_ids)
    truth_file = open(run.truth_path, "w") if run.truth_path else None
    end_ms = run.start_ms + int(run.duration_s * 1000)
    wall_start = time.monotonic()
    shadow_events = 0
    sent_ms = sim.now_ms
    steps = _Steps(sim, end_ms, stop, truth=truth_file is not None)
    try:
        for now_ms, events, shadows, truth_rows in steps:
            sink.send(framer.frames(events))
            sink.send(framer.frames(shadows, shadow=True))
            shadow_events += len(shadows)
            sent_ms = now_ms
            if truth_file is not None:
                for row in truth_rows:
                    truth_file.write(json.dumps(row, separators=(",", ":")) + "\n")
            if progress is not None:
                progress.update(now_ms, sink.events)
            if on_step is not None:
                on_step(now_ms)
            if run.speedup > 0:
                due = wall_start + (now_ms - run.start_ms) / 1000 / run.speedup
                delay = due - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
    finally:
        steps.close()
        sink.close()
        if truth_file is not None:
            truth_file.close()
        if progress is not None:
            progress.done(sent_ms, sink.events)
    wall = time.monotonic() - wall_start
    return {
        "scenario": run.scenario,
        "events": sink.events,
        # Sent but given up on by the producer (broker away longer than its delivery timeout):
        # counted by the sink's delivery callbacks, final after close.
        "undelivered_events": sink.undelivered_events,
        "undelivered_frames": sink.undelivered_frames,
        "shadow_events": shadow_events,  # included in events
        "frames": sink.frames,
        "simulated_s": (sent_ms - run.start_ms) / 1000,
        "wall_s": round(wall, 3),
        "events_per_s": round(sink.events / wall, 1) if wall > 0 else None,
        "population": sim.population.summary(),
        "event_types": dict(sim.event_counts),
    }


class _Steps:
    """A simulation's steps up to `end_ms` (until `stop`), generated in a thread of its own:
    iterate for (now_ms, events, shadows, truth rows), one step after the other. The thread runs
    at most two steps ahead (one waiting in the queue, one being made); an error in it is raised
    to the caller. `close` stops it and waits for it."""

    def __init__(self, sim: Simulation, end_ms: int, stop: threading.Event, truth: bool) -> None:
        self.sim, self.end_ms, self.stop, self.truth = sim, end_ms, stop, truth
        self.halt = threading.Event()
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._generate, name="simulation-steps", daemon=True)
        self.thread.start()

    def _generate(self) -> None:
        sim = self.sim
        try:
            while sim.now_ms < self.end_ms and not (self.stop.is_set() or self.halt.is_set()):
                events, shadows = sim.step_with_shadows(self.end_ms)
                rows = sim.truth.pop_rows() if self.truth and sim.truth is not None else []
                self.queue.put((sim.now_ms, events, shadows, rows))
        except BaseException as exc:  # handed to the caller, raised there
            self.queue.put(exc)
        else:
            self.queue.put(None)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, list]]:
        while not self.stop.is_set():
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.halt.set()
        while self.thread.is_alive():  # unblock a put that waits for room
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self.thread.join()


def frames_for(run: SimulationRun, areas: AreaMap) -> list[tuple[int, bytes, bytes]]:
    """All frames of a (small) run in memory: for tests that need the exact input."""
    sim = run.simulation(areas)
    framer = Framer(run.producer_id, run.partitions, areas.cell_ids)
    end_ms = run.start_ms + int(run.duration_s * 1000)
    out: list[tuple[int, bytes, bytes]] = []
    while sim.now_ms < end_ms:
        events, shadows = sim.step_with_shadows(end_ms)
        out.extend(framer.frames(events))
        out.extend(framer.frames(shadows, shadow=True))
    return out


class Progress:
    """One line of progress on stderr: share done, simulated clock, events, rate.

    On a terminal the line is rewritten in place (at most 4 times a second); otherwise a line
    is printed every `every_s` seconds. Nothing is printed for runs shorter than `after_s`.
    """

    def __init__(self, start_ms: int, end_ms: int | None, stream: TextIO | None = None,
                 every_s: float = 10.0, after_s: float = 2.0) -> None:
        self.start_ms, self.end_ms = start_ms, end_ms
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = 0.25 if self.tty else every_s
        self.after_s = after_s
        self.began = time.monotonic()
        self.last = self.began
        self.shown = False

    def line(self, now_ms: int, events: int) -> str:
        wall = max(time.monotonic() - self.began, 1e-9)
        clock = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now_ms / 1000))
        speed = (now_ms - self.start_ms) / 1000 / wall
        head = ""
        if self.end_ms and self.end_ms > self.start_ms:
            share = min(1.0, (now_ms - self.start_ms) / (self.end_ms - self.start_ms))
            bar = "#" * int(share * 20)
            head = f"[{bar:<20}] {share:4.0%} "
        return f"{head}sim {clock} UTC | {events:,} events | {events / wall:,.0f} events/s | {speed:,.0f}x real time"

    def update(self, now_ms: int, events: int) -> None:
        t = time.monotonic()
        if t - self.last < self.every_s or t - self.began < self.after_s:
            return
        self.last = t
        self.shown = True
        end = "\r" if self.tty else "\n"
        self.stream.write(self.line(now_ms, events) + end)
        self.stream.flush()

    def done(self, now_ms: int, events: int) -> None:
        if self.shown:
            self.stream.write(self.line(now_ms, events) + "\n")
            self.stream.flush()


__all__ = ["SimulationRun", "run_simulation", "frames_for", "Progress"]
