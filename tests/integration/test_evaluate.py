"""`crowdpulse evaluate --scenario match-day --quick --json`, end to end on the real broker and
Redis: the command runs the scenario through a real worker, reads crowd.occupancy back, scores
it against the simulator's truth, and writes the report and a plot per area.

Occupancy figures are not pinned (the estimation model will change); what is pinned is what
the pipeline guarantees: every event counted, no estimate point skipped or missing, HyperLogLog
within its error, and the report's shape.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.areas import load_areas
from streams.services import Endpoints
from streams.settings import DEFAULT_AREAS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEYS = ("scenario", "hll_p95_rel_error", "occupancy_mape", "naive_mape", "surge_lag_min", "range_coverage")


def test_evaluate_quick_match_day(endpoints: Endpoints, tmp_path: Path) -> None:
    out_dir = tmp_path / "eval"
    env = dict(os.environ, CROWDPULSE_KAFKA=endpoints.kafka, CROWDPULSE_REDIS=endpoints.redis_url,
               PYTHONPATH=str(REPO))
    env.pop("CROWDPULSE_AREAS", None)
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "evaluate", "--scenario", "match-day", "--quick", "--json",
         "--out-dir", str(out_dir)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=170,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)  # --json: exactly one JSON object on stdout
    assert all(key in report for key in KEYS)
    assert report["scenario"] == "match-day" and report["quick"] is True

    # The pipeline took in every event and published a point for every area, window and minute.
    assert report["events"] > 50_000
    assert report["events_in"] == report["events"] == report["counted"]
    assert report["deadletter"] == 0 and report["late"] == 0
    assert report["points_skipped"] == 0 and report["missing_points"] == 0

    # HyperLogLog with 2^14 registers: a standard error of 0.81%.
    assert report["hll_p95_rel_error"] < 0.03 and report["hll_points"] > 5_000
    # The stadium fills past the 1,000-people threshold and is scored; the figures are numbers.
    stadium = [r for r in report["areas"] if r["area"] == "stadium" and r["window_s"] == 900][0]
    assert stadium["occupancy_minutes"] > 100 and report["scored_minutes"] > 500
    for key in ("occupancy_mape", "naive_mape", "range_coverage"):
        assert isinstance(report[key], float) and math.isfinite(report[key]) and report[key] >= 0
    assert report["range_coverage"] <= 1
    # people = distinct devices in 15 minutes misses the two thirds of people the operator never hears.
    assert report["naive_mape"] > 0.3
    assert [e["episode"] for e in report["surge_episodes"]] == ["fill", "empty"]
    assert all(e["lag_min"] is not None and abs(e["lag_min"]) < 30 for e in report["surge_episodes"])
    assert report["surge_lag_min"] is not None and abs(report["surge_lag_min"]) < 30

    # The report, the truth and one PNG per area are in the output directory.
    assert json.loads((out_dir / "report.json").read_text()) == report
    assert "headline (900s window)" in (out_dir / "report.md").read_text()
    areas = load_areas(DEFAULT_AREAS).area_ids
    for area in areas:
        png = out_dir / "plots" / f"{area}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    truth_rows = (out_dir / "truth.jsonl").read_text().splitlines()
    assert len(truth_rows) == round(report["simulated_min"]) * len(areas)
