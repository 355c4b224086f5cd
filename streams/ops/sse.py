"""Server-sent events for ``GET /api/stream``: every new or changed estimate and alert.

Each worker serves the API from Redis, so the stream is built from what every worker can see:
one poller per worker process reads, once per second, the recent points of every (area, window)
series and the alert records, diffs them with what it saw last, and fans the changes out to
every open connection. Reading the series, not only the latest snapshot, means every point
reaches the stream even when the estimator publishes several buckets within a second (a
catch-up), and so do points republished by late events within `horizon_ms` of the newest.
The poller runs only while someone is connected. A new connection first gets the current
snapshot and every alert, so a dashboard that reconnects needs no replay.

Wire format (text/event-stream): ``event: estimate`` with an estimate (the published Estimate: docs/estimation.md, its first table) or
``event: alert`` with an alert record (docs/operations.md), ``data:`` one line of JSON each;
a ``: keepalive`` comment every 15 s; ``retry: 3000`` asks browsers to reconnect after 3 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
#: A client this far behind is too slow to follow: it is disconnected (EventSource reconnects
#: and starts again from the current state).
MAX_BACKLOG = 2000

Record = Mapping[str, Any]  # an estimate or an alert, as JSON
Item = tuple[str, Record]


def sse_message(event: str, data: object) -> bytes:
    """One event; json.dumps escapes newlines, so the data is always a single line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _point_key(e: Record) -> tuple[str, int, int]:
    return (e["area"], e["window_s"], e["as_of"])


class LiveFeed:
    def __init__(
        self,
        read_snapshot: Callable[[], Awaitable[Sequence[Record]]],
        read_points: Callable[[int], Awaitable[Sequence[Record]]],
        read_alerts: Callable[[], Awaitable[Sequence[Record]]],
        horizon_ms: int,
        on_clients: Callable[[int], None] = lambda n: None,
        interval_s: float = 1.0,
    ) -> None:
        """read_snapshot: the latest estimate per (area, window); read_points(since): every
        series point with as_of >= since; horizon_ms: how far behind the newest point a
        republished point is still streamed (the lateness grace plus a bucket or two)."""
        self._read_snapshot = read_snapshot
        self._read_points = read_points
        self._read_alerts = read_alerts
        self.horizon_ms = horizon_ms
        self._on_clients = on_clients
        self.interval_s = interval_s
        self._subscribers: set[asyncio.Queue[Item | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._points: dict[tuple[str, int, int], Record] = {}
        self._newest: int | None = None
        self._alerts: dict[str, Record] = {}
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    async def subscribe(self) -> asyncio.Queue[Item | None]:
        estimates, alerts = await self._read_snapshot(), await self._read_alerts()
        queue: asyncio.Queue[Item | None] = asyncio.Queue()
        for e in estimates:
            queue.put_nowait(("estimate", e))
        for a in sorted(alerts, key=lambda r: r["fired_at"]):
            queue.put_nowait(("alert", a))
        if self._task is None or self._task.done():
            # The poller starts from this state, so the first client gets nothing twice.
            self._points = {_point_key(e): e for e in estimates}
            self._newest = max((e["as_of"] for e in estimates), default=None)
            self._alerts = {a["id"]: a for a in alerts}
            self._task = asyncio.ensure_future(self._poll())
        self._subscribers.add(queue)
        self._on_clients(len(self._subscribers))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Item | None]) -> None:
        self._subscribers.discard(queue)
        self._on_clients(len(self._subscribers))

    def close(self) -> None:
        """Ends every open stream (server shutdown), so no handler holds the stop up."""
        self._closed = True
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()

    async def _poll(self) -> None:
        while self._subscribers and not self._closed:
            await asyncio.sleep(self.interval_s)
            try:
                changes = await self._changes()
            except Exception as exc:  # Redis away: say so, keep the connections, try again
                log.warning("live feed could not read Redis: %s", exc)
                continue
            for queue in list(self._subscribers):
                if queue.qsize() > MAX_BACKLOG:
                    self._subscribers.discard(queue)
                    queue.put_nowait(None)
                    continue
                for item in changes:
                    queue.put_nowait(item)

    async def _changes(self) -> list[Item]:
        changes: list[Item] = []
        if self._newest is None:  # nothing published yet: wait for a first snapshot
            points = await self._read_snapshot()
        else:
            points = await self._read_points(self._newest - self.horizon_ms)
        # Oldest first, so a client's "latest" ends on the newest point.
        for e in sorted(points, key=lambda e: (e["as_of"], e["area"], e["window_s"])):
            key = _point_key(e)
            if self._points.get(key) != e:
                self._points[key] = e
                changes.append(("estimate", e))
            self._newest = e["as_of"] if self._newest is None else max(self._newest, e["as_of"])
        if self._newest is not None:
            cutoff = self._newest - self.horizon_ms
            self._points = {k: v for k, v in self._points.items() if k[2] >= cutoff}
        alerts = await self._read_alerts()
        for a in sorted(alerts, key=lambda r: r["fired_at"]):
            if self._alerts.get(a["id"]) != a:
                self._alerts[a["id"]] = a
                changes.append(("alert", a))
        return changes

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The /api/stream handler body: stream until the client leaves or the server stops."""
        if self._closed:
            return web.json_response({"error": "shutting down", "status": 503}, status=503)
        # Subscribe before sending headers: if Redis cannot be read, the client gets an error
        # status, not an empty 200 stream. (EventSource gives up on an error status; the
        # dashboard then reconnects by itself.)
        queue = await self.subscribe()
        # Alerts only for a token with the alerts scope (streams/ops/auth.py sets the scopes).
        with_alerts = "alerts" in request.get("scopes", ("alerts",))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a reverse proxy must not buffer the stream
            }
        )
        try:
            await response.prepare(request)
            await response.write(b"retry: 3000\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if item is None:
                    break
                if item[0] == "alert" and not with_alerts:
                    continue
                await response.write(sse_message(*item))
        except (ConnectionResetError, ConnectionError, RuntimeError) as exc:
            # The client went away (aiohttp raises ConnectionResetError, or RuntimeError on a
            # closed transport): nothing to clean up but our subscription.
            log.debug("sse client left: %s", exc)
        finally:
            self.unsubscribe(queue)
        return response


def register_shutdown(web_app: Any, feed: LiveFeed) -> None:
    """Close open streams when the web server stops (aiohttp runs on_shutdown before it waits
    for handlers to finish, so a stream never holds a worker's stop up)."""

    async def _close(_app: Any) -> None:
        feed.close()

    web_app.on_shutdown.append(_close)
