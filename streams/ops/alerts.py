"""Crowd alerts: evaluating the rules (streams/ops/alert_rules.py) with hysteresis, and the alert
lifecycle. Pure: no Kafka, no Redis.

An alert *check* is (rule, level, trigger, clear) for one area. Four rules:

- ``capacity``: the estimate's chosen bound over the area's capacity (share, 0.80 = 80%);
- ``density``: that bound over the area's ``size_m2`` (people per square metre), only for areas
  with a size;
- ``rise``: the slope of the bound over the recent trend window (people per minute);
- ``time_to_capacity``: minutes until the trend reaches the forecast target (by default the
  capacity rule's critical trigger); this check fires when the value is *at most* its trigger.

Time is stream time: every check is evaluated at the ``as_of`` of a published estimate, and the
hold times are differences of ``as_of``, never wall time, so a replay or an accelerated run
raises exactly the alerts a live run does.

Hysteresis per check: a check *fires* once its trigger has held for ``fire_hold_s`` of stream
time, and *resolves* once its value has stayed past the clear level for ``clear_hold_s``. A value
between the clear level and the trigger changes nothing, so a crowd hovering at the line raises
one alert, not one per wobble.

Idempotence: an alert's id is ``<area>.<rule>.<level>.<episode start as_of>``: the same data
gives the same id, so a replay or a restarted worker recognises an alert it already raised
(streams/ops/alert_store.py never stores or publishes an id twice).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.ops.alert_rules import MIN_TREND_POINTS, MIN_TREND_SPAN_MS, AreaRules, Check


class AlertConflict(ValueError):
    """A lifecycle step that the alert's state does not allow (e.g. acking a resolved alert)."""


# --- measures ---------------------------------------------------------------------------------

Point = tuple[int, float]  # (as_of ms, value of the chosen bound)


def point_value(estimate: Mapping[str, Any], bound: str) -> float:
    """The number the checks look at. A suppressed estimate (fewer than k devices) counts as 0:
    it is far below any line, and its real value must never leak into an alert."""
    if estimate.get("suppressed") or estimate.get(bound) is None:
        return 0.0
    return float(estimate[bound])


