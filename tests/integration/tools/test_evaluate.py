"""`crowdpulse evaluate --scenario match-day --quick --json`, end to end on the real broker and
Redis: the command runs the scenario through a real worker, reads crowd.occupancy back, scores
it against the simulator's truth, and writes the report and a plot per area.

Occupancy figures are not pinned (the estimation model will change); what is pinned is what
the pipeline guarantees: every event counted, no estimate point skipped or missing, HyperLogLog
within its error, also for the windows spanning the pseudonym-key rotation the run crosses
(rotation is on by default, as in production), and the report's shape. With `--dp` the report
sets the noisy error beside that of the same run without noise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.runtime.services import Endpoints

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
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
    assert 0 < report["shadow_events"] < report["events"] / 2  # the hour before the rotation, again
    assert report["deadletter"] == 0 and report["late"] == 0
    assert report["points_skipped"] == 0 and report["missing_points"] == 0

    # HyperLogLog with 2^14 registers: a standard error of 0.81%.
    assert report["hll_p95_rel_error"] < 0.03 and report["hll_points"] > 5_000
    # The run crosses one rotation (by default at its middle, 15:00): the windows spanning it
    # count every device once, within HLL error (a double count would be up to +100%), and the
    # city's count moves across it no more than elsewhere or than the exact count, give or take
    # HLL error (the same devices hash anew under the new key).
    assert len(report["rotation_at"]) == 1 and report["rotation_at"][0].endswith("T15:00Z")
    assert report["rotation_points"] > 500 and report["other_points"] > 5_000
    assert report["rotation_hll_p95_rel_error"] <= 0.03 and abs(report["rotation_hll_bias"]) < 0.01
    # Even the worst point is far from a double count (one device is 5% of a count of 20).
    assert report["rotation_hll_max_rel_error"] < 0.2
    for jump in report["rotation_jumps"]:
        assert jump["rotation_max_change"] <= max(jump["other_max_change"], jump["exact_rotation_max_change"]) + 0.03, jump
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
    assert "rotation at " in (out_dir / "report.md").read_text()
    areas = load_areas(DEFAULT_AREAS).area_ids
    for area in areas:
        png = out_dir / "plots" / f"{area}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    truth_rows = (out_dir / "truth.jsonl").read_text().splitlines()
    assert len(truth_rows) == round(report["simulated_min"]) * len(areas)


def test_evaluate_dp_reports_the_cost_of_the_noise(endpoints: Endpoints, tmp_path: Path) -> None:
    out_dir = tmp_path / "eval-dp"
    env = dict(os.environ, CROWDPULSE_KAFKA=endpoints.kafka, CROWDPULSE_REDIS=endpoints.redis_url,
               PYTHONPATH=str(REPO))
    for name in ("CROWDPULSE_AREAS", "CROWDPULSE_DP_DAILY_BUDGET", "CROWDPULSE_DP_SECRET"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "evaluate", "--scenario", "steady", "--quick", "--dp", "0.1", "--json",
         "--out-dir", str(out_dir)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=170,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    dp = report["dp"]
    assert dp["epsilon"] == 0.1 and dp["sensitivity"] == 2 and dp["daily_budget"] == pytest.approx(864)
    # The same run without noise was made first (its own report) and is the comparison.
    plain = json.loads((out_dir / "without-noise" / "report.json").read_text())
    assert "dp" not in plain and plain["events"] == report["events"]
    assert dp["points"] > 0.9 * plain["hll_points"]
    assert dp["hll_p95_rel_error"] < 0.03  # HLL alone
    # Noise of scale 2 / 0.1 = 20 devices: small against thousands, large against tens.
    assert dp["noise_90"] == 46
    assert dp["dp_p95_rel_error"] > 3 * dp["hll_p95_rel_error"] and dp["dp_p50_rel_error"] > dp["hll_p50_rel_error"]
    assert dp["large_points"] > 100 and dp["large_dp_p95_rel_error"] < 0.1
    # The default budget lets the quick run publish every point: each release was noisy.
    assert dp["released_messages"] >= dp["points"] and dp["withheld_messages"] == 0 == dp["withheld_points"]
    assert "differential privacy: epsilon 0.1" in (out_dir / "report.md").read_text()
