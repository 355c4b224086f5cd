"""The webhook: HMAC signature, retries with backoff, give-up, and draining the queue. The HTTP
call is injected here; tests/integration/ops/test_alerts_pipeline.py uses a real receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import aiohttp
import pytest

from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.ops.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Backoff,
    WebhookSender,
    deliver,
    sign,
    verify_signature,
)

SECRET = "s3cret"
BODY = b'{"id":"stadium.capacity.critical.1767600000000","event":"fired"}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1767600000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_767_600_000, BODY) == f"sha256={expected}"


def test_verify_accepts_ours_and_refuses_tampering_staleness_and_garbage() -> None:
    ts = 1_767_600_000
    good = sign(SECRET, ts, BODY)
    assert verify_signature(SECRET, str(ts), BODY, good, now_s=ts + 10)
    assert not verify_signature(SECRET, str(ts), BODY + b" ", good, now_s=ts)  # body changed
    assert not verify_signature("other", str(ts), BODY, good, now_s=ts)  # wrong key
    assert not verify_signature(SECRET, str(ts + 1), BODY, good, now_s=ts)  # timestamp changed
    assert not verify_signature(SECRET, str(ts), BODY, good, now_s=ts + 301)  # too old: a replay
    assert not verify_signature(SECRET, "yesterday", BODY, good, now_s=ts)


class FakeReceiver:
    """Answers with the scripted outcomes in turn (an int status, or an exception to raise)."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.requests: list[tuple[bytes, dict]] = []

    async def __call__(self, url: str, body: bytes, headers, timeout_s: float) -> int:
        self.requests.append((body, dict(headers)))
        outcome = self.script.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return int(outcome)  # type: ignore[arg-type]


async def test_retries_with_backoff_until_delivered_each_attempt_signed() -> None:
    receiver = FakeReceiver(503, aiohttp.ClientConnectionError("refused"), asyncio.TimeoutError(), 204)
    sleeps: list[float] = []
    failures: list[str] = []
    clock = iter([100.0, 101.0, 103.0, 107.0])

    async def sleep(s: float) -> None:
        sleeps.append(s)

    ok = await deliver(
        receiver, "http://receiver/hook", SECRET, BODY, "e/fired", max_attempts=6, timeout_s=5,
        backoff=Backoff(1.0, 2.0, 60.0), sleep=sleep, clock=lambda: next(clock), on_failure=failures.append,
    )
    assert ok is True
    assert sleeps == [1.0, 2.0, 4.0]
    assert failures == ["http_5xx", "connection", "timeout"]
    assert len(receiver.requests) == 4
    for (body, headers), ts in zip(receiver.requests, (100, 101, 103, 107)):
        assert body == BODY and headers[EVENT_ID_HEADER] == "e/fired"
        assert headers[TIMESTAMP_HEADER] == str(ts)
        assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], now_s=ts)


async def test_gives_up_after_max_attempts_with_capped_backoff() -> None:
    receiver = FakeReceiver(*([500] * 6))
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    ok = await deliver(receiver, "http://r", SECRET, BODY, "e", max_attempts=6, timeout_s=1, backoff=Backoff(1.0, 2.0, 5.0), sleep=sleep)
    assert ok is False and len(receiver.requests) == 6
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]  # no sleep after the last attempt


async def test_a_client_error_is_not_retried_but_429_is() -> None:
    receiver = FakeReceiver(400)
    assert await deliver(receiver, "http://r", SECRET, BODY, "e", max_attempts=5, timeout_s=1, sleep=_no_sleep) is False
    assert len(receiver.requests) == 1
    receiver = FakeReceiver(429, 200)
    assert await deliver(receiver, "http://r", SECRET, BODY, "e", max_attempts=5, timeout_s=1, sleep=_no_sleep) is True
    assert len(receiver.requests) == 2


async def _no_sleep(_: float) -> None:
    return None


class ListQueue:
    """The two calls WebhookSender makes on AlertStore, over a Python list."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = list(bodies)

    async def webhook_next(self) -> bytes | None:
        return self.bodies[0] if self.bodies else None

    async def webhook_done(self, body: bytes) -> None:
        self.bodies.remove(body)


async def test_sender_drains_in_order_and_counts_delivered_and_dropped() -> None:
    settings = Settings(webhook_url="http://r/hook", webhook_secret=SECRET, webhook_max_attempts=2)
    metrics = Metrics()
    events = [json.dumps({"event_id": f"a{i}/fired"}).encode() for i in range(3)]
    receiver = FakeReceiver(200, 500, 500, 200)  # the second event fails twice: dropped
    sender = WebhookSender(settings, metrics, post=receiver, backoff=Backoff(0.0, 1.0, 0.0))
    queue = ListQueue(events)
    assert await sender.drain(queue) == 3  # type: ignore[arg-type]
    assert queue.bodies == []
    assert [h[EVENT_ID_HEADER] for _, h in receiver.requests] == ["a0/fired", "a1/fired", "a1/fired", "a2/fired"]
    assert metrics.webhook_deliveries.labels("delivered")._value.get() == 2
    assert metrics.webhook_deliveries.labels("dropped")._value.get() == 1
    assert metrics.webhook_failures.labels("http_5xx")._value.get() == 2


def test_a_webhook_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        Settings(webhook_url="https://hooks.example/crowd")
    with pytest.raises(ValueError, match="http"):
        Settings(webhook_url="ftp://x", webhook_secret="s")
    assert "s3cret" not in repr(Settings(webhook_url="https://h/x", webhook_secret=SECRET))


async def test_a_worker_that_stops_being_leader_stops_draining() -> None:
    settings = Settings(webhook_url="http://r/hook", webhook_secret=SECRET)
    receiver = FakeReceiver(200, 200, 200)
    sender = WebhookSender(settings, Metrics(), post=receiver)
    queue = ListQueue([b'{"event_id":"a"}', b'{"event_id":"b"}', b'{"event_id":"c"}'])
    leader = iter([True, False])
    assert await sender.drain(queue, keep_going=lambda: next(leader)) == 1  # type: ignore[arg-type]
    assert len(queue.bodies) == 2 and len(receiver.requests) == 1