def trend_per_min(history: Iterable[Point], as_of: int, trend_ms: int) -> float | None:
    """Least-squares slope (per minute) of the points in (as_of - trend_ms, as_of]; None with
    fewer than 3 points or a span under 2 minutes (too little to call a trend)."""
    pts = [(t, v) for t, v in history if as_of - trend_ms < t <= as_of]
    if len(pts) < MIN_TREND_POINTS or max(t for t, _ in pts) - min(t for t, _ in pts) < MIN_TREND_SPAN_MS:
        return None
    xs = [(t - as_of) / 60_000 for t, _ in pts]
    ys = [v for _, v in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def minutes_to_target(value: float, slope_per_min: float | None, target: float) -> float | None:
    """Time-to-capacity forecast: 0 when already there; None when not rising (no forecast)."""
    if value >= target:
        return 0.0
    if slope_per_min is None or slope_per_min <= 0:
        return None
    return (target - value) / slope_per_min


def measures(rules: AreaRules, as_of: int, value: float, history: Sequence[Point],
             trend: bool = True) -> dict[str, float | None]:
    """The checks' values at one point; the trend is drawn through `history`. `trend` False:
    none at this point (an estimate marked warming_up, see evaluate_area)."""
    slope = trend_per_min(history, as_of, rules.trend_ms) if trend else None
    return {
        "capacity": value / rules.capacity,
        "density": value / rules.size_m2 if rules.size_m2 else None,
        "rise": slope,
        "time_to_capacity": minutes_to_target(value, slope, rules.target_share * rules.capacity),
    }


# --- the engine -------------------------------------------------------------------------------


def alert_id(area: str, rule: str, level: str, started_at: int) -> str:
    """Stable: the same episode (same area, check and start in stream time) has the same id.
    Area ids cannot contain '.', so the id is unambiguous and URL-safe."""
    return f"{area}.{rule}.{level}.{started_at}"


@dataclass(frozen=True)
class Transition:
    event: str  # "fired" | "resolved"
    alert_id: str
    area: str
    check: Check
    as_of: int
    started_at: int
    value: float | None
    people: float
    peak: float | None


def new_state() -> dict:
    """Per-area engine state (JSON-serialisable, kept in Redis): the newest as_of evaluated and
    one tracker per check: pending (start of a trigger run), active alert id, clear_since, peak."""
    return {"as_of": None, "trackers": {}}


def evaluate_area(
    rules: AreaRules, state: dict | None, points: Sequence[Point], history: Sequence[Point],
    warming: Collection[int] = (),
) -> tuple[dict, list[Transition]]:
    """Feed one area's new points (its alert window, this pass) through the checks.

    - Points older than the newest already evaluated are republished history (late events):
      alerts react to the present, so they are skipped.
    - A missing state (first run, or state lost) is rebuilt from `history` (the area's series)
      before the new points: an episode that began earlier keeps its start and so its id, and
      only alerts still active at the end of that history are reported as fired (the store
      drops ids it already has).
    - `history` must contain the new points too (the series is saved before alerts run).
    - `warming`: as_of of the points marked warming_up (windows still filling after a cold
      start): no trend at them, and none drawn through them, since a window that fills looks
      like a crowd arriving.
    """
    transitions: list[Transition] = []
    trend_history = [p for p in history if p[0] not in warming]
    if state is None:
        state = new_state()
        if points:
            first = min(t for t, _ in points)
            rebuilt: list[Transition] = []
            for as_of, value in sorted(p for p in history if p[0] < first):
                _step(rules, state, as_of, value, trend_history, rebuilt, as_of not in warming)
            active = {tr["active"] for tr in state["trackers"].values() if tr["active"]}
            transitions.extend(t for t in rebuilt if t.event == "fired" and t.alert_id in active)
    else:
        state = copy.deepcopy(state)
    for as_of, value in sorted(points):
        if state["as_of"] is not None and as_of < state["as_of"]:
            continue
        _step(rules, state, as_of, value, trend_history, transitions, as_of not in warming)
    return state, transitions


def reconcile(
    rules: AreaRules, state: dict, transitions: list[Transition], active: Mapping[tuple[str, str], dict]
) -> list[Transition]:
    """After a state was rebuilt from the series, line it up with the alerts already raised
    (`active`: this area's unresolved records by (rule, level)).

    The live engine saw provisional points (a bucket still filling), the rebuild sees final
    ones, so it may date an episode's start a minute differently and so derive another id. An
    episode that is already an active alert keeps that alert's id and start (never a second
    alert for one episode); an active alert whose check the rebuild finds clear (or that the
    rules no longer have) is resolved at the newest point. Changes `state` in place.
    """
    out = list(transitions)
    trackers = state["trackers"]
    as_of = state["as_of"]
    for (rule, level), record in active.items():
        tr = trackers.get(f"{rule}.{level}")
        if tr is not None and tr["active"] is not None:
            if tr["active"] != record["id"]:
                out = [t for t in out if not (t.event == "fired" and t.alert_id == tr["active"])]
                tr.update(active=record["id"], pending=record["started_at"])
            continue
        if as_of is None:
            continue
        check = next((c for c in rules.checks if c.rule == rule and c.level == level), None)
        check = check or Check(rule, level, float(record["trigger"]), float(record["clear"]))
        out.append(Transition("resolved", record["id"], rules.area, check, as_of, record["started_at"], None, 0.0, record.get("peak")))
    return out


def _step(rules: AreaRules, state: dict, as_of: int, value: float, history: Sequence[Point], out: list[Transition],
          trend: bool = True) -> None:
    values = measures(rules, as_of, value, history, trend)
    trackers = state["trackers"]
    # A check the rules no longer have (edited rules file) resolves its open alert.
    for key in [k for k in trackers if k not in {c.key for c in rules.checks}]:
        tr = trackers.pop(key)
        if tr["active"] is not None:
            rule, _, level = key.partition(".")
            gone = Check(rule, level, 0.0, 0.0)
            out.append(Transition("resolved", tr["active"], rules.area, gone, as_of, tr["pending"], None, value, tr["peak"]))
    for check in rules.checks:
        tr = trackers.setdefault(check.key, {"pending": None, "active": None, "clear_since": None, "peak": None})
        v = values[check.rule]
        if tr["active"] is None:
            if not check.over(v):
                tr["pending"] = None
                continue
            if tr["pending"] is None:
                tr["pending"] = as_of
            if as_of - tr["pending"] >= rules.fire_hold_ms:
                aid = alert_id(rules.area, check.rule, check.level, tr["pending"])
                tr.update(active=aid, clear_since=None, peak=v)
                out.append(Transition("fired", aid, rules.area, check, as_of, tr["pending"], v, value, v))
            continue
        tr["peak"] = check.worse(tr["peak"], v)
        if not check.cleared(v):
            tr["clear_since"] = None
            continue
        if tr["clear_since"] is None:
            tr["clear_since"] = as_of
        if as_of - tr["clear_since"] >= rules.clear_hold_ms:
            out.append(Transition("resolved", tr["active"], rules.area, check, as_of, tr["pending"], v, value, tr["peak"]))
            tr.update(pending=None, active=None, clear_since=None, peak=None)
    state["as_of"] = as_of if state["as_of"] is None else max(state["as_of"], as_of)


# --- records and lifecycle --------------------------------------------------------------------


def fired_record(rules: AreaRules, t: Transition) -> dict:
    """The alert as stored, served and published (docs/operations.md)."""
    return {
        "id": t.alert_id,
        "area": rules.area,
        "name": rules.name,
        "rule": t.check.rule,
        "level": t.check.level,
        "state": "firing",
        "unit": t.check.unit,
        "value": _round(t.value),
        "trigger": t.check.trigger,
        "clear": t.check.clear,
        "peak": _round(t.peak),
        "people": int(t.people),
        "bound": rules.bound,
        "window_s": rules.window_s,
        "capacity": rules.capacity,
        "started_at": t.started_at,
        "fired_at": t.as_of,
        "resolved_at": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "message": message(rules, t.check, t.value, t.people),
    }


def resolve(record: dict, t: Transition) -> dict | None:
    """The record after its check cleared; None if it was already resolved."""
    if record["state"] == "resolved":
        return None
    return dict(record, state="resolved", resolved_at=t.as_of, peak=_round(t.peak))


def acknowledge(record: dict, by: str, wall_ms: int) -> dict | None:
    """firing -> acknowledged (who and when, in wall time: it is a person's action). Acking an
    acknowledged alert changes nothing (None); a resolved alert cannot be acked."""
    if record["state"] == "resolved":
        raise AlertConflict(f"alert {record['id']} is already resolved")
    if record["state"] == "acknowledged":
        return None
    return dict(record, state="acknowledged", acknowledged_at=wall_ms, acknowledged_by=by)


def event(record: dict, kind: str) -> dict:
    """A message for crowd.alerts / SSE / the webhook: the record plus what happened.
    (id, event) is unique: a consumer seeing it twice (at-least-once) can drop the repeat."""
    return dict(record, event=kind, event_id=f"{record['id']}/{kind}")


def message(rules: AreaRules, check: Check, value: float | None, people: float) -> str:
    bound = {"people_high": "upper bound", "people": "estimate", "people_low": "lower bound"}[rules.bound]
    n = f"{int(people):,}"
    if check.rule == "capacity":
        return f"{rules.name}: {100 * (value or 0):.0f}% of capacity ({bound} {n} of {rules.capacity:,})"
    if check.rule == "density":
        return f"{rules.name}: {value or 0:.2f} people/m\u00b2 ({bound} {n} on {rules.size_m2:,.0f} m\u00b2)"
    if check.rule == "rise":
        return f"{rules.name}: rising {value or 0:,.0f} people/min over {rules.trend_ms // 60_000} min ({bound} {n})"
    target = f"{100 * rules.target_share:.0f}% of capacity"
    if not value:
        return f"{rules.name}: has reached {target} ({bound} {n} of {rules.capacity:,})"
    return f"{rules.name}: forecast to reach {target} in {value:.0f} min ({bound} {n} of {rules.capacity:,})"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
