"""The alert side of one worker: the rules, the leader's alert pass over each estimator pass's
estimates, the outbox published on crowd.alerts, the listing the API serves and the alert
gauges read at scrape. State lives in Redis through streams/ops/alert_store.py."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from streams.core.areas import AreaMap
from streams.core.keys import KeyLayout
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.estimate.estimator import Estimate
from streams.ops.alert_rules import load_rules
from streams.ops.alert_store import AlertStore
from streams.ops.alerts import Transition, evaluate_area, point_value, reconcile

log = logging.getLogger(__name__)


class AlertService:
    """The alert side of one worker: rules, the leader's pass, the outbox, metrics at scrape."""

    def __init__(
        self,
        settings: Settings,
        areas: AreaMap,
        keys: KeyLayout,
        metrics: Metrics,
        store: AlertStore,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.metrics = metrics
        self.rules = load_rules(areas, settings.windows_s, settings.alert_rules_path, settings.areas_path)
        self.store = store
        self.webhook_enabled = settings.webhook_url is not None

    async def evaluate(self, estimates: Iterable[Estimate]) -> list[dict]:
        """Run the checks over this pass's estimates (each area's alert window only) and store
        the outcome; returns the events queued."""
        points: dict[str, list[tuple[int, float]]] = {}
        for e in estimates:
            rules = self.rules.get(e["area"])
            # An uncertain estimate (its range spans ok to critical) neither fires nor clears an
            # alert: the tile says uncertain, and an alert must not say otherwise.
            if rules is not None and e["window_s"] == rules.window_s and e.get("level") != "uncertain":
                points.setdefault(e["area"], []).append((e["as_of"], point_value(e, rules.bound)))
        if not points:
            return []
        store = self.store
        states = await store.engine_states()
        wanted: dict[tuple[str, int], int | None] = {}
        for area, pts in points.items():
            rules = self.rules[area]
            # Known state: only the trend window is needed. No state: the whole series, to
            # rebuild episodes that began before (so they keep their ids).
            wanted[(area, rules.window_s)] = min(t for t, _ in pts) - rules.trend_ms if area in states else None
        series = await store.recent_points(wanted)
        active: dict[str, dict[tuple[str, str], dict]] = {}
        if any(area not in states for area in points):
            for r in await store.alerts():
                if r["state"] != "resolved":
                    active.setdefault(r["area"], {})[(r["rule"], r["level"])] = r
        new_states: dict[str, dict] = {}
        transitions: list[Transition] = []
        for area, pts in points.items():
            rules = self.rules[area]
            mine = series[(area, rules.window_s)]  # (this pass's estimates included: saved first)
            history = [(e["as_of"], point_value(e, rules.bound)) for e in mine]
            warming = {e["as_of"] for e in mine if e.get("warming_up")}
            new_states[area], found = evaluate_area(rules, states.get(area), pts, history, warming)
            if area not in states:  # rebuilt from the series: line up with alerts already raised
                found = reconcile(rules, new_states[area], found, active.get(area, {}))
            transitions.extend(found)
        events = await store.commit(new_states, transitions, self.rules, self.webhook_enabled)
        for alert in events:
            if alert["event"] == "fired":
                self.metrics.alerts_fired.labels(alert["rule"], alert["level"]).inc()
                log.warning("alert fired: %s (%s)", alert["message"], alert["id"])
            elif alert["event"] == "resolved":
                log.info("alert resolved: %s", alert["id"])
        return events

    async def publish_outbox(self, send: Callable[[dict], Awaitable[Any]]) -> int:
        """Send queued events (oldest first), then drop them from the outbox. A crash between
        the two sends them again on the next pass: consumers dedupe by event_id."""
        events = await self.store.outbox()
        for e in events:
            await send(e)
        if events:
            await self.store.drop_outbox(len(events))
        return len(events)

    async def listing(self) -> dict:
        """GET /api/alerts: active alerts (critical first, then newest) and recently resolved."""
        records = await self.store.alerts()
        severity = {"critical": 0, "warn": 1}
        active = sorted(
            (r for r in records if r["state"] != "resolved"), key=lambda r: (severity.get(r["level"], 9), -r["fired_at"])
        )
        recent = [r for r in records if r["state"] == "resolved"][:100]
        return {"active": active, "recent": recent}

    async def refresh_metrics(self) -> None:
        """Alert gauges from Redis (all workers agree), read when /metrics is scraped."""
        records = await self.store.alerts()
        gauge = self.metrics.alerts_active
        gauge.clear()
        for r in records:
            if r["state"] != "resolved":
                gauge.labels(r["area"], r["level"], r["state"]).inc()
        if self.webhook_enabled:
            self.metrics.webhook_queue.set(await self.store.webhook_length())
