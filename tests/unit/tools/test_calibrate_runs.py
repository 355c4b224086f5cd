"""The calibration's runs: the randomised networks are reproducible and stay inside their
ranges, and the robustness matrix's variants stay beyond every range the table and the
held-out runs have seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from producers.scenarios import MatchDay
from producers.signalling import Signalling
from streams.core.areas import load_areas
from streams.core.settings import Settings
from streams.estimate.visibility import N60
from streams.tools.calibrate import (
    HELD_OUT_RUNS,
    TABLE_RUNS,
    WARMUP_MIN,
    NetworkPrior,
    Run,
    collect_all,
    random_networks,
    row_groups,
    rows,
)
from streams.tools.evaluate.matrix import VARIANTS

PRIOR = NetworkPrior()
DEFAULTS = {"t3412_s": Signalling.t3412_s, "data_sessions_per_hour": Signalling.data_sessions_per_hour,
            "arrival_ramp_min": MatchDay.arrival_ramp_min, "exit_min": MatchDay.exit_min}


def knobs(run: Run) -> dict[str, float]:
    """The run's place on the ranges the table covers (defaults where not overridden)."""
    given = {k: float(v) for k, v in run.overrides}
    low = given.get("t3412_s", DEFAULTS["t3412_s"]) / 60
    out = {"devices": float(run.devices), "t3412_low_min": low, "t3412_high_min": given.get("t3412_max_s", low * 60) / 60,
           "sessions": given.get("data_sessions_per_hour", DEFAULTS["data_sessions_per_hour"])}
    if run.scenario == "match-day":
        out["ramp"] = given.get("arrival_ramp_min", DEFAULTS["arrival_ramp_min"])
        out["exit"] = given.get("exit_min", DEFAULTS["exit_min"])
    return out


def test_random_networks_are_the_same_runs_on_every_draw_and_inside_the_prior() -> None:
    runs = random_networks(match_days=6, station_rushes=1, steadies=1, draw_seed=5, first_seed=121)
    assert runs == random_networks(match_days=6, station_rushes=1, steadies=1, draw_seed=5, first_seed=121)
    assert runs != random_networks(match_days=6, station_rushes=1, steadies=1, draw_seed=6, first_seed=121)
    assert [r.seed for r in runs] == list(range(121, 129))
    assert [r.scenario for r in runs] == ["match-day"] * 6 + ["station-rush", "steady"]
    # Concerts come last: adding them leaves every other draw as it was.
    with_events = random_networks(match_days=6, station_rushes=1, steadies=1, draw_seed=5, first_seed=121, events=3)
    assert with_events[:8] == runs and [r.scenario for r in with_events[8:]] == ["event"] * 3
    for run in with_events[8:]:
        given = {k: float(v) for k, v in run.overrides}
        assert PRIOR.event_show_activity[0] <= given["in_play_activity"] == given["halftime_activity"] <= PRIOR.event_show_activity[1]
        assert PRIOR.event_early_leavers[0] <= given["early_leavers"] <= PRIOR.event_early_leavers[1]
        assert PRIOR.event_arrival_ramp_min[0] - 0.5 <= given["arrival_ramp_min"] <= PRIOR.event_arrival_ramp_min[1] + 0.5
        assert run.row_every_min == 4
    for run in runs:
        k = knobs(run)
        assert PRIOR.devices[0] - 250 <= k["devices"] <= PRIOR.devices[1] + 250
        assert PRIOR.data_sessions_per_hour[0] <= k["sessions"] <= PRIOR.data_sessions_per_hour[1]
        assert PRIOR.t3412_low_min[0] <= k["t3412_low_min"] <= k["t3412_high_min"] <= PRIOR.t3412_high_max_min
        if run.scenario == "match-day":
            assert PRIOR.arrival_ramp_min[0] <= k["ramp"] <= PRIOR.arrival_ramp_min[1]
            assert PRIOR.exit_min[0] <= k["exit"] <= PRIOR.exit_min[1]
        assert run.row_every_min == 2
    # The draws do spread over the ranges, not cluster at one point.
    sessions = [knobs(r)["sessions"] for r in runs]
    assert max(sessions) / min(sessions) > 2


