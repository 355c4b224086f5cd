"""`crowdpulse evaluate`: run a scenario through the real pipeline and score it against ground
truth (beside this module: the run in run.py, the scoring in score.py, the plots in plots.py,
the table and report files in report.py, the options in options.py)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from streams.core.clock import clock_seconds
from streams.core.errors import ConfigError

HELP = "run a scenario through the real pipeline and score it against ground truth"


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--matrix", action="store_true",
                   help="instead of one run: the people model on variants no calibration used (timers, chattiness, "
                        "population, a venue alone, crowd speed, a wrong market share, another city, another kind of event, "
                        "another venue); one to two minutes on two cores (docs/estimation.md)")
    p.add_argument("--variant", action="append", metavar="NAME", help="with --matrix: only these variants (repeatable)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="with --matrix: each variant on N seeds (default 1; each adds about as long again), scored on their points together and "
                        "each seed alone: whether a figure is the variant's or one seed's luck")
    p.add_argument("--footfall", action="store_true",
                   help="instead of one run: weeks of the free-parking scenario through the pipeline, the footfall report's "
                        "uplift against the causal truth (4 weeks before and 4 after, about 40 minutes; --quick: 2 and 2, "
                        "3,000 devices; docs/footfall.md)")
    p.add_argument("--weeks", type=int, help="with --footfall: weeks before and after the intervention (each)")


def run(args: argparse.Namespace) -> int:
    if args.footfall:
        from producers.scenarios import parse_overrides
        from streams.tools.evaluate.footfall import evaluate_footfall, format_footfall

        result = evaluate_footfall(args.quick, args.devices, args.seed, parse_overrides(args.set), args.weeks, args.out_dir)
        print(json.dumps(result) if args.json else format_footfall(result), flush=True)
        return 0
    if args.seeds != 1 and not args.matrix:
        raise ConfigError("--seeds goes with --matrix (one evaluation run takes one --seed)")
    if args.matrix:
        from streams.tools.evaluate.matrix import matrix_command

        if args.seeds < 1:
            raise ConfigError("--seeds takes a number of seeds, 1 or more")

        return matrix_command(args.quick, args.json, args.variant, args.seeds)
    from producers.scenarios import parse_overrides
    from streams.tools.evaluate.options import EvalOptions
    from streams.tools.evaluate.report import format_table
    from streams.tools.evaluate.run import evaluate, evaluate_dp

    options = EvalOptions(
        scenario=args.scenario, quick=args.quick, devices=args.devices, duration_s=args.duration, seed=args.seed,
        overrides=tuple(parse_overrides(args.set).items()), pace=args.pace, window_s=args.window,
        out_dir=args.out_dir, rotate_at_s=args.rotate_at, dp_epsilon=args.dp,
    )
    if args.json:
        logging.getLogger().setLevel(logging.WARNING)
    report = evaluate(options) if options.dp_epsilon is None else evaluate_dp(options)
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(format_table(report), flush=True)
    return 0
