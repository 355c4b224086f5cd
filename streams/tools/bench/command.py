"""`crowdpulse bench`: the side-by-side throughput and latency benchmark (docs/performance.md)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from streams.core.errors import ConfigError

HELP = "side-by-side throughput/latency benchmark (docs/performance.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smaller data sets, one repeat: under two minutes")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as one JSON object")
    p.add_argument("--repeats", type=int, help="repeats of each throughput run (default: 1 with --quick, else 3)")


def run(args: argparse.Namespace) -> int:
    from streams.tools.bench.bench import run_bench
    from streams.tools.bench.config import FULL, QUICK

    config = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats <= 0:
            raise ConfigError("--repeats must be positive")
        config = replace(config, repeats=args.repeats)
    logging.getLogger().setLevel(logging.WARNING)  # the bench prints its own progress
    run_bench(config, args.json, out=lambda line: print(line, flush=True))
    return 0
