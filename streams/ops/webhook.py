"""The alert webhook: each alert event is POSTed as JSON, signed with HMAC-SHA256, retried with
exponential backoff, and dropped (counted) after the last attempt.

It runs in its own leader-only timer, reading the queue streams/ops/alert_store.py fills, so a slow
or dead receiver delays only other webhook deliveries, never the stream or the estimates.

Signature (verify with `verify_signature`, also in docs/operations.md):

    X-Crowdpulse-Timestamp: <unix seconds when this attempt was sent>
    X-Crowdpulse-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Signing the timestamp with the body lets a receiver refuse stale replays of a captured request.
Delivery is at-least-once (a receiver that times out may get the same event again); the
`X-Crowdpulse-Event-Id` header (also `event_id` in the body) identifies repeats.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from streams.core.metrics import Metrics
from streams.core.settings import Settings

if TYPE_CHECKING:
    from streams.ops.alert_store import AlertStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Crowdpulse-Signature"
TIMESTAMP_HEADER = "X-Crowdpulse-Timestamp"
EVENT_ID_HEADER = "X-Crowdpulse-Event-Id"
#: Default freshness window for receivers checking the timestamp.
TOLERANCE_S = 300

#: post(url, body, headers, timeout_s) -> HTTP status; raises on connection errors and timeouts.
PostFn = Callable[[str, bytes, Mapping[str, str], float], Awaitable[int]]


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes, timestamp: str, body: bytes, signature: str, now_s: float | None = None, tolerance_s: int = TOLERANCE_S
) -> bool:
    """For receivers: True if `signature` is ours for this body and the timestamp is fresh."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt n+1 after attempt n failed: base * factor**(n-1), at most max_s."""

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * self.factor ** (attempt - 1))


def _retryable(status: int) -> bool:
    # 408 and 429 are "try later"; other 4xx say the request itself is wrong: retrying won't help.
    return status >= 500 or status in (408, 429)


async def deliver(
    post: PostFn,
    url: str,
    secret: str,
    body: bytes,
    event_id: str,
    *,
    max_attempts: int,
    timeout_s: float,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    on_failure: Callable[[str], None] = lambda reason: None,
) -> bool:
    """POST one event until a 2xx or until attempts run out; True if delivered. Each attempt is
    signed afresh (its own timestamp). `on_failure(reason)` is called for every failed attempt."""
    for attempt in range(1, max_attempts + 1):
        timestamp = int(clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            EVENT_ID_HEADER: event_id,
        }
        try:
            status = await post(url, body, headers, timeout_s)
        except asyncio.TimeoutError:
            reason = "timeout"
        except (aiohttp.ClientError, OSError):
            reason = "connection"
        else:
            if 200 <= status < 300:
                return True
            reason = f"http_{status // 100}xx"
            if not _retryable(status):
                on_failure(reason)
                log.warning("webhook refused event %s with HTTP %d; not retrying", event_id, status)
                return False
        on_failure(reason)
        if attempt < max_attempts:
            delay = backoff.delay(attempt)
            log.info("webhook attempt %d for %s failed (%s); retrying in %.1fs", attempt, event_id, reason, delay)
            await sleep(delay)
    log.warning("webhook gave up on event %s after %d attempts", event_id, max_attempts)
    return False


class WebhookSender:
    """Drains the webhook queue in Redis, one event at a time, oldest first."""

    def __init__(self, settings: Settings, metrics: Metrics, post: PostFn | None = None, backoff: Backoff = Backoff()) -> None:
        if not settings.webhook_url or not settings.webhook_secret:
            raise ValueError("WebhookSender needs webhook_url and webhook_secret")
        self.url = settings.webhook_url
        self.secret = settings.webhook_secret
        self.max_attempts = settings.webhook_max_attempts
        self.timeout_s = settings.webhook_timeout_s
        self.metrics = metrics
        self.backoff = backoff
        self._post = post
        self._session: aiohttp.ClientSession | None = None

    async def _aiohttp_post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(url, data=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.read()
            return response.status

    async def drain(self, store: AlertStore, keep_going: Callable[[], bool] = lambda: True) -> int:
        """Deliver (or drop) everything queued, while `keep_going()` (the worker is still the
        leader); returns how many events were taken."""
        taken = 0
        while keep_going() and (body := await store.webhook_next()) is not None:
            try:
                event_id = str(json.loads(body).get("event_id", ""))
            except ValueError:
                event_id = ""
            ok = await deliver(
                self._post or self._aiohttp_post,
                self.url,
                self.secret,
                body,
                event_id,
                max_attempts=self.max_attempts,
                timeout_s=self.timeout_s,
                backoff=self.backoff,
                on_failure=lambda reason: self.metrics.webhook_failures.labels(reason).inc(),
            )
            self.metrics.webhook_deliveries.labels("delivered" if ok else "dropped").inc()
            await store.webhook_done(body)
            taken += 1
        return taken

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
