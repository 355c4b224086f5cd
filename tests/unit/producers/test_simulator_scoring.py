"""The evaluation's scoring against known answers: perfect estimates score zero error, a delayed
estimate shows its delay as surge lag, and the scoring rules (threshold, warm-up, naive model)
apply as documented."""

from __future__ import annotations

import numpy as np
import pytest

from producers.scenarios import Episode
from producers.truth import TruthTable
from streams.tools.evaluate.report import format_table
from streams.tools.evaluate.score import score

MIN = 60_000
START = 1_700_000_040_000 // MIN * MIN
T = 180  # minutes


def truth_table() -> TruthTable:
    """A venue that fills from minute 60 to 90 and empties from 140 to 150; a quiet street."""
    minutes = np.arange(T)
    venue = np.interp(minutes, [0, 60, 90, 140, 150, T], [200, 200, 20_000, 20_000, 300, 300]).round()
    street = np.full(T, 500.0)
    people = np.column_stack([venue, street]).astype(np.int64)
    distinct = np.stack([people // 2, people // 3, people // 4], axis=2)  # (T, A, W)
    return TruthTable(["venue", "street"], (300, 900, 3600), START + (minutes + 1) * MIN, people,
                      people // 2, people, distinct)


def estimates_from(truth: TruthTable, people_of, devices_of) -> dict:
    out = {}
    for t, as_of in enumerate(truth.as_of.tolist()):
        for a, area in enumerate(truth.area_ids):
            for i, w in enumerate(truth.windows_s):
                p = int(people_of(t, a, i))
                out[(area, w, as_of)] = {"area": area, "window_s": w, "as_of": as_of, "devices": int(devices_of(t, a, i)),
                                         "people": p, "people_low": int(p * 0.9), "people_high": int(p * 1.1) + 1,
                                         "suppressed": False}
    return out


def test_perfect_estimates_score_zero() -> None:
    truth = truth_table()
    est = estimates_from(truth, lambda t, a, i: truth.people[t, a], lambda t, a, i: truth.distinct[t, a, i])
    episodes = [Episode("fill", START + 40 * MIN, START + 100 * MIN, +1), Episode("empty", START + 130 * MIN, START + 170 * MIN, -1)]
    s = score(truth, est, START, 900, 1000, 15, episodes, "venue")
    assert s["hll_p95_rel_error"] == 0.0 and s["occupancy_mape"] == 0.0 and s["occupancy_bias"] == 0.0
    assert s["range_coverage"] == 1.0 and s["missing_points"] == 0
    assert [e["lag_min"] for e in s["surge_episodes"]] == [0.0, 0.0] and s["surge_lag_min"] == 0.0
    # Only the venue has >= 1,000 people, and only once the 15-minute window lies in the run.
    assert s["worst_area"] == "venue"
    assert s["scored_minutes"] == int(((truth.people[:, 0] >= 1000) & (np.arange(T) >= 14)).sum())
    street = [r for r in s["areas"] if r["area"] == "street"]
    assert all(r["occupancy_minutes"] == 0 and r["occupancy_mape"] is None for r in street)
    # The naive model is the 15-minute window's distinct devices: here people // 3.
    assert s["naive_mape"] == pytest.approx(2 / 3, abs=0.01)
    assert "occupancy_mape 0.0%" in format_table({**s, **_run_facts()})


def test_a_delayed_scaled_estimate_shows_its_delay_and_its_bias() -> None:
    truth = truth_table()
    delay = 7
    est = estimates_from(truth, lambda t, a, i: 0.4 * truth.people[max(t - delay, 0), a],
                         lambda t, a, i: truth.distinct[t, a, i] * 1.01)
    episodes = [Episode("fill", START + 40 * MIN, START + 110 * MIN, +1), Episode("empty", START + 130 * MIN, START + 175 * MIN, -1)]
    s = score(truth, est, START, 900, 1000, 15, episodes, "venue")
    assert [round(e["lag_min"]) for e in s["surge_episodes"]] == [delay, delay]
    assert s["surge_lag_min"] == pytest.approx(delay, abs=0.5)
    # The naive model (the 15-minute window's devices, here undelayed) is scored side by side.
    assert s["naive_surge_lag_min"] == pytest.approx(0, abs=0.5)
    assert s["hll_p95_rel_error"] == pytest.approx(0.01, abs=0.002)
    assert s["occupancy_bias"] < -0.5 and s["range_coverage"] < 0.2


def test_suppressed_and_missing_points_are_not_scored_but_counted() -> None:
    truth = truth_table()
    est = estimates_from(truth, lambda t, a, i: truth.people[t, a], lambda t, a, i: truth.distinct[t, a, i])
    first = int(truth.as_of[0])
    del est[("venue", 900, first)]
    est[("venue", 300, first)] = dict(est[("venue", 300, first)], suppressed=True, devices=None, people=None)
    s = score(truth, est, START, 900, 1000, 15, [], "")
    assert s["missing_points"] == 1 and s["surge_lag_min"] is None
    with pytest.raises(ValueError, match="not one of the published windows"):
        score(truth, est, START, 600)



def test_warming_up_estimates_are_scored_apart_from_the_headline() -> None:
    # Perfect estimates, except during a warm-up in which they are half the truth: the
    # headline is the steady state (perfect), the warm-up is reported on its own.
    truth = truth_table()
    est = estimates_from(truth, lambda t, a, i: truth.people[t, a], lambda t, a, i: truth.distinct[t, a, i])
    warm_until = START + 100 * MIN  # the venue passes 1,000 people within it
    for key, e in est.items():
        if e["as_of"] <= warm_until:
            est[key] = dict(e, people=e["people"] // 2, people_low=e["people"] // 3, people_high=e["people"] // 2 + 1,
                            warming_up=True)
    s = score(truth, est, START, 900, 1000, 15, [], "")
    steady = (truth.people[:, 0] >= 1000) & (np.arange(T) >= 14)
    warm = steady & (truth.as_of <= warm_until)
    assert s["occupancy_mape"] == 0.0 and s["range_coverage"] == 1.0
    assert s["scored_minutes"] == int((steady & ~warm).sum()) and s["warming_minutes"] == int(warm.sum()) > 0
    assert s["warming_mape"] == pytest.approx(0.5, abs=0.01) and s["warming_coverage"] == 0.0
    assert "warming up (not in the figures above)" in format_table({**s, **_run_facts()})

def _run_facts() -> dict:
    return {"scenario": "test", "quick": True, "seed": 1, "start": "a", "end": "b", "simulated_min": T,
            "population": {"people": 1, "visitors": 0, "in-commuters": 0, "visible_devices": 1, "visible_m2m": 0,
                           "devices_all_operators": 1},
            "events": 1, "publish_wall_s": 1.0, "events_in": 1, "counted": 1, "deadletter": 0, "late": 0,
            "points_skipped": 0, "out_dir": "/tmp/x"}
