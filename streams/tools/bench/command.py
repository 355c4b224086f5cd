"""`crowdpulse bench`: the side-by-side throughput and latency benchmark (docs/performance.md)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from streams.core.errors import ConfigError

HELP = "side-by-side throughput/latency benchmark (docs/performance.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smaller data sets, one repeat: under two minutes")
    p.add_argument("--smoke", action="store_true",
                   help="tiny data sets: checks that every section runs (the suite uses it); figures not meaningful")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as one JSON object")
    p.add_argument("--repeats", type=int, help="repeats of each throughput run (default: 1 with --quick, else 3)")
    p.add_argument("--soak", type=float, metavar="MINUTES",
                   help="instead: a steady load for MINUTES, one line a minute (memory, lag, delay; docs/performance.md)")
    p.add_argument("--report", action="store_true",
                   help="instead: time the footfall report on 8 weeks of 50 areas in PostgreSQL (docs/footfall.md)")
    p.add_argument("--devices", type=int, default=100_000, help="with --soak: simulated devices (default 100,000)")
    p.add_argument("--speedup", type=float, default=60.0, help="with --soak: simulated seconds per wall second (default 60)")


def run(args: argparse.Namespace) -> int:
    from streams.tools.bench.bench import run_bench
    from streams.tools.bench.config import FULL, QUICK, SMOKE

    if args.report:
        from streams.tools.bench.report_bench import report_bench

        logging.getLogger().setLevel(logging.WARNING)
        figures = report_bench(out=lambda line: print(line, flush=True))
        if args.json:
            args.json.write_text(json.dumps(figures))
        return 0
    if args.soak is not None:
        from streams.tools.bench.soak import soak

        if not 1 <= args.soak < float("inf") or args.devices <= 0 or not 0 < args.speedup < float("inf"):
            raise ConfigError("--soak needs at least 1 minute, --devices and --speedup positive")
        logging.getLogger().setLevel(logging.WARNING)
        summary = soak(args.soak, args.devices, args.speedup, out=lambda line: print(line, flush=True))
        if args.json:
            args.json.write_text(json.dumps(summary))
        return 0
    config = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats <= 0:
            raise ConfigError("--repeats must be positive")
        config = replace(config, repeats=args.repeats)
    logging.getLogger().setLevel(logging.WARNING)  # the bench prints its own progress
    run_bench(config, args.json, out=lambda line: print(line, flush=True))
    return 0
