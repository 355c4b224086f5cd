"""Alert state in real Redis (one Redis and a Redis Cluster): a pass is stored once, a restarted service (or one whose engine
state was lost and rebuilt from the series) never fires the same alert again, and the lifecycle
firing -> acknowledged -> resolved holds, with one event per step in the outbox."""

from __future__ import annotations

import json
import secrets

import pytest

from streams.core.areas import load_areas
from streams.core.keys import KeyLayout
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.estimate.estimator import hll_range
from streams.ops.alert_service import AlertService
from streams.ops.alert_store import AlertStore
from streams.ops.alerts import AlertConflict
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.redis_io import connect, connect_sync

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_767_600_000_000


def stadium_estimate(as_of: int, devices: int) -> dict:
    r = hll_range(devices)
    return {
        "area": "stadium", "window_s": 900, "as_of": as_of, "devices": devices, "people": r.people,
        "people_low": r.low, "people_high": r.high, "suppressed": False, "capacity": 60_000, "level": "ok",
    }


class Worker:
    """What one worker holds: its own Redis connection and a fresh AlertService (a restart)."""

    def __init__(self, redis_url: str, namespace: str, webhook: bool = False) -> None:
        extra = {"webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "s"} if webhook else {}
        self.settings = Settings(redis_url=redis_url, namespace=namespace, **extra)
        self.keys = KeyLayout(namespace, 60)
        self.client = connect(redis_url)
        self.published = EstimateStore(self.client, self.keys)
        self.alerts = AlertService(self.settings, load_areas(self.settings.areas_path), self.keys, Metrics(), AlertStore(self.client, self.keys))

    async def minute(self, as_of: int, devices: int) -> list[dict]:
        """What the leader's timer does with one new point: save it, then run the alert pass."""
        estimate = stadium_estimate(as_of, devices)
        await self.published.save_estimates([estimate], as_of, 180 * MIN)
        return await self.alerts.evaluate([estimate])

    async def close(self) -> None:
        await self.client.aclose()


@pytest.fixture
def namespace() -> str:
    return f"alerts{secrets.token_hex(4)}"


async def test_restart_and_lost_state_never_fire_twice_and_the_lifecycle_holds(any_redis, namespace) -> None:
    a = Worker(any_redis.redis_url, namespace, webhook=True)
    fired: list[dict] = []
    for i in range(4):
        fired += await a.minute(T0 + i * MIN, 53_000)  # 53,000 people: 88% of capacity
    assert [(e["event"], e["id"]) for e in fired] == [("fired", f"stadium.capacity.warn.{T0}")]
    alert = fired[0]
    assert alert["state"] == "firing" and alert["started_at"] == T0 and alert["fired_at"] == T0 + MIN
    await a.close()

    # A restarted worker continues the episode from the engine state in Redis.
    b = Worker(any_redis.redis_url, namespace, webhook=True)
    assert await b.minute(T0 + 4 * MIN, 53_500) == []
    # The engine state is lost (or a new deployment reads an old namespace): it is rebuilt from
    # the series, the episode keeps its start and so its id, and the store drops the repeat.
    await b.client.delete(b.keys.alert_engine)
    c = Worker(any_redis.redis_url, namespace, webhook=True)
    assert await c.minute(T0 + 5 * MIN, 53_500) == []
    listing = await c.alerts.listing()
    assert [r["id"] for r in listing["active"]] == [alert["id"]]
    outbox = await c.alerts.store.outbox()
    assert [e["event_id"] for e in outbox] == [f"{alert['id']}/fired"]

    # Acknowledge (twice: the second changes nothing), then the crowd leaves: resolved.
    acked = await c.alerts.store.acknowledge(alert["id"], "control room", 1_800_000_000_000, webhook=True)
    again = await c.alerts.store.acknowledge(alert["id"], "someone", 1_800_000_000_001, webhook=True)
    assert acked["state"] == again["state"] == "acknowledged" and again["acknowledged_by"] == "control room"
    with pytest.raises(KeyError):
        await c.alerts.store.acknowledge("stadium.capacity.warn.1", "x", 1, webhook=True)
    events: list[dict] = []
    for i in range(6, 13):
        events += await c.minute(T0 + i * MIN, 20_000)
    assert [e["event"] for e in events] == ["resolved"]
    resolved = (await c.alerts.listing())["recent"][0]
    assert resolved["state"] == "resolved" and resolved["resolved_at"] == T0 + 11 * MIN
    assert resolved["acknowledged_by"] == "control room"
    with pytest.raises(AlertConflict):
        await c.alerts.store.acknowledge(alert["id"], "late", 1, webhook=True)

    # One event per step, in order, on the outbox and on the webhook queue alike.
    expected = [f"{alert['id']}/{kind}" for kind in ("fired", "acknowledged", "resolved")]
    assert [e["event_id"] for e in await c.alerts.store.outbox()] == expected
    webhook = await c.client.lrange(c.keys.alert_webhook_queue, 0, -1)
    assert [json.loads(body)["event_id"] for body in webhook] == expected

    # Publishing drains the outbox; what was sent is exactly the events above.
    sent: list[dict] = []

    async def send(e: dict) -> None:
        sent.append(e)

    assert await c.alerts.publish_outbox(send) == 3
    assert [e["event_id"] for e in sent] == expected and await c.alerts.store.outbox() == []

    # Metrics at scrape time come from Redis: nothing active any more.
    await c.alerts.refresh_metrics()
    samples = [s for m in c.alerts.metrics.alerts_active.collect() for s in m.samples]
    assert samples == []
    await c.client.delete(*[k async for k in c.client.scan_iter(f"{namespace}:*")])
    await b.close()
    await c.close()


async def test_an_ack_between_the_leaders_read_and_write_is_not_lost(any_redis, namespace, monkeypatch) -> None:
    """An operator acks on another worker while the leader is resolving the same alert: the
    leader's transaction is WATCHing the records, fails, re-reads and keeps the ack."""
    from streams.ops import alert_store
    from streams.ops.alerts import acknowledge

    w = Worker(any_redis.redis_url, namespace)
    for i in range(3):
        await w.minute(T0 + i * MIN, 53_000)
    alert_id = f"stadium.capacity.warn.{T0}"
    for i in range(3, 8):
        assert await w.minute(T0 + i * MIN, 20_000) == []  # below clear; minute 8 resolves it

    other_worker = connect_sync(any_redis.redis_url)
    real_resolve = alert_store.resolve
    calls: list[str] = []

    def resolve_while_someone_acks(record: dict, t):  # runs between the leader's read and EXEC
        calls.append(record["state"])
        if len(calls) == 1:
            acked = acknowledge(record, "desk", 1_800_000_000_000)
            other_worker.hset(w.keys.alert_records, alert_id, json.dumps(acked))
        return real_resolve(record, t)

    monkeypatch.setattr(alert_store, "resolve", resolve_while_someone_acks)
    events = await w.minute(T0 + 8 * MIN, 20_000)
    assert calls == ["firing", "acknowledged"], "the first transaction must fail and be retried"
    final = await w.alerts.store.get(alert_id)
    assert final is not None and final["state"] == "resolved" and final["acknowledged_by"] == "desk"
    assert [e["event"] for e in events] == ["resolved"]
    other_worker.close()
    await w.client.delete(*[k async for k in w.client.scan_iter(f"{namespace}:*")])
    await w.close()
