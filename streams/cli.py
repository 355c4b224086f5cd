"""The `crowdpulse` command: parses the command line and hands it to one command module.

Each command is a module with `HELP`, `add_arguments(parser)` and `run(args) -> int`, imported
only to build the parser (cheap: heavy imports wait for `run`). A ConfigError (bad settings,
arguments or input files) is printed as one line and exits 2; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from streams.core.errors import ConfigError

ENV_HELP = (
    "environment: CROWDPULSE_KAFKA (bootstrap servers; unset: start the embedded broker), "
    "CROWDPULSE_REDIS (redis:// URL; unset: start embedded Redis), CROWDPULSE_AREAS (areas file), "
    "CROWDPULSE_HTTP_PORT (HTTP port, default 6066)"
)
#: Command name -> the module that implements it, in the order --help lists them.
COMMANDS = {
    "services": "streams.runtime.services_command",
    "worker": "streams.runtime.worker",
    "simulate": "streams.tools.simulate",
    "publish": "streams.tools.publish",
    "demo": "streams.tools.demo",
    "evaluate": "streams.tools.evaluate.command",
    "calibrate": "streams.tools.calibrate",
    "report": "streams.tools.report_command",
    "bench": "streams.tools.bench.command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crowdpulse",
        description="Streaming, real-time crowd estimation: services, worker, simulate, publish, demo, evaluate, calibrate, report, bench.",
        epilog=ENV_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=ENV_HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python narrates every connection at INFO; its warnings are what matter here.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        return int(args.run(args))
    except ConfigError as exc:  # the user can fix it: one line, no traceback
        print(f"crowdpulse: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
