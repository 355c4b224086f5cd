"""The live feed behind /api/stream: the wire format, a first snapshot, every new point (even
several per poll), republished points within the horizon, alert changes, and a clean close.
Readers are in-memory fakes; tests/integration/ runs the real endpoint."""

from __future__ import annotations

import asyncio
import json

from streams.ops.sse import LiveFeed, sse_message

MIN = 60_000


def estimate(area: str, as_of: int, people: int, window: int = 300) -> dict:
    return {"area": area, "window_s": window, "as_of": as_of, "people": people, "suppressed": False}


class Redisish:
    """What the feed reads: a snapshot, series points and alert records."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, int, int], dict] = {}
        self.alerts: dict[str, dict] = {}

    def publish(self, e: dict) -> None:
        self.series[(e["area"], e["window_s"], e["as_of"])] = e

    async def snapshot(self) -> list[dict]:
        latest: dict[tuple[str, int], dict] = {}
        for e in sorted(self.series.values(), key=lambda e: e["as_of"]):
            latest[(e["area"], e["window_s"])] = e
        return list(latest.values())

    async def points(self, since: int) -> list[dict]:
        return [e for e in self.series.values() if e["as_of"] >= since]

    async def read_alerts(self) -> list[dict]:
        return list(self.alerts.values())


async def take(queue: asyncio.Queue, n: int) -> list:
    """The next n items (waiting as long as a loaded machine needs), then nothing more for a
    few poll intervals."""
    items = [await asyncio.wait_for(queue.get(), 10) for _ in range(n)]
    await asyncio.sleep(0.1)
    assert queue.empty(), f"unexpected extra items: {[queue.get_nowait() for _ in range(queue.qsize())]}"
    return items


def test_one_event_per_message_on_one_data_line() -> None:
    body = sse_message("alert", {"message": "two\nlines", "n": 1})
    assert body.startswith(b"event: alert\ndata: ") and body.endswith(b"\n\n")
    assert body.count(b"\n") == 3  # event line, data line, blank line
    assert json.loads(body.split(b"data: ")[1]) == {"message": "two\nlines", "n": 1}


async def test_the_feed_streams_every_point_and_alert_change() -> None:
    redis = Redisish()
    redis.publish(estimate("stadium", 10 * MIN, 100))
    clients: list[int] = []
    feed = LiveFeed(redis.snapshot, redis.points, redis.read_alerts, horizon_ms=3 * MIN, on_clients=clients.append, interval_s=0.02)
    queue = await feed.subscribe()
    assert await take(queue, 1) == [("estimate", estimate("stadium", 10 * MIN, 100))]

    # Three buckets published between two polls (a catch-up): all three arrive, in order.
    for i in (11, 12, 13):
        redis.publish(estimate("stadium", i * MIN, 100 + i))
    got = await take(queue, 3)
    assert [e["as_of"] for kind, e in got] == [11 * MIN, 12 * MIN, 13 * MIN]

    # A late event republishes minute 12 (within the horizon): streamed; an unchanged point is not.
    redis.publish(estimate("stadium", 12 * MIN, 999))
    assert await take(queue, 1) == [("estimate", estimate("stadium", 12 * MIN, 999))]

    # An alert fires, then is acknowledged: two events.
    redis.alerts["a"] = {"id": "a", "fired_at": 1, "state": "firing"}
    assert await take(queue, 1) == [("alert", {"id": "a", "fired_at": 1, "state": "firing"})]
    redis.alerts["a"] = {"id": "a", "fired_at": 1, "state": "acknowledged"}
    assert await take(queue, 1) == [("alert", {"id": "a", "fired_at": 1, "state": "acknowledged"})]

    # A second client starts from the current state.
    second = await feed.subscribe()
    first_items = await take(second, 2)
    assert ("estimate", estimate("stadium", 13 * MIN, 113)) in first_items
    assert ("alert", {"id": "a", "fired_at": 1, "state": "acknowledged"}) in first_items
    assert clients[-1] == 2

    feed.close()
    assert await take(queue, 1) == [None]  # the handler ends its response
    feed.unsubscribe(queue)
    feed.unsubscribe(second)
    assert clients[-1] == 0
