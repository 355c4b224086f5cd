"""`crowdpulse services`: start the embedded broker and Redis, print their env lines, wait."""

from __future__ import annotations

import argparse

HELP = "start the embedded broker and Redis, print their env lines, wait"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: the environment says which services to start (unset: embedded)."""


def run(args: argparse.Namespace) -> int:
    from streams.runtime.services import serve_forever

    return serve_forever()
