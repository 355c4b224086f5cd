"""The `crowdpulse` command: services, worker, simulate, demo, evaluate, calibrate and bench. Settings are read here, once."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from .settings import Settings
from .topics import TopicNames

log = logging.getLogger("crowdpulse")

ENV_HELP = (
    "environment: CROWDPULSE_KAFKA (bootstrap servers; unset: start the embedded broker), "
    "CROWDPULSE_REDIS (redis:// URL; unset: start embedded Redis), CROWDPULSE_AREAS (areas file), "
    "CROWDPULSE_HTTP_PORT (HTTP port, default 6066)"
)
# Simulated runs written to a file start at their scenario's own start (producers/scenarios.py;
# `steady`: 2026-01-05T06:00:00Z) unless --start is given, so the same seed gives the same bytes
# (live runs start at the wall clock).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdpulse", description=__doc__, epilog=ENV_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("services", help="start the embedded broker and Redis, print their env lines, wait", epilog=ENV_HELP)

    p = sub.add_parser("worker", help="one stream worker (Faust); run several for scale-out", epilog=ENV_HELP)
    p.add_argument("--http-port", type=int, help="HTTP port (env CROWDPULSE_HTTP_PORT, default 6066)")
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])

    p = sub.add_parser("simulate", help="publish simulated network events", epilog=ENV_HELP)
    _simulation_args(p)
    p.add_argument("--truth", type=Path, help="write the exact distinct devices per area/window (JSON lines)")
    p.add_argument("--out", type=Path, help="write frames to this file instead of Kafka, as fast as possible")
    p.add_argument("--start", help="simulated start time, ISO 8601 UTC (default: now; with --out the scenario's own start)")

    p = sub.add_parser("demo", help="services + worker + simulator + live table, until Ctrl-C or --duration", epilog=ENV_HELP)
    _simulation_args(p, default_speedup=60.0, default_devices=100_000)

    p = sub.add_parser("evaluate", help="run a scenario through the real pipeline and score it against ground truth", epilog=ENV_HELP)
    _evaluate_args(p)

    p = sub.add_parser("calibrate", help="build the visibility model's table from simulator runs (docs/estimation.md)", epilog=ENV_HELP)
    from .calibrate import add_arguments as _calibrate_args

    _calibrate_args(p)

    p = sub.add_parser("bench", help="side-by-side throughput/latency benchmark (docs/performance.md)", epilog=ENV_HELP)
    p.add_argument("--quick", action="store_true", help="smaller data sets, one repeat: under two minutes")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as one JSON object")
    p.add_argument("--repeats", type=int, help="repeats of each throughput run (default: 1 with --quick, else 3)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python narrates every connection at INFO; its warnings are what matter here.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        if args.command == "services":
            from .services import serve_forever

            return serve_forever()
        if args.command == "worker":
            return run_worker(args)
        if args.command == "simulate":
            return run_simulate(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
        if args.command == "bench":
            return run_bench_command(args)
        if args.command == "calibrate":
            from .calibrate import run_calibrate_command

            return run_calibrate_command(args)
        if args.command == "evaluate":
            from .evaluate import run_evaluate_command

            return run_evaluate_command(args)
    except ValueError as exc:  # bad configuration or arguments: a clear message, no traceback
        print(f"crowdpulse: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _simulation_args(p: argparse.ArgumentParser, default_speedup: float = 60.0, default_devices: int = 20_000) -> None:
    from producers.scenarios import SCENARIOS

    p.add_argument("--scenario", default="steady", choices=list(SCENARIOS), help="scenario (default steady; docs/simulator.md)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="override a scenario/population/signalling parameter, e.g. --set uplift_pct=30 (repeatable)")
    p.add_argument("--devices", type=int, default=default_devices, help=f"simulated devices (default {default_devices})")
    p.add_argument("--speedup", type=float, default=default_speedup,
                   help=f"simulated seconds per wall second; 0 = as fast as possible (default {default_speedup:g})")
    p.add_argument("--duration", type=float, default=None, help="stop after this many wall seconds (with --out: simulated seconds, default the scenario's)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="generate in this many threads (shards of the population; default 1). One thread gives a "
                        "seed's events exactly as before; more give another realisation of the same model, faster")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    from producers.scenarios import SCENARIOS

    p.add_argument("--scenario", default="match-day", choices=list(SCENARIOS), help="scenario (default match-day)")
    p.add_argument("--quick", action="store_true", help="a small, short run for CI (well under two minutes)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out-dir", type=Path, help="where the plots and report go (default: a new temporary directory)")
    p.add_argument("--devices", type=int, help="operator devices of the residents (default: the scenario's, smaller with --quick)")
    p.add_argument("--duration", type=float, help="simulated seconds (default: the scenario's)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="override a scenario/population/signalling parameter (repeatable; docs/simulator.md)")
    p.add_argument("--pace", type=float,
                   help="at most this many simulated seconds per wall second (default 3600: an hour a second)")
    p.add_argument("--window", type=int, default=900, help="the window whose estimates the headline figures score (default 900)")
    p.add_argument("--rotate-at", type=clock_seconds, metavar="HH:MM",
                   help="UTC time of day (stream time) at which the pseudonym key rotates; default: the middle of the run, "
                        "so that every evaluation crosses a rotation (period and overlap: env CROWDPULSE_ROTATION_PERIOD_S, "
                        "_OVERLAP_S; period 0 turns rotation off)")
    p.add_argument("--dp", type=float, metavar="EPSILON",
                   help="also run with differential privacy, epsilon per release, and report the accuracy cost against the "
                        "run without noise (env CROWDPULSE_DP_DAILY_BUDGET, _SENSITIVITY, _SECRET; docs/privacy.md)")


def run_worker(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from .app import create_app
    from .services import EmbeddedServices, ensure_topics

    settings = Settings.from_env(http_port=args.http_port)
    services = EmbeddedServices(os.environ)
    try:
        endpoints = services.start()
        if services.processes:
            print("\n".join(endpoints.env_lines()), flush=True)
        settings = settings.with_endpoints(endpoints.kafka, endpoints.redis_url)
        ensure_topics(endpoints.kafka, topic_partitions(settings), security=settings.kafka_security.kafka_python_config())
        app = create_app(settings)
        worker = Worker(app, loglevel=args.loglevel, quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    finally:
        services.stop()


def run_bench_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .bench import FULL, QUICK, run_bench

    config = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats <= 0:
            raise ValueError("--repeats must be positive")
        config = replace(config, repeats=args.repeats)
    logging.getLogger().setLevel(logging.WARNING)  # the bench prints its own progress
    run_bench(config, args.json, out=lambda line: print(line, flush=True))
    return 0


def topic_partitions(settings: Settings) -> dict[str, int]:
    names = TopicNames(settings.topic_prefix)
    return {name: settings.partitions for name in names.all()}


def clock_seconds(text: str) -> int:
    """"HH:MM" (a UTC time of day) to seconds after midnight."""
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return int(hours) * 3600 + int(minutes) * 60


def parse_time(text: str) -> int:
    """ISO 8601 (UTC if no offset is given) to epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--start {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def run_simulate(args: argparse.Namespace) -> int:
    from producers.publisher import FileSink, KafkaSink
    from producers.scenarios import configure, parse_overrides
    from producers.simulate import Progress, SimulationRun, run_simulation

    from .areas import load_areas
    from .services import ensure_topics

    settings = Settings.from_env()
    areas = load_areas(settings.areas_path)
    if args.devices <= 0:
        raise ValueError("--devices must be positive")
    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
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
    if args.out:
        sink = FileSink(args.out)
    else:
        if not settings.kafka:
            raise ValueError("set CROWDPULSE_KAFKA (e.g. from `crowdpulse services`) or use --out FILE")
        ensure_topics(settings.kafka, topic_partitions(settings), security=settings.kafka_security.kafka_python_config())
        sink = KafkaSink(settings.kafka, TopicNames(settings.topic_prefix).events, **settings.kafka_security.kafka_python_config())
    stop = threading.Event()
    end_ms = start_ms + int(duration * 1000) if duration < 365 * 86400 else None
    try:
        summary = run_simulation(run, areas, sink, stop, progress=Progress(start_ms, end_ms))
    except KeyboardInterrupt:
        stop.set()
        return 0
    print(json.dumps(summary), flush=True)
    return 0


def http_json(url: str, timeout: float = 2.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


if __name__ == "__main__":
    sys.exit(main())
