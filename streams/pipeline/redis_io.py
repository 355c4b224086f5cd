"""How the pipeline talks to Redis: the asyncio client, pre-packed commands sent like a pipeline,
and the retry of an operation while Redis is unreachable. Shared by the stores (hll_store,
estimate_store) and the services that call them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Commands per pipeline round trip for the estimator's reads and writes.
COMMANDS_PER_PIPELINE = 2000
#: What a retried operation waits for: Redis away, slow, or still loading its data.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client for a redis:// or rediss:// URL."""
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


async def send_packed(client: aioredis.Redis, chunks: list[tuple[bytes, int]], replies: bool = False) -> list:
    """Send pre-packed commands on one connection and read their replies, like a
    non-transactional pipeline: a chunk's replies are read while the next chunk waits in
    Redis' input, every reply is read even after an error reply (so the connection stays in
    step) and the first error is raised. A connection that fails or is interrupted halfway
    is closed, never handed back with replies pending. With `replies`, returns them."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    error: redis.ResponseError | None = None
    out: list = []

    async def read_replies(count: int) -> None:
        nonlocal error
        for _ in range(count):
            try:
                reply = await connection.read_response()
            except redis.ResponseError as exc:
                error = error or exc
                reply = None
            if replies:
                out.append(reply)

    try:
        pending: list[int] = []
        for payload, commands in chunks:
            # A health-check PING must never be sent with replies still pending.
            await connection.send_packed_command(payload, check_health=not pending)
            pending.append(commands)
            if len(pending) > 1:
                await read_replies(pending.pop(0))
        for commands in pending:
            await read_replies(commands)
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    if error is not None:
        raise error
    return out


def pack_command(*args: str) -> list[bytes]:
    """RESP bytes of a small command."""
    encoded = [a.encode() for a in args]
    return [b"*%d\r\n" % len(encoded), *(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded)]


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients are made with decode_responses=False: bytes)."""
    return value.decode() if isinstance(value, bytes) else value


async def with_retry(operation: Callable[[], Awaitable[T]], on_retry: Callable[[], None] = lambda: None) -> T:
    """Run `operation` until Redis answers, backing off from 0.1 s to 5 s between attempts;
    `on_retry` counts each retry (a metric). Errors other than Redis being away propagate."""
    delay = 0.1
    while True:
        try:
            return await operation()
        except TRANSIENT_ERRORS as exc:
            log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
            on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
