"""Alert rules: the checks (rule, level, trigger, clear) of each area, their built-in defaults
and how a rules file and the areas file override them (docs/operations.md, "Configuring
rules"). Pure: no Kafka, no Redis. The engine that evaluates them is streams/ops/alerts.py."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.core.areas import AreaMap
from streams.core.errors import ConfigError

#: Which number of an estimate the safety checks look at. The default, people (the estimate),
#: follows what is likely, like the published level: an upper bound alone fires on half-full
#: areas whenever the range is wide. people_high fires when the area *may* be over the line,
#: for a rules file that wants that (and accepts the false alarms).
BOUNDS = ("people_high", "people", "people_low")
LEVELS = ("warn", "critical")
RULES = ("capacity", "density", "rise", "time_to_capacity")
UNITS = {
    "capacity": "share_of_capacity",
    "density": "people_per_m2",
    "rise": "people_per_min",
    "time_to_capacity": "minutes",
}
STATES = ("firing", "acknowledged", "resolved")

#: Built-in defaults; a rules file and the areas file may override them (docs/operations.md).
#: Density bands (people per m2, averaged over the area's size_m2): warn at 2.0, where
#: walking speed is already restricted (Fruin's levels of service; G. K. Still puts the critical
#: density of a moving crowd at 2-3/m2), critical at 3.5, where involuntary contact begins
#: (Fruin, ~3.6/m2). An area average hides denser spots, so these sit below the 4.7/m2 the
#: UK Green Guide allows on well-designed standing terraces.
DEFAULT_RULES: dict[str, Any] = {
    # None: the headline window (HEADLINE_WINDOW_S if published, else the shortest).
    "window_s": None,
    "bound": "people",
    "fire_hold_s": 60,
    "clear_hold_s": 300,
    "trend_s": 600,
    "capacity": {"warn": {"trigger": 0.80, "clear": 0.75}, "critical": {"trigger": 0.95, "clear": 0.90}},
    "density": {"warn": {"trigger": 2.0, "clear": 1.8}, "critical": {"trigger": 3.5, "clear": 3.2}},
    "rise": {"warn": {"trigger_share": 0.02, "clear_share": 0.01}},
    "time_to_capacity": {"warn": {"trigger": 15, "clear": 25}},
}
GENERAL_KEYS = ("window_s", "bound", "fire_hold_s", "clear_hold_s", "trend_s")
#: The window the occupancy model is scored on (docs/simulator.md). A shorter distinct-device
#: window misses idle phones, which signal only every hour or so, and so undercounts a crowd
#: that has settled: the 15-minute window is the default for safety alerts.
HEADLINE_WINDOW_S = 900
MIN_TREND_POINTS = 3
MIN_TREND_SPAN_MS = 120_000


@dataclass(frozen=True)
class Check:
    rule: str
    level: str
    trigger: float
    clear: float

    @property
    def key(self) -> str:
        return f"{self.rule}.{self.level}"

    @property
    def unit(self) -> str:
        return UNITS[self.rule]

    @property
    def rising(self) -> bool:
        """True when a larger value is worse (all rules but time_to_capacity)."""
        return self.rule != "time_to_capacity"

    def over(self, value: float | None) -> bool:
        """The trigger condition. No value (no trend yet, nothing to forecast) is never over."""
        if value is None:
            return False
        return value >= self.trigger if self.rising else value <= self.trigger

    def cleared(self, value: float | None) -> bool:
        """Past the clear level, on the safe side. No value counts as safe."""
        if value is None:
            return True
        return value < self.clear if self.rising else value > self.clear

    def worse(self, a: float | None, b: float | None) -> float | None:
        if a is None:
            return b
        if b is None:
            return a
        return max(a, b) if self.rising else min(a, b)


@dataclass(frozen=True)
class AreaRules:
    """The compiled checks of one area."""

    area: str
    name: str
    capacity: int
    size_m2: float | None
    window_s: int
    bound: str
    fire_hold_ms: int
    clear_hold_ms: int
    trend_ms: int
    #: time_to_capacity forecasts when the bound reaches this share of capacity.
    target_share: float
    checks: tuple[Check, ...]

    def to_json(self) -> dict:
        """For the dashboard and docs: thresholds in their own units and, where they translate,
        in people (so a chart can draw them on the estimate's scale)."""

        def people(check: Check, value: float) -> int | None:
            if check.rule == "capacity":
                return round(value * self.capacity)
            if check.rule == "density" and self.size_m2:
                return round(value * self.size_m2)
            return None

        return {
            "window_s": self.window_s,
            "bound": self.bound,
            "fire_hold_s": self.fire_hold_ms // 1000,
            "clear_hold_s": self.clear_hold_ms // 1000,
            "trend_s": self.trend_ms // 1000,
            "target_share": self.target_share,
            "checks": [
                {
                    "rule": c.rule,
                    "level": c.level,
                    "trigger": c.trigger,
                    "clear": c.clear,
                    "unit": c.unit,
                    "trigger_people": people(c, c.trigger),
                    "clear_people": people(c, c.clear),
                }
                for c in self.checks
            ],
        }


# --- rules configuration ---------------------------------------------------------------------


def load_rules(
    areas: AreaMap,
    windows_s: Sequence[int],
    rules_path: Path | None = None,
    areas_path: Path | None = None,
) -> dict[str, AreaRules]:
    """The checks of every area, from (lowest precedence first): the built-in defaults, the
    rules file's ``defaults``, an area's ``alerts`` object in the areas file, the rules file's
    ``areas.<id>``. See docs/operations.md for the format."""
    rules_doc: object = {}
    if rules_path is not None:
        rules_doc = _read_json(rules_path, "alert rules file")
    areas_doc: object = {}
    if areas_path is not None:
        areas_doc = _read_json(areas_path, "areas file")
    from_areas_file: dict[str, object] = {}
    if isinstance(areas_doc, dict) and isinstance(areas_doc.get("areas"), list):
        for raw in areas_doc["areas"]:
            if isinstance(raw, dict) and "alerts" in raw and isinstance(raw.get("id"), str):
                from_areas_file[raw["id"]] = raw["alerts"]
    return parse_rules(rules_doc, areas, windows_s, str(rules_path or "<rules>"), from_areas_file)


def parse_rules(
    doc: object,
    areas: AreaMap,
    windows_s: Sequence[int],
    source: str = "<rules>",
    area_overrides: Mapping[str, object] | None = None,
) -> dict[str, AreaRules]:
    def fail(where: str, message: str) -> ValueError:
        return ValueError(f"{source}: {where}: {message}")

    if not isinstance(doc, dict):
        raise fail("top level", "must be an object with optional 'defaults' and 'areas'")
    unknown = set(doc) - {"defaults", "areas"}
    if unknown:
        raise fail("top level", f"unknown keys {sorted(unknown)}")
    defaults = doc.get("defaults", {})
    per_area = doc.get("areas", {})
    if not isinstance(defaults, dict):
        raise fail("defaults", "must be an object")
    if not isinstance(per_area, dict):
        raise fail("areas", "must be an object keyed by area id")
    for area_id in list(per_area) + list(area_overrides or {}):
        if area_id not in areas.area_by_id:
            raise fail(f"areas.{area_id}", "no such area in the areas file")
    base = _merge(DEFAULT_RULES, defaults, fail, "defaults")
    compiled: dict[str, AreaRules] = {}
    for area in areas.areas:
        merged = base
        if area_overrides and area.id in area_overrides:
            merged = _merge(merged, area_overrides[area.id], fail, f"areas file: {area.id}.alerts")
        if area.id in per_area:
            merged = _merge(merged, per_area[area.id], fail, f"areas.{area.id}")
        compiled[area.id] = _compile(area, merged, windows_s, lambda m, a=area.id: fail(f"areas.{a}", m))
    return compiled


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def _merge(base: dict, override: object, fail: Any, where: str) -> dict:
    """A rule block in an override replaces the whole block (null disables the rule)."""
    if not isinstance(override, dict):
        raise fail(where, "must be an object")
    unknown = set(override) - set(GENERAL_KEYS) - set(RULES)
    if unknown:
        raise fail(where, f"unknown keys {sorted(unknown)}")
    merged = copy.deepcopy(base)
    merged.update(copy.deepcopy(override))
    return merged


def _number(value: object, where: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(f"{where} must be a number")
    return float(value)


def _compile(area: Any, cfg: dict, windows_s: Sequence[int], fail: Any) -> AreaRules:
    window_s = cfg["window_s"]
    if window_s is None:
        window_s = HEADLINE_WINDOW_S if HEADLINE_WINDOW_S in windows_s else min(windows_s)
    if window_s not in windows_s:
        raise fail(f"window_s {window_s!r} is not one of the published windows {list(windows_s)}")
    bound = cfg["bound"]
    if bound not in BOUNDS:
        raise fail(f"bound must be one of {list(BOUNDS)}")
    holds = {}
    for name in ("fire_hold_s", "clear_hold_s", "trend_s"):
        value = _number(cfg[name], name, fail)
        if value < 0:
            raise fail(f"{name} must be >= 0")
        holds[name] = int(value * 1000)
    if holds["trend_s"] < MIN_TREND_SPAN_MS:
        raise fail(f"trend_s must be at least {MIN_TREND_SPAN_MS // 1000}")

    checks: list[Check] = []
    target_share = 0.95
    for rule in RULES:
        block = cfg.get(rule)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise fail(f"{rule} must be an object of levels or null")
        allowed = set(LEVELS) | ({"target_share"} if rule == "time_to_capacity" else set())
        unknown = set(block) - allowed
        if unknown:
            raise fail(f"{rule}: unknown keys {sorted(unknown)}")
        if rule == "density" and area.size_m2 is None:
            continue  # density needs the area's size_m2
        for level in LEVELS:
            spec = block.get(level)
            if spec is None:
                continue
            where = f"{rule}.{level}"
            if not isinstance(spec, dict):
                raise fail(f"{where} must be an object")
            if rule == "rise" and "trigger_share" in spec:
                if set(spec) != {"trigger_share", "clear_share"}:
                    raise fail(f"{where} takes trigger_share and clear_share (per minute), or trigger and clear")
                trigger = _number(spec["trigger_share"], f"{where}.trigger_share", fail) * area.capacity
                clear = _number(spec["clear_share"], f"{where}.clear_share", fail) * area.capacity
            else:
                if set(spec) != {"trigger", "clear"}:
                    raise fail(f"{where} takes exactly 'trigger' and 'clear'")
                trigger = _number(spec["trigger"], f"{where}.trigger", fail)
                clear = _number(spec["clear"], f"{where}.clear", fail)
            check = Check(rule, level, trigger, clear)
            if trigger <= 0 or clear < 0:
                raise fail(f"{where}: trigger must be > 0 and clear >= 0")
            if check.rising and not clear < trigger:
                raise fail(f"{where}: clear ({clear:g}) must be below trigger ({trigger:g})")
            if not check.rising and not clear > trigger:
                raise fail(f"{where}: clear ({clear:g} min) must be above trigger ({trigger:g} min)")
            checks.append(check)
    capacity_block = cfg.get("capacity") or {}
    critical = capacity_block.get("critical") if isinstance(capacity_block, dict) else None
    if isinstance(critical, dict) and "trigger" in critical:
        target_share = float(critical["trigger"])
    ttc = cfg.get("time_to_capacity")
    if isinstance(ttc, dict) and "target_share" in ttc:
        target_share = _number(ttc["target_share"], "time_to_capacity.target_share", fail)
        if target_share <= 0:
            raise fail("time_to_capacity.target_share must be > 0")
    return AreaRules(
        area=area.id,
        name=area.name,
        capacity=area.capacity,
        size_m2=area.size_m2,
        window_s=int(window_s),
        bound=bound,
        fire_hold_ms=holds["fire_hold_s"],
        clear_hold_ms=holds["clear_hold_s"],
        trend_ms=holds["trend_s"],
        target_share=target_share,
        checks=tuple(checks),
    )
