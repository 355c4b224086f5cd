"""The HTTP API served by every worker (Faust's web server): published estimates, ingest
statistics, alerts (list, acknowledge), the live stream (SSE), the dashboard and Prometheus
metrics. It reads the published snapshot and alert records in Redis only, never a HyperLogLog
key.

Every view is registered by `add_views` over an `ApiSources`: the narrow read interface the
worker's composition (streams/runtime/app.py) hands it, so the web layer never sees the worker's
state. Access is checked in front of all of them by streams/ops/auth.py's middleware (POST
/api/alerts/{id}/ack needs the "ack" scope). The dashboard's
page and static files (/, /static/*) hold no data.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import faust
import psycopg
import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.core.areas import AreaMap
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.estimate.estimator import Estimate
from streams.estimate.history import DAY_FIELDS, HOUR_FIELDS, utc
from streams.ops.alert_service import AlertService
from streams.ops.alerts import AlertConflict
from streams.ops.history_api import HistoryQueryError, HistoryReader, UsualLevels, history_rows, parse_query, to_csv
from streams.ops.sse import LiveFeed, register_shutdown

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ACKER = re.compile(r"^[\w .@-]{1,64}$")


class PublishedEstimates(Protocol):
    """The published estimates as the API reads them (streams/pipeline/estimate_store.py)."""

    async def latest_estimates(self) -> list[Estimate]: ...

    async def series(self, area: str, window_s: int) -> list[Estimate]: ...


@dataclass(frozen=True)
class ApiSources:
    """Everything the HTTP API reads, and nothing more."""

    settings: Settings
    areas: AreaMap
    metrics: Metrics
    alerting: AlertService
    estimates: PublishedEstimates
    #: The ingest books (events in, counted, dead-lettered, late...) and stream_time.
    ingest_stats: Callable[[], Awaitable[dict[str, Any]]]
    #: Refreshes the gauges that are read when Prometheus scrapes (estimate age, consumer lag).
    before_scrape: Callable[[], Awaitable[None]]
    #: The footfall history (None: CROWDPULSE_HISTORY_DB unset).
    history: HistoryReader | None = None


def add_views(app: faust.App, api: ApiSources) -> None:
    # faust types app.page() for its own abstract Request/Response; its aiohttp driver, the one
    # crowdpulse runs, passes aiohttp's and takes them back: the views are typed for aiohttp.
    page = cast(Callable[[str], Callable[[Callable[..., Any]], Any]], app.page)

    usual = UsualLevels(api.history, api.settings.history_window_s) if api.history is not None else None

    async def latest_annotated() -> list[Any]:
        estimates = await api.estimates.latest_estimates()
        return await usual.annotate(estimates) if usual is not None else list(estimates)

    @page("/api/areas")
    async def list_areas(self: Any, request: web.Request) -> web.Response:
        return web.json_response(await latest_annotated())

    @page("/api/areas/{area}/history")
    async def area_history(self: Any, request: web.Request, area: str) -> web.Response:
        if area not in api.areas.area_by_id:
            return _error(404, f"unknown area {area[:64]!r}")
        if api.history is None:
            return _error(404, "no footfall history is kept here (CROWDPULSE_HISTORY_DB is not set)")
        try:
            query = parse_query(dict(request.query), request.headers.get("Accept", ""), int(time.time() * 1000))
        except HistoryQueryError as exc:
            return _error(400, str(exc))
        try:
            rows = await history_rows(api.history, area, query)
        except (psycopg.Error, OSError) as exc:
            log.warning("history unavailable: %s", exc)
            return web.json_response({"error": "the footfall history (PostgreSQL) is unavailable; retry shortly"},
                                     status=503, headers={"Retry-After": "5"})
        if query.csv:
            columns = ["area", "start", *(HOUR_FIELDS if query.step == "hour" else ("day", *DAY_FIELDS))]
            return web.Response(text=to_csv(rows, columns), content_type="text/csv",
                                headers={"Content-Disposition": f'attachment; filename="{area}-{query.step}.csv"'})
        return web.json_response({"area": area, "step": query.step, "from": utc(query.start_ms).isoformat(),
                                  "to": utc(query.end_ms).isoformat(), "rows": rows})

    @page("/api/areas/{area}")
    async def show_area(self: Any, request: web.Request, area: str) -> web.Response:
        if area not in api.areas.area_by_id:
            return _error(404, f"unknown area {area[:64]!r}")
        latest = [e for e in await latest_annotated() if e["area"] == area]
        series = {str(w): await api.estimates.series(area, w) for w in api.settings.windows_s}
        spec = api.areas.area_by_id[area]
        return web.json_response(
            {"area": area, "name": spec.name, "capacity": spec.capacity, "latest": latest, "series": series}
        )

    @page("/api/ingest")
    async def ingest_stats(self: Any, request: web.Request) -> web.Response:
        return web.json_response(await api.ingest_stats())

    @page("/metrics")
    async def metrics(self: Any, request: web.Request) -> web.Response:
        try:
            await api.alerting.refresh_metrics()
        except redis.RedisError as exc:  # /metrics must answer while Redis is away
            log.warning("alert metrics not refreshed: %s", exc)
        await api.before_scrape()
        body = generate_latest(api.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- operations room: dashboard, live stream, alerts ----------------------------------------
    series = [(a, w) for a in api.areas.area_ids for w in api.settings.windows_s]

    async def points_since(since: int) -> list[dict]:
        found = await api.alerting.store.recent_points({pair: since for pair in series})
        return [e for points in found.values() for e in points]

    feed = LiveFeed(
        read_snapshot=api.estimates.latest_estimates,
        read_points=points_since,
        read_alerts=api.alerting.store.alerts,
        horizon_ms=(api.settings.grace_s + 2 * api.settings.bucket_s) * 1000,
        on_clients=api.metrics.sse_clients.set,
    )
    register_shutdown(cast(Any, app.web).web_app, feed)  # the aiohttp driver's application
    city = _map_document(api)

    @page("/")
    async def dashboard(self: Any, request: web.Request) -> web.Response:
        return _static_file("index.html")

    @page("/static/{name}")
    async def static_file(self: Any, request: web.Request, name: str) -> web.Response:
        return _static_file(name)

    @page("/api/map")
    async def city_map(self: Any, request: web.Request) -> web.Response:
        return web.json_response(city)

    @page("/api/stream")
    async def live_stream(self: Any, request: web.Request) -> web.StreamResponse:
        return await feed.serve(request)

    @page("/api/alerts")
    async def list_alerts(self: Any, request: web.Request) -> web.Response:
        return web.json_response(await api.alerting.listing())

    @page("/api/alerts/{alert_id}")
    async def show_alert(self: Any, request: web.Request, alert_id: str) -> web.Response:
        record = await api.alerting.store.get(alert_id)
        if record is None:
            return _error(404, f"unknown alert {alert_id[:128]!r}")
        return web.json_response(record)

    @app.page("/api/alerts/{alert_id}/ack")
    class AcknowledgeAlert(faust.web.View):
        async def post(self, request: web.Request, alert_id: str) -> web.Response:
            # JSON only: a cross-site form or "simple" request cannot send it without a CORS
            # preflight, which this server does not grant.
            if request.content_type != "application/json":
                return _error(415, "send a JSON body, e.g. {\"by\": \"control room\"}")
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                return _error(400, "body is not valid JSON")
            by = body.get("by", "operator") if isinstance(body, dict) else None
            if not isinstance(by, str) or not ACKER.match(by):
                return _error(400, "'by' must be 1-64 letters, digits, spaces or .@_-")
            try:
                record = await api.alerting.store.acknowledge(
                    alert_id, by, int(time.time() * 1000), api.alerting.webhook_enabled
                )
            except KeyError:
                return _error(404, f"unknown alert {alert_id[:128]!r}")
            except AlertConflict as exc:
                return _error(409, str(exc))
            return web.json_response(record)


def _static_file(name: str) -> web.Response:
    path = STATIC_DIR / name
    if not STATIC_NAME.match(name) or path.suffix not in STATIC_TYPES or not path.is_file():
        return _error(404, "no such file")
    return web.Response(
        body=path.read_bytes(),
        headers={"Content-Type": f"{STATIC_TYPES[path.suffix]}; charset=utf-8", "Cache-Control": "no-cache"},
    )


def _map_document(api: ApiSources) -> dict:
    """The city for the dashboard: cells (for the schematic map), areas and their alert rules."""
    areas = api.areas
    settings = api.settings
    rules = api.alerting.rules
    return {
        "name": areas.name,
        "bucket_s": settings.bucket_s,
        "windows_s": list(settings.windows_s),
        "min_count": settings.min_count,
        # The footfall history (docs/footfall.md): kept or not, and the window it summarises.
        "history": api.history is not None,
        "history_window_s": settings.history_window_s,
        "cells": [{"id": c.id, "x_m": c.x_m, "y_m": c.y_m, "radius_m": c.radius_m} for c in areas.cells],
        "areas": [
            {
                "id": a.id,
                "name": a.name,
                "kind": a.kind,
                "capacity": a.capacity,
                "size_m2": a.size_m2,
                "cells": list(a.cells),
                "alerts": rules[a.id].to_json(),
            }
            for a in areas.areas
        ],
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)
