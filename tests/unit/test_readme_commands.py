"""The README's command table and `crowdpulse --help` agree: every command has a row, and every
flag a row shows is one the command takes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from streams.cli import COMMANDS, build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
ROW = re.compile(r"^\| `crowdpulse ([a-z]+)([^`]*)` \|", re.MULTILINE)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_row_and_every_flag_shown_exists() -> None:
    rows = ROW.findall(README)
    assert {name for name, _ in rows} == set(COMMANDS)
    parsers = subparsers()
    for name, usage in rows:
        known = {o for a in parsers[name]._actions for o in a.option_strings}
        shown = set(re.findall(r"--[a-z][a-z-]*", usage))
        assert shown <= known, f"README shows crowdpulse {name} {sorted(shown - known)}, which --help does not know"
