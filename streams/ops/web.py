"""The HTTP API served by every worker (Faust's web server): published estimates, ingest
statistics, alerts (list, acknowledge), the live stream (SSE), the dashboard and Prometheus
metrics. It reads the published snapshot and alert records in Redis only, never a HyperLogLog
key.

Every view is registered by `add_views`; access is checked in front of all of them by
streams/ops/auth.py's middleware (POST /api/alerts/{id}/ack needs the "ack" scope). The dashboard's
page and static files (/, /static/*) hold no data.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.ops.alerts import AlertConflict
from streams.ops.sse import LiveFeed, register_shutdown
from streams.core.topics import TopicNames

if TYPE_CHECKING:
    from streams.runtime.app import Pipeline

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ACKER = re.compile(r"^[\w .@-]{1,64}$")


def add_views(app: faust.App, pipeline: Pipeline) -> None:
    @app.page("/api/areas")
    async def list_areas(self: Any, request: web.Request) -> web.Response:
        return web.json_response(await pipeline.store.latest_estimates())

    @app.page("/api/areas/{area}")
    async def show_area(self: Any, request: web.Request, area: str) -> web.Response:
        if area not in pipeline.areas.area_by_id:
            return _error(404, f"unknown area {area[:64]!r}")
        latest = [e for e in await pipeline.store.latest_estimates() if e["area"] == area]
        series = {str(w): await pipeline.store.series(area, w) for w in pipeline.settings.windows_s}
        spec = pipeline.areas.area_by_id[area]
        return web.json_response(
            {"area": area, "name": spec.name, "capacity": spec.capacity, "latest": latest, "series": series}
        )

    @app.page("/api/ingest")
    async def ingest_stats(self: Any, request: web.Request) -> web.Response:
        stats = await pipeline.store.stats()
        stats["stream_time"] = await pipeline.store.stream_now_ms()
        return web.json_response(stats)

    @app.page("/metrics")
    async def metrics(self: Any, request: web.Request) -> web.Response:
        m = pipeline.metrics
        if pipeline.last_publish_wall is not None:
            m.estimate_age.set(time.time() - pipeline.last_publish_wall)
        await _observe_at_scrape(app, pipeline)
        body = generate_latest(m.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- operations room: dashboard, live stream, alerts ----------------------------------------
    series = [(a, w) for a in pipeline.areas.area_ids for w in pipeline.settings.windows_s]

    async def points_since(since: int) -> list[dict]:
        found = await pipeline.alerting.store.recent_points({pair: since for pair in series})
        return [e for points in found.values() for e in points]

    feed = LiveFeed(
        read_snapshot=lambda: pipeline.store.latest_estimates(),
        read_points=points_since,
        read_alerts=lambda: pipeline.alerting.store.alerts(),
        horizon_ms=(pipeline.settings.grace_s + 2 * pipeline.settings.bucket_s) * 1000,
        on_clients=pipeline.metrics.sse_clients.set,
    )
    register_shutdown(app.web.web_app, feed)
    city = _map_document(pipeline)

    @app.page("/")
    async def dashboard(self: Any, request: web.Request) -> web.Response:
        return _static_file("index.html")

    @app.page("/static/{name}")
    async def static_file(self: Any, request: web.Request, name: str) -> web.Response:
        return _static_file(name)

    @app.page("/api/map")
    async def city_map(self: Any, request: web.Request) -> web.Response:
        return web.json_response(city)

    @app.page("/api/stream")
    async def live_stream(self: Any, request: web.Request) -> web.StreamResponse:
        return await feed.serve(request)

    @app.page("/api/alerts")
    async def list_alerts(self: Any, request: web.Request) -> web.Response:
        return web.json_response(await pipeline.alerting.listing())

    @app.page("/api/alerts/{alert_id}")
    async def show_alert(self: Any, request: web.Request, alert_id: str) -> web.Response:
        record = await pipeline.alerting.store.get(alert_id)
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
                record = await pipeline.alerting.store.acknowledge(
                    alert_id, by, int(time.time() * 1000), pipeline.alerting.webhook_enabled
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


def _map_document(pipeline: Pipeline) -> dict:
    """The city for the dashboard: cells (for the schematic map), areas and their alert rules."""
    areas = pipeline.areas
    settings = pipeline.settings
    rules = pipeline.alerting.rules
    return {
        "name": areas.name,
        "bucket_s": settings.bucket_s,
        "windows_s": list(settings.windows_s),
        "min_count": settings.min_count,
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


async def _observe_at_scrape(app: faust.App, pipeline: Pipeline) -> None:
    """Gauges read when Prometheus scrapes: alert state (Redis) and consumer lag."""
    try:
        await pipeline.alerting.refresh_metrics()
    except redis.RedisError as exc:  # /metrics must answer while Redis is away
        log.warning("alert metrics not refreshed: %s", exc)
    # Lag of the crowd.events partitions this worker owns: the consumer's highwater (as of its
    # last fetch) minus the next offset the pipeline has to apply (its applied offset + 1).
    lag = pipeline.metrics.consumer_lag
    lag.clear()
    consumer = getattr(app, "_consumer", None)  # never create a consumer just to scrape
    if consumer is None:
        return
    events = TopicNames(pipeline.settings.topic_prefix).events
    try:
        assignment = consumer.assignment()
    except Exception:  # not started or being rebalanced
        return
    for tp in assignment:
        if tp.topic != events:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # the aiokafka consumer is not (yet) running
            continue
        state = pipeline.ingestor.partitions.get(tp.partition)
        if highwater is None:
            continue
        applied = state.applied_offset if state is not None else -1
        lag.labels(str(tp.partition)).set(max(0, highwater - applied - 1))



def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)
