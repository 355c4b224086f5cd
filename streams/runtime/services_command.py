"""`crowdpulse services`: start the embedded broker and Redis, print their env lines, wait."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "start the embedded broker, Redis and PostgreSQL (footfall history), print their env lines, wait"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The environment says which services to start (unset: embedded)."""
    p.add_argument("--data-dir", type=Path,
                   help="keep Redis' data (AOF) and PostgreSQL's footfall history here and reuse them at the next start "
                        "with the same directory (default: nothing kept); the embedded broker keeps topics in memory "
                        "either way; as root, PostgreSQL runs as 'nobody', which must be able to reach the directory")


def run(args: argparse.Namespace) -> int:
    from streams.runtime.services import serve_forever

    return serve_forever(data_dir=args.data_dir)
