"""`crowdpulse report`: did an area gain visitors after a change (free parking, a new station)?
Reads the daily footfall history from PostgreSQL (CROWDPULSE_HISTORY_DB), compares an after
period with a before period, optionally against a control area (difference in differences),
and writes report.html (charts embedded), daily.csv and the charts (streams/tools/report.py).
docs/footfall.md."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any, cast

from streams.core.errors import ConfigError

HELP = "report the change in daily visitors and mean occupancy of an area between two periods (HTML, PNG, CSV)"
#: A day with fewer summarised hours (the stream began or stopped in it) is left out.
WHOLE_DAY_HOURS = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--area", required=True, help="the area to report on (an id of the areas file)")
    parser.add_argument("--before", required=True, metavar="FROM..TO", help="the before period, days inclusive: 2026-11-02..2026-11-29")
    parser.add_argument("--after", required=True, metavar="FROM..TO", help="the after period, days inclusive")
    parser.add_argument("--control", metavar="AREA", help="a comparable area the change did not touch (difference in differences)")
    parser.add_argument("--out", type=Path, help="folder for report.html, daily.csv and the charts (default: report-AREA)")
    parser.add_argument("--db", help="PostgreSQL URL of the history (default: CROWDPULSE_HISTORY_DB)")


def parse_period(text: str, name: str) -> tuple[dt.date, dt.date]:
    first, sep, last = text.partition("..")
    try:
        if not sep:
            raise ValueError
        period = dt.date.fromisoformat(first.strip()), dt.date.fromisoformat(last.strip())
    except ValueError:
        raise ConfigError(f"--{name} {text!r}: give two days as FROM..TO, e.g. 2026-11-02..2026-11-29") from None
    if period[0] > period[1]:
        raise ConfigError(f"--{name} {text!r}: FROM is after TO")
    return period


def usable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the report reads them: a day the stream did not cover whole is withheld,
    with that reason, like a day below the privacy threshold."""
    out = []
    for row in rows:
        if row["hours"] < WHOLE_DAY_HOURS and row["withheld"] is None:
            row = {**row, "withheld": f"partial day ({row['hours']} of 24 hours)"}
        out.append(row)
    return out


def check_rows(area: str, rows: list[dict[str, Any]], period: tuple[dt.date, dt.date], name: str) -> None:
    """A clear error for a period without any published day of the area."""
    inside = [r for r in rows if period[0].isoformat() <= r["day"] <= period[1].isoformat()]
    span = f"{period[0]}..{period[1]}"
    if not inside:
        raise ConfigError(f"no daily history of {area} in the {name} period {span}: the history does not reach "
                          "that far (or was deleted by its retention)")
    if all(r["withheld"] is not None for r in inside):
        reasons = sorted({r["withheld"] for r in inside})
        raise ConfigError(f"every day of {area} in the {name} period {span} is withheld ({', '.join(reasons)}): "
                          "below the privacy threshold, the area cannot be reported on")


def run(args: argparse.Namespace) -> int:
    import psycopg

    from streams.core.areas import load_areas
    from streams.core.settings import Settings
    from streams.pipeline.history_store import read_days
    from streams.tools.report import DailyRow, build_report, write_report

    started = time.perf_counter()
    settings = Settings.from_env()
    url = args.db or os.environ.get("CROWDPULSE_HISTORY_DB")
    if not url:
        raise ConfigError("no history database: set CROWDPULSE_HISTORY_DB (or --db) to the PostgreSQL the workers write")
    known = load_areas(settings.areas_path).area_by_id
    for area in (args.area, args.control):
        if area is not None and area not in known:
            raise ConfigError(f"unknown area {area!r} (areas: {', '.join(sorted(known))})")
    if args.control == args.area:
        raise ConfigError("--control must be another area than --area")
    before, after = parse_period(args.before, "before"), parse_period(args.after, "after")
    first, last = min(before[0], after[0]), max(before[1], after[1])
    try:
        rows = usable(read_days(url, settings.namespace, args.area, first, last))
        control_rows = usable(read_days(url, settings.namespace, args.control, first, last)) if args.control else None
    except psycopg.Error as exc:  # the database is away or refuses
        raise ConfigError(f"the history database did not answer: {type(exc).__name__}: {str(exc).strip()[:200]}") from None
    for area, area_rows in ((args.area, rows), (args.control, control_rows)):
        if area is not None and area_rows is not None:
            check_rows(area, area_rows, before, "before")
            check_rows(area, area_rows, after, "after")
    report = build_report(args.area, cast("list[DailyRow]", rows), before, after, args.control,
                          cast("list[DailyRow] | None", control_rows))
    out = args.out or Path(f"report-{args.area}")
    written = write_report(report, out)
    print(report.headline + ".")
    if report.occupancy is not None:
        o = report.occupancy
        print(f"Mean occupancy: {100 * o.change:+.1f}% (90% interval {100 * o.low:+.1f}% to {100 * o.high:+.1f}%).")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"Wrote {', '.join(str(p) for p in written)} in {time.perf_counter() - started:.1f} s.")
    return 0
