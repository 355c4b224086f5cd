"""`crowdpulse bench --report`: how long the footfall report takes on 8 weeks of 50 areas.

Writes 8 weeks of daily rows for 50 areas (a weekly pattern, day-to-day noise, +8% from week 5
on the target) into the embedded PostgreSQL, then times, side by side: reading one area's rows
(the baseline: the database's share), `crowdpulse report` as a user runs it (a new process:
imports, the read, the statistics, three charts, the HTML), and 50 reports, one per area, in
one process (docs/footfall.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

AREAS = 50
DAYS = 56
START = dt.date(2026, 11, 2)  # a Monday
DAY_OFFSET_S = 4 * 3600
NAMES = ["high-street", "east-district"] + [f"area-{i:02d}" for i in range(AREAS - 2)]


def _rows(seed: int = 3) -> list[Any]:
    from streams.estimate.history import DayRow

    rng = np.random.default_rng(seed)
    weekly = np.array([1.0, 0.97, 1.02, 1.05, 1.15, 1.4, 1.2])
    first = (START - dt.date(1970, 1, 1)).days
    rows = []
    for a, name in enumerate(NAMES):
        level = 2_000 + 150 * a
        for d in range(DAYS):
            lift = 1.08 if name == "high-street" and d >= 28 else 1.0
            visitors = int(level * weekly[d % 7] * lift * np.exp(rng.normal(0, 0.04)))
            rows.append(DayRow(name, first + d, 24, visitors, int(visitors * 0.99), int(visitors * 1.01), int(visitors * 0.43),
                               level / 10, int(level / 4), 6, 45.0, None))
    return rows


async def _seed(url: str, namespace: str) -> None:
    from streams.pipeline.history_store import HistoryStore

    store = HistoryStore(url, namespace)
    try:
        await store.write([], _rows(), DAY_OFFSET_S)
    finally:
        await store.close()


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def report_bench(out: Callable[[str], None]) -> dict[str, float]:
    from streams.pipeline.history_store import read_days
    from streams.runtime.services import EmbeddedServices
    from streams.tools.report import DailyRow, build_report, write_report

    namespace = "bench-report"
    before = (START, START + dt.timedelta(days=27))
    after = (START + dt.timedelta(days=28), START + dt.timedelta(days=DAYS - 1))
    with EmbeddedServices({"CROWDPULSE_KAFKA": "unused:9", "CROWDPULSE_REDIS": "redis://unused:1/0"}, history=True) as services:
        url = services.endpoints.history_db or ""
        asyncio.run(_seed(url, namespace))
        read_s = min(_timed(lambda: read_days(url, namespace, "high-street", before[0], after[1])) for _ in range(3))
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "CROWDPULSE_HISTORY_DB": url, "CROWDPULSE_NAMESPACE": namespace}
            command = [sys.executable, "-m", "streams.cli", "report", "--area", "high-street", "--control", "east-district",
                       "--before", f"{before[0]}..{before[1]}", "--after", f"{after[0]}..{after[1]}", "--out", str(Path(tmp) / "one")]
            done: dict[str, Any] = {}
            cli_s = _timed(lambda: done.update(p=subprocess.run(command, env=env, capture_output=True, text=True, check=True)))
            headline = done["p"].stdout.splitlines()[0]

            def all_areas() -> None:
                control = read_days(url, namespace, "east-district", before[0], after[1])
                for area in (n for n in NAMES if n != "east-district"):
                    rows = read_days(url, namespace, area, before[0], after[1])
                    report = build_report(area, cast("list[DailyRow]", rows), before, after, "east-district",
                                          cast("list[DailyRow]", control))
                    write_report(report, Path(tmp) / area)

            many_s = _timed(all_areas)
    figures = {"read_one_area_s": read_s, "report_command_s": cli_s, "reports_49_areas_s": many_s}
    out(f"footfall report, 8 weeks, {AREAS} areas in PostgreSQL ({AREAS * DAYS:,} daily rows):")
    out(f"  {'read one area (baseline)':40} {read_s * 1000:8.1f} ms")
    out(f"  {'crowdpulse report (new process)':40} {cli_s:8.2f} s   {headline}")
    out(f"  {'49 reports in one process':40} {many_s:8.2f} s   ({many_s / (AREAS - 1):.2f} s each)")
    return figures
