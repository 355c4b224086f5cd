"""The simulator's publishing rate: `crowdpulse simulate --speedup 0` timed end to end with its
threads and with one, then its parts (generation, framing, publishing) one after the other, and
the same frames published with aiokafka for comparison."""

from __future__ import annotations

import secrets
import time

from streams.core.areas import AreaMap
from streams.runtime.services import ensure_topics
from streams.tools.bench.data import produce


def simulator_rates(bootstrap: str, partitions: int, areas: AreaMap, devices: int, seconds: float = 3.0,
                    step_s: float = 60.0, threads: int = 2) -> dict:
    """What a user runs to publish, `crowdpulse simulate --speedup 0 --threads N` (producers/
    simulate.py's run_simulation: Simulation -> Framer -> kafka-python KafkaSink in one process,
    flushed at the end), timed end to end for `seconds` (`simulator_total_eps`) with `threads`
    generating (Simulation's shards) and, side by side, with one (`simulator_1thread_*`); then
    the parts of the threaded run timed one after the other on the same kind of events:
    Simulation.step (generation), Framer (framing), KafkaSink (publishing); and for comparison
    the same frames published with aiokafka.

    The steady scenario at a 60 s step: the step is the simulator's unit of work (everyone who
    moved is re-placed once per step), so the longer it is the more events share that cost; 60 s
    is the longest step a truth file allows (the step must divide its 60 s buckets). The start
    is 12:00 UTC, far from the pseudonym-key rotation (at 04:00, whose overlap would add shadow
    copies), and each epoch's pseudonyms (one HMAC per device, once a simulated day) are
    computed before the clock starts."""
    try:
        import threading

        from producers.publisher import Framer, KafkaSink
        from producers.simulate import SimulationRun, run_simulation

        day_ms = 86_400_000
        start_ms = (int(time.time() * 1000) // day_ms - 1) * day_ms + 12 * 3_600_000

        def simulation(n_threads: int):
            run = SimulationRun(devices=devices, seed=1, start_ms=start_ms, duration_s=30 * 86_400.0, speedup=0.0,
                                partitions=partitions, producer_id=1, step_s=step_s, threads=n_threads)
            sim = run.simulation(areas)
            sim.pseudonyms.for_epoch(int(sim.rotation.epoch(start_ms)))
            return run, sim

        def end_to_end(n_threads: int) -> tuple[dict, list]:
            """As the command does it (kafka-python sends from its own thread meanwhile); then
            the generation alone on a fresh run of the same simulation (its batches returned)."""
            run, sim = simulation(n_threads)
            stop = threading.Event()
            timer = threading.Timer(seconds, stop.set)
            timer.start()
            summary = run_simulation(run, areas, KafkaSink(bootstrap, topic), stop, sim=sim)
            timer.cancel()
            _, sim = simulation(n_threads)
            batches = []
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                batches.append(sim.step())
            generate_s = time.perf_counter() - started
            return {"total_eps": summary["events"] / summary["wall_s"], "total_events": summary["events"],
                    "total_wall_s": summary["wall_s"], "generate_eps": sum(len(b) for b in batches) / generate_s}, batches

        topic = f"bench-sim-{secrets.token_hex(3)}.crowd.events"
        ensure_topics(bootstrap, {topic: partitions})
        one, _ = end_to_end(1)
        threaded, batches = end_to_end(threads)
        events = sum(len(b) for b in batches)
        generate_s = events / threaded["generate_eps"]
        framer = Framer(1, partitions, areas.cell_ids)
        started = time.perf_counter()
        frames = [f for batch in batches for f in framer.frames(batch)]
        frame_s = time.perf_counter() - started
        sink = KafkaSink(bootstrap, topic)
        started = time.perf_counter()
        sink.send(frames)
        sink.close()
        publish_s = time.perf_counter() - started
        # The same frames through aiokafka's batch API (C record builder and CRC).
        started = time.perf_counter()
        produce(bootstrap, topic, frames)
        aiokafka_s = time.perf_counter() - started
        return {
            "simulator_devices": devices,
            "simulator_step_s": step_s,
            "simulator_threads": threads,
            "simulator_seconds": seconds,
            "simulator_events": events,
            "simulator_generate_eps": threaded["generate_eps"],
            "simulator_frame_eps": events / frame_s,
            "simulator_publish_eps": events / publish_s,
            # The parts' times added up (no overlap), and the measured end-to-end rate.
            "simulator_serial_eps": events / (generate_s + frame_s + publish_s),
            "simulator_total_eps": threaded["total_eps"],
            "simulator_total_events": threaded["total_events"],
            "simulator_total_wall_s": threaded["total_wall_s"],
            "simulator_publish_aiokafka_eps": events / aiokafka_s,
            # The same, generated in one thread: the baseline of the threads' speed-up.
            "simulator_1thread_total_eps": one["total_eps"],
            "simulator_1thread_generate_eps": one["generate_eps"],
        }
    except Exception as exc:  # report, do not fail the bench
        return {"simulator_error": f"{type(exc).__name__}: {exc}"}
