"""The alert engine: hysteresis, hold times in stream time, trends and forecasts, stable ids,
rules configuration and the lifecycle. Pure: no Redis, no Kafka."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from streams.core.areas import load_areas, parse_areas
from streams.core.settings import DEFAULT_AREAS
from streams.ops.alert_rules import AreaRules, Check, load_rules, parse_rules
from streams.ops.alerts import (
    AlertConflict,
    Transition,
    acknowledge,
    alert_id,
    evaluate_area,
    event,
    fired_record,
    measures,
    minutes_to_target,
    point_value,
    reconcile,
    resolve,
    trend_per_min,
)

WINDOWS = (300, 900, 3600)
MIN = 60_000
T0 = 1_767_600_000_000  # a bucket-aligned as_of (stream time, epoch ms)


@pytest.fixture(scope="module")
def city():
    return load_areas(DEFAULT_AREAS)


@pytest.fixture(scope="module")
def rules(city) -> dict[str, AreaRules]:
    return parse_rules({}, city, WINDOWS)


def run(rules: AreaRules, values: list[float], passes: int = 1, state: dict | None = None, start: int = T0):
    """Feed one point per minute; `passes` points per evaluate call. Returns (state, transitions)."""
    points = [(start + i * MIN, v) for i, v in enumerate(values)]
    history: list[tuple[int, float]] = []
    out: list[Transition] = []
    state = state if state is not None else {"as_of": None, "trackers": {}}
    for i in range(0, len(points), passes):
        chunk = points[i : i + passes]
        history.extend(chunk)
        state, found = evaluate_area(rules, state, chunk, history)
        out.extend(found)
    return state, out


def only(transitions: list[Transition], key: str) -> list[Transition]:
    return [t for t in transitions if t.check.key == key]


def capacity_only(rules: AreaRules, **changes) -> AreaRules:
    """The same area with only its capacity checks (so trend checks do not interfere)."""
    changes.setdefault("checks", tuple(c for c in rules.checks if c.rule == "capacity"))
    return replace(rules, **changes)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones(city, rules) -> None:
    stadium = rules["stadium"]
    assert (stadium.window_s, stadium.bound) == (900, "people")  # the headline window; the estimate decides
    assert parse_rules({}, city, (120, 600))["stadium"].window_s == 120  # no 900 s: the shortest
    assert (stadium.fire_hold_ms, stadium.clear_hold_ms, stadium.trend_ms) == (60_000, 300_000, 600_000)
    by_key = {c.key: c for c in stadium.checks}
    assert (by_key["capacity.warn"].trigger, by_key["capacity.warn"].clear) == (0.80, 0.75)
    assert (by_key["capacity.critical"].trigger, by_key["capacity.critical"].clear) == (0.95, 0.90)
    assert (by_key["density.warn"].trigger, by_key["density.critical"].trigger) == (2.0, 3.5)
    # Rise defaults to 2% of capacity per minute, cleared below 1%: 1,200 / 600 people/min here.
    assert (by_key["rise.warn"].trigger, by_key["rise.warn"].clear) == (1200.0, 600.0)
    assert (by_key["time_to_capacity.warn"].trigger, by_key["time_to_capacity.warn"].clear) == (15, 25)
    assert stadium.target_share == 0.95


def test_density_needs_a_size() -> None:
    areas = parse_areas(
        {"cells": [{"id": 1}], "areas": [{"id": "a", "capacity": 100, "cells": [1]}, {"id": "b", "capacity": 100, "cells": [1], "size_m2": 50}]}
    )
    compiled = parse_rules({}, areas, WINDOWS)
    assert not any(c.rule == "density" for c in compiled["a"].checks)
    assert {c.key for c in compiled["b"].checks if c.rule == "density"} == {"density.warn", "density.critical"}


# --- hysteresis and hold times ----------------------------------------------------------------


def noisy_at_the_line(n: int, seed: int = 5) -> list[float]:
    """A crowd hovering at 80% of 60,000: a slow wobble of +-4% plus +-2% noise."""
    rng = random.Random(seed)
    return [60_000 * (0.80 + 0.04 * math.sin(i * 1.7) + rng.uniform(-0.02, 0.02)) for i in range(n)]


def test_a_crowd_hovering_at_the_line_raises_one_alert_not_one_per_wobble(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    values = noisy_at_the_line(120)
    crossings = sum(1 for a, b in zip(values, values[1:]) if (a >= 0.8 * 60_000) != (b >= 0.8 * 60_000))
    assert crossings >= 30, "the series must really cross the line often"

    _, found = run(stadium, values)
    warn = only(found, "capacity.warn")
    assert [t.event for t in warn] == ["fired"]
    assert not only(found, "capacity.critical")

    # The same series without hysteresis (clear = trigger, no hold) flaps: the test can fail.
    naive = capacity_only(
        rules["stadium"],
        fire_hold_ms=0,
        clear_hold_ms=0,
        checks=(Check("capacity", "warn", 0.80, 0.7999),),
    )
    _, flapping = run(naive, values)
    assert sum(t.event == "fired" for t in flapping) >= 10


def test_fire_hold_ignores_a_single_spike(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    _, found = run(stadium, [30_000, 50_000, 30_000, 30_000])  # one minute at 83%
    assert found == []
    _, found = run(stadium, [30_000, 50_000, 50_000, 30_000])  # held for a minute: fires
    assert [(t.event, t.check.key, t.as_of, t.started_at) for t in found] == [
        ("fired", "capacity.warn", T0 + 2 * MIN, T0 + MIN)
    ]


def test_resolves_after_staying_below_clear_for_the_hold(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    # 5 min at 90% (warn), then 44% - between clear and trigger (77%) first for 3 min: no clear.
    values = [54_000] * 5 + [46_200] * 3 + [26_400] * 10
    _, found = run(stadium, values)
    warn = only(found, "capacity.warn")
    assert [t.event for t in warn] == ["fired", "resolved"]
    below_clear_from = T0 + 8 * MIN
    assert warn[1].as_of == below_clear_from + 5 * MIN  # clear_hold_s = 300, in stream time
    assert warn[1].alert_id == warn[0].alert_id == alert_id("stadium", "capacity", "warn", T0)
    assert warn[1].peak == pytest.approx(0.90)


def test_a_new_episode_gets_a_new_id(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    values = [54_000] * 3 + [20_000] * 6 + [54_000] * 3
    _, found = run(stadium, values)
    fired = [t for t in only(found, "capacity.warn") if t.event == "fired"]
    assert [t.started_at for t in fired] == [T0, T0 + 9 * MIN]
    assert fired[0].alert_id != fired[1].alert_id


# --- idempotence: stable ids across passes, replays and a lost state ---------------------------


def test_the_same_data_gives_the_same_alerts_however_it_is_batched(rules) -> None:
    stadium = rules["stadium"]
    values = noisy_at_the_line(40) + [59_000] * 10 + [10_000] * 15 + [40_000 + 1_500 * i for i in range(15)]
    _, one_by_one = run(stadium, values, passes=1)
    _, in_sevens = run(stadium, values, passes=7)
    _, all_at_once = run(stadium, values, passes=len(values))
    key = lambda ts: [(t.event, t.alert_id, t.as_of) for t in ts]  # noqa: E731
    assert key(one_by_one) == key(in_sevens) == key(all_at_once)
    assert len({t.check.key for t in one_by_one}) >= 3  # the series exercises several checks


def test_a_provisional_point_republished_changes_nothing(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    state, first = run(stadium, [54_000, 54_000, 54_000])
    again, repeat = evaluate_area(stadium, state, [(T0 + 2 * MIN, 54_000)], [(T0 + i * MIN, 54_000) for i in range(3)])
    assert len(first) == 1 and repeat == [] and again == state


def test_older_republished_points_are_skipped(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    state, _ = run(stadium, [20_000] * 5)
    late, found = evaluate_area(stadium, state, [(T0 + MIN, 59_000)], [(T0 + MIN, 59_000)])
    assert found == [] and late["as_of"] == T0 + 4 * MIN


def test_a_lost_state_is_rebuilt_from_the_series_with_the_same_ids(rules) -> None:
    stadium = rules["stadium"]
    values = [20_000] * 5 + [54_000] * 4 + [20_000] * 8 + [58_000] * 6  # two episodes
    points = [(T0 + i * MIN, v) for i, v in enumerate(values)]
    _, continuous = run(stadium, values)
    active_at_end = {t.alert_id for t in continuous if t.event == "fired"} - {
        t.alert_id for t in continuous if t.event == "resolved"
    }
    # The state is lost just before the last point: the engine rebuilds it from the history
    # and reports only the alerts still active, under the ids the continuous run gave them.
    state, rebuilt = evaluate_area(stadium, None, points[-1:], points)
    assert {t.alert_id for t in rebuilt} == active_at_end
    assert all(t.event == "fired" for t in rebuilt)
    continuous_state, _ = run(stadium, values)
    assert state == continuous_state


def test_a_rebuild_adopts_the_alert_already_raised_for_the_episode(rules) -> None:
    """Live, the engine saw minute 5 provisionally below the line and dated the episode from
    minute 6; the series (final values) dates it from minute 5. The rebuild must not raise a
    second alert for the same episode: it takes over the existing one."""
    stadium = capacity_only(rules["stadium"])
    values = [20_000] * 5 + [54_000] * 5
    points = [(T0 + i * MIN, v) for i, v in enumerate(values)]
    live = fired_record(stadium, Transition("fired", alert_id("stadium", "capacity", "warn", T0 + 6 * MIN), "stadium",
                                            Check("capacity", "warn", 0.8, 0.75), T0 + 7 * MIN, T0 + 6 * MIN, 0.9, 54_000, 0.9))
    state, rebuilt = evaluate_area(stadium, None, points[-1:], points)
    assert [t.alert_id for t in rebuilt] == [alert_id("stadium", "capacity", "warn", T0 + 5 * MIN)]
    found = reconcile(stadium, state, rebuilt, {("capacity", "warn"): live})
    assert found == []
    assert state["trackers"]["capacity.warn"]["active"] == live["id"]
    # From then on the engine resolves the adopted alert under its own id.
    later = [(T0 + (10 + i) * MIN, 20_000.0) for i in range(6)]
    _, after = evaluate_area(stadium, state, later, points + later)
    assert [(t.event, t.alert_id) for t in after] == [("resolved", live["id"])]


def test_a_rebuild_resolves_an_alert_whose_episode_is_over(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    points = [(T0 + i * MIN, 20_000.0) for i in range(8)]
    stale = fired_record(stadium, Transition("fired", "stadium.capacity.critical.1", "stadium",
                                             Check("capacity", "critical", 0.95, 0.9), 1, 1, 0.97, 58_000, 0.97))
    state, rebuilt = evaluate_area(stadium, None, points[-1:], points)
    found = reconcile(stadium, state, rebuilt, {("capacity", "critical"): stale})
    assert [(t.event, t.alert_id, t.as_of) for t in found] == [("resolved", stale["id"], T0 + 7 * MIN)]


def test_an_alert_of_a_check_removed_from_the_rules_is_resolved(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    state, fired = run(stadium, [54_000] * 3)
    assert [t.check.key for t in fired] == ["capacity.warn"]
    critical_only = replace(stadium, checks=tuple(c for c in stadium.checks if c.level == "critical"))
    _, found = evaluate_area(critical_only, state, [(T0 + 3 * MIN, 54_000)], [])
    assert [(t.event, t.alert_id) for t in found] == [("resolved", fired[0].alert_id)]


# --- trends: rate of rise and time to capacity -------------------------------------------------


def test_trend_is_the_least_squares_slope_per_minute() -> None:
    pts = [(T0 + i * MIN, 1_000 + 250 * i) for i in range(10)]
    assert trend_per_min(pts, T0 + 9 * MIN, 600_000) == pytest.approx(250)
    assert trend_per_min(pts, T0 + 9 * MIN, 120_000) is None  # 2 points are no trend
    assert trend_per_min(pts[:3], T0 + 2 * MIN, 600_000) == pytest.approx(250)


def test_time_to_capacity_forecast() -> None:
    assert minutes_to_target(42_000, 1_000, 57_000) == pytest.approx(15)
    assert minutes_to_target(57_500, 1_000, 57_000) == 0.0
    assert minutes_to_target(42_000, -50, 57_000) is None
    assert minutes_to_target(42_000, None, 57_000) is None


def test_time_to_capacity_warns_before_the_area_is_full(rules) -> None:
    stadium = rules["stadium"]  # forecast target: 95% of 60,000 = 57,000
    values = [20_000 + 1_000 * i for i in range(40)]  # +1,000 people per minute
    _, found = run(stadium, values)
    fired = {t.check.key: t for t in found if t.event == "fired"}
    ttc = fired["time_to_capacity.warn"]
    critical = fired["capacity.critical"]
    # The watched value reaches 57,000 at minute 37; the forecast says "15 min" at minute 22
    # (value 42,000) and the one-minute hold fires it at minute 23.
    assert ttc.started_at == T0 + 22 * MIN and ttc.as_of == T0 + 23 * MIN
    assert ttc.value == pytest.approx(14.0)
    assert critical.as_of == T0 + 38 * MIN
    assert ttc.as_of < critical.as_of - 10 * MIN, "the forecast warns well before the area is full"
    # The rise check (1,200/min for the stadium) stays quiet at 1,000/min.
    assert "rise.warn" not in fired


def test_rate_of_rise(rules) -> None:
    stadium = rules["stadium"]
    values = [10_000] * 5 + [10_000 + 1_500 * i for i in range(1, 8)] + [20_500] * 12
    _, found = run(stadium, values)
    rise = only(found, "rise.warn")
    assert [t.event for t in rise] == ["fired", "resolved"]
    assert rise[0].value >= 1_200


def test_windows_filling_after_a_cold_start_raise_no_trend_alert_but_capacity_still_fires(rules) -> None:
    # The first twenty minutes are warming up: the windows fill from nothing, which looks like
    # 2,000 people a minute arriving (the rise check is 1,200/min), up to 40,000 = 67% of capacity.
    # Then a real crowd: +3,000 a minute to over capacity.
    stadium = rules["stadium"]
    values = [2_000.0 * (i + 1) for i in range(20)] + [40_000.0 + 3_000 * i for i in range(1, 10)]
    points = [(T0 + i * MIN, v) for i, v in enumerate(values)]
    warming = {t for t, _ in points[:20]}
    state, found = None, []
    for i in range(len(points)):
        state, out = evaluate_area(stadium, state or {"as_of": None, "trackers": {}}, points[i:i + 1], points[: i + 1], warming)
        found.extend(out)
    fired = {t.check.key: t for t in found if t.event == "fired"}
    # Nothing during the warm-up; the real rise fires once three points after it show it.
    assert all(t.as_of > T0 + 19 * MIN for t in found)
    assert fired["rise.warn"].started_at == T0 + 22 * MIN and fired["rise.warn"].value == pytest.approx(3_000)
    assert "capacity.critical" in fired
    # The same points without the warm-up mark: the filling windows raise the rise alert at once.
    _, blind = run(stadium, values)
    assert only(blind, "rise.warn")[0].started_at < T0 + 20 * MIN


def test_a_warming_up_point_still_fires_capacity(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    points = [(T0 + i * MIN, 59_000.0) for i in range(3)]
    _, found = evaluate_area(stadium, None, points, points, {t for t, _ in points})
    assert [t.check.key for t in found if t.event == "fired"] == ["capacity.warn", "capacity.critical"]


def test_density_levels() -> None:
    areas = parse_areas({"cells": [{"id": 1}], "areas": [{"id": "square", "capacity": 100_000, "cells": [1], "size_m2": 10_000}]})
    square = parse_rules({"defaults": {"rise": None, "time_to_capacity": None, "capacity": None}}, areas, WINDOWS)["square"]
    _, found = run(square, [15_000] * 3 + [21_000] * 3 + [36_000] * 3)  # 1.5, 2.1, 3.6 people/m2
    fired = [(t.check.key, t.as_of) for t in found if t.event == "fired"]
    assert fired == [("density.warn", T0 + 4 * MIN), ("density.critical", T0 + 7 * MIN)]
    record = fired_record(square, [t for t in found if t.check.key == "density.critical"][0])
    assert record["unit"] == "people_per_m2" and record["value"] == pytest.approx(3.6)
    assert "3.60 people/m\u00b2" in record["message"]


def test_suppressed_estimates_count_as_zero_and_resolve_an_alert(rules) -> None:
    assert point_value({"suppressed": True, "people_high": None}, "people_high") == 0.0
    assert point_value({"suppressed": False, "people_high": 812}, "people_high") == 812.0
    stadium = capacity_only(rules["stadium"])
    _, found = run(stadium, [54_000] * 3 + [0.0] * 6)
    assert [t.event for t in only(found, "capacity.warn")] == ["fired", "resolved"]


def test_measures_in_their_units(rules) -> None:
    m = measures(rules["stadium"], T0, 30_000, [(T0 - 2 * MIN, 28_000), (T0 - MIN, 29_000), (T0, 30_000)])
    assert m["capacity"] == pytest.approx(0.5)
    assert m["density"] == pytest.approx(30_000 / 45_000)
    assert m["rise"] == pytest.approx(1_000)
    assert m["time_to_capacity"] == pytest.approx(27)


# --- records and lifecycle ---------------------------------------------------------------------


def test_lifecycle_firing_acknowledged_resolved(rules) -> None:
    stadium = capacity_only(rules["stadium"])
    _, found = run(stadium, [54_000] * 3 + [20_000] * 6)
    fired, resolved_t = only(found, "capacity.warn")
    record = fired_record(stadium, fired)
    assert record["state"] == "firing" and record["id"] == "stadium.capacity.warn." + str(T0)
    assert record["message"] == "Stadium: 90% of capacity (estimate 54,000 of 60,000)"
    acked = acknowledge(record, "control room", 1_700_000_000_000)
    assert acked is not None and acked["state"] == "acknowledged" and acked["acknowledged_by"] == "control room"
    assert acknowledge(acked, "someone else", 1) is None  # acking twice changes nothing
    closed = resolve(acked, resolved_t)
    assert closed is not None and closed["state"] == "resolved" and closed["resolved_at"] == resolved_t.as_of
    assert closed["acknowledged_by"] == "control room"
    assert resolve(closed, resolved_t) is None
    with pytest.raises(AlertConflict):
        acknowledge(closed, "late", 2)
    assert event(closed, "resolved")["event_id"] == f"{record['id']}/resolved"
    json.dumps(closed)  # stored and published as JSON


# --- configuration -----------------------------------------------------------------------------


def test_rules_file_overrides_per_area(city, tmp_path: Path) -> None:
    doc = {
        "defaults": {"fire_hold_s": 0, "bound": "people"},
        "areas": {
            "stadium": {"capacity": {"critical": {"trigger": 0.9, "clear": 0.85}}, "rise": {"warn": {"trigger": 800, "clear": 400}}},
            "city": {"rise": None, "time_to_capacity": None, "window_s": 300},
        },
    }
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(doc))
    compiled = load_rules(city, WINDOWS, path)
    stadium = {c.key: c for c in compiled["stadium"].checks}
    assert "capacity.warn" not in stadium  # a block replaces the default block entirely
    assert stadium["capacity.critical"].trigger == 0.9 and compiled["stadium"].target_share == 0.9
    assert stadium["rise.warn"].trigger == 800
    assert compiled["stadium"].fire_hold_ms == 0 and compiled["stadium"].bound == "people"
    assert {c.rule for c in compiled["city"].checks} == {"capacity", "density"} and compiled["city"].window_s == 300


def test_areas_file_alerts_sit_between_defaults_and_the_rules_file(tmp_path: Path) -> None:
    areas_doc = {
        "cells": [{"id": 1}],
        "areas": [{"id": "hall", "capacity": 1000, "cells": [1], "alerts": {"clear_hold_s": 120, "fire_hold_s": 30}}],
    }
    areas_path = tmp_path / "areas.json"
    areas_path.write_text(json.dumps(areas_doc))
    rules_path = tmp_path / "rules.json"
    rules_path.write_text(json.dumps({"defaults": {"clear_hold_s": 600}, "areas": {"hall": {"fire_hold_s": 0}}}))
    hall = load_rules(parse_areas(areas_doc), WINDOWS, rules_path, areas_path)["hall"]
    assert hall.clear_hold_ms == 120_000  # areas file beats the rules file's defaults
    assert hall.fire_hold_ms == 0  # the rules file's areas.<id> beats the areas file


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"areas": {"nowhere": {}}}, "no such area"),
        ({"defaults": {"capacity": {"warn": {"trigger": 0.8, "clear": 0.8}}}}, "clear .* must be below trigger"),
        ({"defaults": {"time_to_capacity": {"warn": {"trigger": 15, "clear": 10}}}}, "must be above trigger"),
        ({"defaults": {"window_s": 600}}, "not one of the published windows"),
        ({"defaults": {"bound": "max"}}, "bound must be one of"),
        ({"defaults": {"capacity": {"severe": {"trigger": 1, "clear": 0.5}}}}, "unknown keys"),
        ({"defaults": {"capacity": {"warn": {"trigger": "high", "clear": 0.5}}}}, "must be a number"),
        ({"defaults": {"fire_hold_s": -1}}, "must be >= 0"),
        ({"defaults": {"trend_s": 60}}, "trend_s must be at least"),
        ({"extra": 1}, "unknown keys"),
        ({"defaults": {"holdtime": 1}}, "unknown keys"),
    ],
)
def test_bad_rules_are_refused_with_a_clear_message(city, doc: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(doc, city, WINDOWS)


def test_dashboard_thresholds_in_people(rules) -> None:
    doc = rules["stadium"].to_json()
    by_key = {(c["rule"], c["level"]): c for c in doc["checks"]}
    assert by_key[("capacity", "warn")]["trigger_people"] == 48_000
    assert by_key[("capacity", "critical")]["trigger_people"] == 57_000
    assert by_key[("density", "warn")]["trigger_people"] == 90_000
    assert by_key[("rise", "warn")]["trigger_people"] is None