@pytest.mark.parametrize("runs", [TABLE_RUNS, HELD_OUT_RUNS], ids=["table", "held out"])
def test_the_matrix_variants_lie_beyond_every_range_of_the_calibration(runs: tuple[Run, ...]) -> None:
    table = [knobs(r) for r in runs]
    low = {k: min(t[k] for t in table if k in t) for k in table[0] | {"ramp": 0, "exit": 0}}
    high = {k: max(t[k] for t in table if k in t) for k in low}
    beyond = {
        "t3412-30-120": lambda k: k["t3412_low_min"] < low["t3412_low_min"] and k["t3412_high_min"] > high["t3412_high_min"],
        "quiet-x0.25": lambda k: k["sessions"] < low["sessions"],
        "chatty-x4": lambda k: k["sessions"] > high["sessions"],
        "small-3k": lambda k: k["devices"] < low["devices"],
        "large-200k": lambda k: k["devices"] > high["devices"],
        "fast-crowd": lambda k: k["ramp"] < low["ramp"] and k["exit"] < low["exit"],
        "slow-crowd": lambda k: k["ramp"] > high["ramp"] and k["exit"] > high["exit"],
    }
    variants = {v.name: v for v in VARIANTS}
    for name, outside in beyond.items():
        assert outside(knobs(variants[name].run)), name
    # Every calibrated match is at the stadium, with the default phone use through its phases and
    # the default early leavers; every calibrated concert is at the arena, phones in steady use
    # (no half-time dip) at x0.7-1.3: the concert at the stadium (x1.5, 45% leaving early) and the
    # match at the arena (its dip) are neither.
    event = {"venue", "pre_match_activity", "in_play_activity", "halftime_activity", "post_match_activity", "early_leavers"}
    assert all(event.isdisjoint(k for k, _ in r.overrides) for r in runs if r.scenario == "match-day")
    concerts = [dict(r.overrides) for r in runs if r.scenario == "event"]
    assert concerts and all("venue" not in c and c["in_play_activity"] == c["halftime_activity"] for c in concerts)
    concert = dict(variants["concert"].run.overrides)
    assert float(concert["in_play_activity"]) > max(float(c["in_play_activity"]) for c in concerts)
    assert float(concert["early_leavers"]) > max(float(c["early_leavers"]) for c in concerts)
    arena = dict(variants["arena-match"].run.overrides)
    assert variants["arena-match"].run.scenario == "match-day" and arena["venue"] == "arena" == variants["arena-match"].venue
    # The concerts' arrivals and exits stay short of the fast and slow crowds too.
    ramps = [float(c["arrival_ramp_min"]) for c in concerts]
    exits = [float(c["exit_min"]) for c in concerts]
    assert knobs(variants["fast-crowd"].run)["ramp"] < min(ramps) and knobs(variants["fast-crowd"].run)["exit"] < min(exits)
    assert knobs(variants["slow-crowd"].run)["ramp"] > max(ramps) and knobs(variants["slow-crowd"].run)["exit"] > max(exits)
    # Nor does any seed of the table or the held-out runs come back in the matrix or evaluate's.
    table_seeds, held_seeds = {r.seed for r in TABLE_RUNS}, {r.seed for r in HELD_OUT_RUNS}
    assert table_seeds.isdisjoint(held_seeds)
    assert (table_seeds | held_seeds).isdisjoint({v.run.seed for v in VARIANTS} | {1})


