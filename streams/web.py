"""The HTTP API served by every worker (Faust's web server): published estimates, ingest
statistics and Prometheus metrics. It reads the published snapshot in Redis only, never a
HyperLogLog key."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import faust
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .app import Pipeline


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
        body = generate_latest(m.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})



def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)
