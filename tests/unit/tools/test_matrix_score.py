"""The robustness matrix's scoring (`crowdpulse evaluate --matrix`): which points are scored, the
figures the issue's targets are read from, and a variant on several seeds (`--seeds`): their
points together and each seed alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pytest

from streams.cli import main
from streams.core.areas import Area, AreaMap, Cell
from streams.estimate.estimator import EstimateRange, PeopleModel
from streams.estimate.visibility import CURVE_LENGTH, N5, N15, N60
from streams.tools.calibrate import HELD_OUT_RUNS, TABLE_RUNS
from streams.tools.evaluate.matrix import (
    MIN_PEOPLE,
    VARIANTS,
    WARMUP_MIN,
    format_matrix,
    pooled,
    score_points,
    seed_runs,
    targets_missed,
    variant_points,
)


def _points(truth: list[float], people: list[float], low: list[float], high: list[float], levels: list[str],
            capacity: float = 10_000.0, n60: float = 2_000.0, naive: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> dict:
    n = len(truth)
    return {"area": np.zeros(n, dtype=int), "truth": np.array(truth), "people": np.array(people), "low": np.array(low),
            "high": np.array(high), "level": np.array(levels), "n60": np.full(n, n60), "naive": np.tile(naive, (n, 1)),
            "capacity": np.full(n, capacity)}


def test_the_figures_are_read_from_the_points() -> None:
    # Four points of an area of capacity 10,000: 10% high and inside a x1.2 range; 20% low and
    # outside it; 10% high, a x4 range, called critical at 70% of capacity (a false alarm); 5% low,
    # ok at 96% of capacity (a missed one).
    points = _points(truth=[1_000, 5_000, 7_000, 9_600], people=[1_100, 4_000, 7_700, 9_120],
                     low=[1_000, 3_800, 3_000, 9_000], high=[1_200, 4_400, 12_000, 9_300],
                     levels=["ok", "ok", "critical", "ok"], naive=(500.0, 1_000.0, 2_000.0))
    s = score_points(points, ["stadium"])
    assert s["points"] == 4
    assert s["mape"] == pytest.approx((0.1 + 0.2 + 0.1 + 0.05) / 4)
    assert s["bias"] == pytest.approx((0.1 - 0.2 + 0.1 - 0.05) / 4)
    assert s["coverage"] == pytest.approx(0.5)
    assert s["width_over_3"] == 1 and s["width_max_1000"] == pytest.approx(4.0)
    assert s["false_critical"] == 1 and s["missed_critical"] == 1 and s["true_critical"] == 1
    # A fixed window's people against the same truths: 500 everywhere.
    assert s["naive_5min_mape"] == pytest.approx(np.mean(np.abs(500 - np.array([1_000, 5_000, 7_000, 9_600])) /
                                                         np.array([1_000, 5_000, 7_000, 9_600])))
    assert s["best_naive_mape"] == min(s["naive_5min_mape"], s["naive_15min_mape"], s["naive_60min_mape"])
    assert s["by_area"]["stadium"]["points"] == 4


def test_the_width_target_counts_only_hours_with_enough_phones() -> None:
    points = _points(truth=[1_000], people=[1_000], low=[400], high=[4_000], levels=["ok"], n60=999.0)
    s = score_points(points, ["stadium"])
    assert s["width_over_3"] == 0 and np.isnan(s["width_max_1000"]) and s["width_median"] == pytest.approx(10.0)


def test_seeds_pooled_score_every_point_once() -> None:
    one = _points(truth=[1_000, 2_000], people=[1_100, 2_000], low=[900, 1_900], high=[1_200, 2_100], levels=["ok", "ok"])
    two = _points(truth=[1_000], people=[1_500], low=[1_400], high=[1_600], levels=["ok"])
    both = score_points(pooled([one, two]), ["stadium"])
    assert both["points"] == 3
    assert both["mape"] == pytest.approx((0.1 + 0.0 + 0.5) / 3)
    assert both["coverage"] == pytest.approx(2 / 3)
    assert score_points(one, ["stadium"])["coverage"] == 1.0 and score_points(two, ["stadium"])["coverage"] == 0.0


@dataclass
class _Model:
    """The part of PeopleModel the scoring reads: each area's share and its estimates (here, its
    15-minute count scaled by share, within +-10%)."""

    share: dict[str, float]

    def estimate(self, curves: dict[str, np.ndarray]) -> dict[str, EstimateRange]:
        out = {}
        for a, c in curves.items():
            people = c[N15] / self.share[a]
            out[a] = EstimateRange(int(people), int(0.9 * people), int(1.1 * people))
        return out


def test_only_points_after_the_first_hour_with_enough_people_and_a_count_are_scored() -> None:
    cells = [Cell(1, 0.0, 0.0, 500.0), Cell(2, 1_000.0, 0.0, 500.0)]
    areas = AreaMap("test", cells, [Area("city", "City", 100_000, (1, 2)), Area("stadium", "Stadium", 1_000, (2,))])
    minutes = WARMUP_MIN + 10
    curves = np.zeros((minutes, 2, CURVE_LENGTH))
    curves[:, :, N5], curves[:, :, N15], curves[:, :, N60] = 50.0, 100.0, 400.0
    people = np.full((minutes, 2), 500.0)
    people[WARMUP_MIN + 3, 0] = MIN_PEOPLE - 1  # too few people there: not scored
    curves[WARMUP_MIN + 4, 0, N15] = 0.0  # no phone in its 15 minutes: nothing to score
    # The curves in their own order (the stadium first), not the areas file's.
    data = {"curves": curves, "people": people, "area_ids": ["stadium", "city"]}
    points = variant_points(data, areas, cast(PeopleModel, _Model({"city": 0.5, "stadium": 0.25})), sims=1.0)
    # 10 minutes of two areas, less the two points above.
    assert len(points["truth"]) == 18
    city, stadium = points["area"] == 0, points["area"] == 1
    assert city.sum() == 10 and stadium.sum() == 8
    # Each area read with its own share and curve (the data's order is not the areas file's).
    assert set(points["people"][city]) == {200} and set(points["people"][stadium]) == {400}
    assert set(points["capacity"][stadium]) == {1_000}
    # The fixed windows' people: the 5, 15 and 60-minute counts scaled by the area's share.
    assert points["naive"][stadium][0] == pytest.approx([200.0, 400.0, 1_600.0])
    # 400 people in a venue of 1,000, +-10%: ok.
    assert set(points["level"]) == {"ok"}
    assert score_points(points, areas.area_ids)["by_area"]["stadium"]["mape"] == pytest.approx(0.2)


def test_every_seed_of_the_matrix_is_its_own_and_never_a_calibration_seed() -> None:
    calibration = {r.seed for r in TABLE_RUNS} | {r.seed for r in HELD_OUT_RUNS} | {1}
    seeds = [r.seed for v in VARIANTS for r in seed_runs(v, 8)]
    assert len(seeds) == len(set(seeds)) == 8 * len(VARIANTS)
    assert calibration.isdisjoint(seeds)
    baseline = seed_runs(VARIANTS[0], 3)
    assert [r.seed for r in baseline] == [301, 401, 501]
    # Only the seed changes: the same network, city and story.
    assert {(r.scenario, r.devices, r.hours, r.overrides, r.areas_path) for r in baseline} == {
        (VARIANTS[0].run.scenario, VARIANTS[0].run.devices, VARIANTS[0].run.hours, (), None)}


def test_the_table_shows_each_seed_beside_their_points_together() -> None:
    one = _points(truth=[1_000], people=[1_100], low=[900], high=[1_200], levels=["ok"])
    two = _points(truth=[1_000], people=[1_300], low=[1_250], high=[1_400], levels=["critical"], capacity=1_300.0)
    by_seed = {seed: score_points(p, ["stadium"]) for seed, p in (("301", one), ("401", two))}
    report = {"variants": {"baseline": {**score_points(pooled([one, two]), ["stadium"]), "by_seed": by_seed}},
              "seeds": 2, "seconds": 1.0, "model": "table.npz"}
    text = format_matrix({**report, "targets_missed": targets_missed(report)})
    assert "20.0%" in text.splitlines()[2]  # MAPE of both seeds' points
    (seeds_line,) = [line for line in text.splitlines() if line.startswith("baseline") and "seed 301" in line]
    assert "seed 301: MAPE 10.0%" in seeds_line and "cover 100.0%" in seeds_line
    assert "seed 401: MAPE 30.0%" in seeds_line and "cover 0.0%" in seeds_line and "false crit 1" in seeds_line
    assert "2 seeds per variant" in text.splitlines()[-1]


def test_seeds_go_with_the_matrix_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--seeds", "2"]) == 2
    assert "--seeds goes with --matrix" in capsys.readouterr().err
    assert main(["evaluate", "--matrix", "--seeds", "0"]) == 2
    assert "--seeds takes a number of seeds" in capsys.readouterr().err


def _figures(mape: float, coverage: float, false_critical: int = 0, width_over_3: int = 0, naive: float = 0.5) -> dict:
    return {"mape": mape, "best_naive_mape": naive, "coverage": coverage, "false_critical": false_critical,
            "width_over_3": width_over_3, "missed_critical": 0}


def test_a_target_is_met_only_if_every_seed_meets_it() -> None:
    report = {"variants": {
        # Every target on both seeds.
        "good": {**_figures(0.08, 0.90), "by_seed": {"301": _figures(0.07, 0.91), "401": _figures(0.09, 0.89)}},
        # Under 15% on its seeds together, over it on one seed; one false critical on the other.
        "lucky": {**_figures(0.14, 0.90), "by_seed": {"302": _figures(0.12, 0.90, false_critical=1),
                                                      "402": _figures(0.16, 0.90)}},
        # Ranges too wide and too narrow, a window better than the model, ranges over x3.
        "poor": {**_figures(0.30, 0.97), "by_seed": {"303": _figures(0.30, 0.97, width_over_3=5, naive=0.2),
                                                     "403": _figures(0.30, 0.70)}},
    }}
    missed = targets_missed(report)
    assert missed["MAPE <= 15%"] == ["lucky", "poor"]
    assert missed["lower MAPE than every fixed window"] == ["poor"]
    assert missed["90% ranges hold 80-95%"] == ["poor"]
    assert missed["no critical under 80% of capacity"] == ["lucky"]
    assert missed["ranges <= x3 where the hour saw >= 1,000 phones"] == ["poor"]
    # One seed: its own figures decide.
    assert targets_missed({"variants": {"one": _figures(0.16, 0.96)}})["MAPE <= 15%"] == ["one"]
    text = format_matrix({**report, "variants": {k: {**v, **_table_row()} for k, v in report["variants"].items()},
                          "seeds": 2, "seconds": 1.0, "model": "table.npz", "targets_missed": missed})
    assert "MAPE <= 15%: missed by lucky, poor" in text
    assert "lower MAPE than every fixed window: missed by poor" in text


def _table_row() -> dict:
    """The figures format_matrix's main table reads besides those of _figures."""
    return {"points": 1, "bias": 0.0, "width_median": 1.0, "width_max_1000": 1.0, "false_critical_by_upper_end": 0,
            "uncertain": 0, "uncertain_when_critical": 0, "true_critical": 0}