def test_a_run_thinned_to_every_second_minute_gives_the_even_minutes_rows() -> None:
    settings = Settings()
    areas = load_areas(settings.areas_path)
    minutes, count = 40, len(areas.area_ids)
    # Every area's hour count is 1,000 + the minute, so each row's N(60) says which minute it is.
    curves = np.tile(np.array([10, 50, 150, 300, 0, 900, 800, 700, 140], dtype=float), (minutes, count, 1))
    curves[:, :, N60] = 1_000 + np.arange(minutes)[:, None]
    data = {"curves": curves, "people": np.full((minutes, count), 5_000.0), "area_ids": areas.area_ids}
    every_minute = rows(data, areas, settings, areas.reference)[2] - 1_000
    thinned = rows(data, areas, settings, areas.reference, every=2)[2] - 1_000
    assert set(every_minute) == set(range(WARMUP_MIN, minutes))
    assert set(thinned) == set(range(WARMUP_MIN + 1, minutes, 2))
    # Each kept minute keeps all its rows: one per area, and every fifth minute the areas as
    # their own references.
    for t in (6, 10, 20):
        assert np.count_nonzero(thinned == t) == np.count_nonzero(every_minute == t)


def test_the_held_out_ring_reaches_beyond_the_table() -> None:
    wide = PRIOR.widened(1.15)
    assert wide.devices == pytest.approx((5_000 / 1.15, 100_000 * 1.15))
    assert wide.exit_min == pytest.approx((12 / 1.15, 60 * 1.15)) and wide.t3412_high_max_min == pytest.approx(115)
    table = [knobs(r) for r in TABLE_RUNS]
    ring = [knobs(r) for r in HELD_OUT_RUNS if r.seed >= 221]
    assert ring, "randomised held-out networks"

    def outside(k: dict[str, float]) -> bool:
        return any(not min(t[name] for t in table if name in t) <= value <= max(t[name] for t in table if name in t)
                   for name, value in k.items())

    assert sum(outside(k) for k in ring) >= len(ring) // 2


def test_a_row_error_leaves_out_its_area_in_its_own_run_or_its_whole_family() -> None:
    own = (Run("match-day", 1000, 1.0, 1), Run("match-day", 1000, 1.0, 2))
    drawn = random_networks(match_days=2, station_rushes=0, steadies=1, draw_seed=5, first_seed=121)
    area_index = [np.array([0, 1]), np.array([0]), np.array([0, 1]), np.array([1, 0]), np.array([0])]
    groups = row_groups((*own, *drawn), area_index)

    assert len(groups) == 8
    hand_a, hand_b, drawn_a, drawn_b, steady = np.split(groups, [2, 3, 5, 7])
    # Hand-picked runs are each a family of their own: the same area in two runs, two groups.
    assert hand_a[0] != hand_b[0] and hand_a[0] != hand_a[1]
    # Two draws of one kind share a family: the same area, one group, whichever run.
    assert drawn_a[0] == drawn_b[1] and drawn_a[1] == drawn_b[0] and drawn_a[0] != drawn_a[1]
    # Another kind drawn from the same prior is another family.
    assert steady[0] not in (*drawn_a, *hand_a, *hand_b)


def test_a_run_with_many_overrides_is_cached_under_a_name_the_file_system_takes(tmp_path: Path) -> None:
    # The label of a run with a dozen overrides outgrows a file name's 255 bytes.
    long = tuple((k, v + "0" * 60) for k, v in (("data_sessions_per_hour", "3."), ("pagings_per_hour", "0.4"),
                                                 ("activity_spread", "0.5")))
    run = Run("steady", 1_000, 1.05, 999, long)
    assert len(run.label()) > 255
    settings = Settings()
    first = collect_all((run,), settings.areas_path, 1, tmp_path)[0]
    (saved,) = list(tmp_path.iterdir())
    assert len(saved.name) <= 255 and saved.name.startswith("steady_1000_1.05h_seed999_")
    again = collect_all((run,), settings.areas_path, 1, tmp_path)[0]  # read back, not simulated again
    assert np.array_equal(first["curves"], again["curves"]) and list(tmp_path.iterdir()) == [saved]
