"""`crowdpulse simulate`: publish simulated network events to Kafka, or write their frames to a
file as fast as possible (`--out`). Simulated runs written to a file start at their scenario's
own start (producers/scenarios.py; `steady`: 2026-01-05T06:00:00Z) unless --start is given, so
the same seed gives the same bytes; live runs start at the wall clock."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from pathlib import Path

from streams.core.clock import parse_time
from streams.core.errors import ConfigError

HELP = "publish simulated network events"


def simulation_arguments(p: argparse.ArgumentParser, default_speedup: float = 60.0, default_devices: int = 20_000,
                         demo: bool = False) -> None:
    """The options shared by `simulate` and `demo` (`demo`: paced against the wall clock, no --out)."""
    from producers.scenarios import SCENARIOS

    p.add_argument("--scenario", default="steady", choices=list(SCENARIOS), help="scenario (default steady; docs/simulator.md)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="override a scenario/population/signalling parameter, e.g. --set uplift_pct=30 (repeatable)")
    p.add_argument("--devices", type=int, default=default_devices, help=f"simulated devices (default {default_devices})")
    flat_out = "" if demo else "; 0 = as fast as possible"
    p.add_argument("--speedup", type=float, default=default_speedup,
                   help=f"simulated seconds per wall second{flat_out} (default {default_speedup:g})")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many wall seconds" + ("" if demo else " (with --out: simulated seconds, default the scenario's)"))
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="generate in this many threads (shards of the population; default 1). One thread gives a "
                        "seed's events exactly as before; more give another realisation of the same model, faster")


def check_simulation_arguments(args: argparse.Namespace, flat_out: bool) -> None:
    """The shared options' values (`flat_out`: a speed-up of 0, as fast as possible, is allowed)."""
    if args.devices <= 0:
        raise ConfigError(f"--devices must be a positive number (got {args.devices})")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1 (got {args.threads})")
    if not (args.speedup >= 0 if flat_out else args.speedup > 0) or args.speedup == float("inf"):
        raise ConfigError(f"--speedup must be {'0 (as fast as possible) or ' if flat_out else ''}a positive number "
                          f"of simulated seconds per wall second (got {args.speedup:g})")
    if args.duration is not None and not 0 < args.duration < float("inf"):
        raise ConfigError(f"--duration must be a positive number of seconds (got {args.duration:g})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    simulation_arguments(p)
    p.add_argument("--truth", type=Path, help="write the exact distinct devices per area/window (JSON lines)")
    p.add_argument("--out", type=Path, help="write frames to this file instead of Kafka, as fast as possible")
    p.add_argument("--start", help="simulated start time, ISO 8601 UTC (default: now; with --out the scenario's own start)")


def run(args: argparse.Namespace) -> int:
    from producers.publisher import DeliveryError, FileSink, KafkaSink
    from producers.scenarios import configure, parse_overrides
    from producers.simulate import Progress, SimulationRun, run_simulation
    from streams.core.areas import load_areas
    from streams.core.settings import Settings
    from streams.core.topics import TopicNames
    from streams.runtime.preflight import check_kafka
    from streams.runtime.services import ensure_topics, topic_partitions

    settings = Settings.from_env()
    areas = load_areas(settings.areas_path)
    check_simulation_arguments(args, flat_out=True)
    overrides = parse_overrides(args.set)
    scenario = configure(args.scenario, overrides).scenario  # validates the overrides early
    if args.out:
        start_ms = parse_time(args.start) if args.start else scenario.start_ms()
        speedup = 0.0
        duration = args.duration if args.duration is not None else scenario.duration_s
        producer_id = args.seed  # deterministic file output
    else:
        start_ms = parse_time(args.start) if args.start else int(time.time() // 60 * 60 * 1000)
        speedup = args.speedup
        # Live: --duration is wall seconds; simulated time is that times the speed-up.
        duration = (args.duration * speedup if speedup > 0 else args.duration) if args.duration else 10 * 365 * 86400.0
        producer_id = secrets.randbits(63)
    run = SimulationRun(
        devices=args.devices,
        seed=args.seed,
        start_ms=start_ms,
        duration_s=duration,
        speedup=speedup,
        partitions=settings.partitions,
        producer_id=producer_id,
        bucket_s=settings.bucket_s,
        windows_s=settings.windows_s,
        truth_path=args.truth,
        scenario=args.scenario,
        overrides=tuple(overrides.items()),
        rotation=settings.rotation,  # the schedule the workers follow (CROWDPULSE_ROTATION_*)
        threads=args.threads,
    )
    sink: FileSink | KafkaSink
    if args.out:
        sink = FileSink(args.out)
    else:
        if not settings.kafka:
            raise ConfigError("set CROWDPULSE_KAFKA (e.g. from `crowdpulse services`) or use --out FILE")
        check_kafka(settings.kafka)
        ensure_topics(settings.kafka, topic_partitions(settings), security=settings.kafka_security.kafka_python_config())
        sink = KafkaSink(settings.kafka, TopicNames(settings.topic_prefix).events, **settings.kafka_security.kafka_python_config())
    stop = threading.Event()
    end_ms = start_ms + int(duration * 1000) if duration < 365 * 86400 else None
    try:
        summary = run_simulation(run, areas, sink, stop, progress=Progress(start_ms, end_ms))
    except KeyboardInterrupt:
        stop.set()
        return 0
    except DeliveryError as exc:
        print(f"crowdpulse simulate: {exc}; stopped after {sink.events:,} events, {sink.undelivered_events:,} of them "
              f"not delivered ({settings.kafka})", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    if summary["undelivered_events"]:
        print(f"crowdpulse simulate: {summary['undelivered_events']:,} of {summary['events']:,} events "
              f"({summary['undelivered_frames']:,} frames) were not delivered: {sink.last_error}", file=sys.stderr)
        return 1
    return 0
