"""`crowdpulse report` as a user runs it, on the session's real PostgreSQL: the files it writes
and the one-line errors for an unknown area, a period the history does not reach, and an area
withheld below the privacy threshold."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streams.estimate.history import DayRow
from streams.pipeline.history_store import HistoryStore

from ..conftest import REPO

pytestmark = pytest.mark.integration
FIRST = 20_394  # 2025-11-03, a Monday


def rows() -> list[DayRow]:
    """Four weeks of the high street (+10% from week 3) and the east district, and a stadium
    whose every day is withheld."""
    rng = np.random.default_rng(1)
    out = []
    for d in range(28):
        weekday = 1.3 if d % 7 == 5 else 1.0
        for area, base, lift in (("high-street", 2000, 1.10 if d >= 14 else 1.0), ("east-district", 5000, 1.0)):
            v = int(base * weekday * lift * np.exp(rng.normal(0, 0.02)))
            out.append(DayRow(area, FIRST + d, 24, v, v - 20, v + 20, int(v * 0.43), v / 12, v // 5, 6, 50.0, None))
        out.append(DayRow("stadium", FIRST + d, 24, None, None, None, None, 3.0, 9, 20, None, "below_min_count"))
    return out


def report(db: str, namespace: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CROWDPULSE_HISTORY_DB": db, "CROWDPULSE_NAMESPACE": namespace,
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "streams.cli", "report", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_report_writes_its_files_and_says_clearly_what_it_cannot_do(endpoints, tmp_path: Path) -> None:
    namespace = "report-cli"

    async def seed() -> None:
        store = HistoryStore(endpoints.history_db, namespace)
        try:
            await store.write([], rows(), 4 * 3600)
        finally:
            await store.close()

    asyncio.run(seed())
    periods = ("--before", "2025-11-03..2025-11-16", "--after", "2025-11-17..2025-11-30")
    done = report(endpoints.history_db, namespace, "--area", "high-street", "--control", "east-district", *periods, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Daily visitors to high-street rose by ")
    change = float(done.stdout.split("rose by ")[1].split("%")[0])
    assert 7.0 < change < 13.0, done.stdout  # the seeded +10%
    folder = tmp_path / "report-high-street"
    assert {p.name for p in folder.iterdir()} >= {"report.html", "daily.csv", "daily.png", "weekdays.png", "before_after.png"}
    assert "data:image/png;base64," in (folder / "report.html").read_text()
    assert len((folder / "daily.csv").read_text().splitlines()) == 1 + 28

    failures = {
        "unknown area": (("--area", "nowhere", *periods), "unknown area 'nowhere'"),
        "no history there": (("--area", "high-street", "--before", "2024-01-01..2024-01-14", "--after", periods[3]),
                             "no daily history of high-street in the before period"),
        "withheld": (("--area", "stadium", *periods), "every day of stadium in the before period 2025-11-03..2025-11-16 is withheld"),
        "bad period": (("--area", "high-street", "--before", "last month", "--after", periods[3]), "give two days as FROM..TO"),
        "same control": (("--area", "high-street", "--control", "high-street", *periods), "--control must be another area"),
    }
    for name, (args, message) in failures.items():
        done = report(endpoints.history_db, namespace, *args, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
