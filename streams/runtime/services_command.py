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
    p.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                   help="a Redis Cluster of N masters (slots split evenly) instead of one Redis; CROWDPULSE_REDIS "
                        "is printed as redis+cluster://host:port,... (docs/operations.md)")


def run(args: argparse.Namespace) -> int:
    from streams.core.errors import ConfigError
    from streams.runtime.services import serve_forever

    if args.redis_cluster < 0 or args.redis_cluster in (1, 2):
        raise ConfigError("--redis-cluster needs at least 3 masters (Redis Cluster's minimum), or 0 for one Redis")
    if args.redis_cluster and args.data_dir is not None:
        raise ConfigError("--data-dir keeps one Redis' data; the embedded Redis Cluster keeps nothing")
    return serve_forever(data_dir=args.data_dir, redis_cluster=args.redis_cluster)
