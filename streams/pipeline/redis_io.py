"""How the pipeline talks to Redis: the asyncio client (one Redis or a Redis Cluster),
pre-packed commands sent like a pipeline (to each cluster node its own keys), and the retry of
an operation while Redis is unreachable. Shared by the stores (hll_store, estimate_store) and
the services that call them.

A Redis Cluster is named by its own URL scheme, ``redis+cluster://host:port[,host:port...]``
(``rediss+cluster://`` with TLS): the hosts are seed nodes, the client learns the slot map
from them. Every multi-key command of the pipeline stays in one slot (streams/core/keys.py's
hash tags), so redis-py's cluster client routes the ordinary commands and pipelines; the
pre-packed ones are grouped by node here (`route`, `send_routed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster

log = logging.getLogger(__name__)
T = TypeVar("T")

#: One Redis or a Redis Cluster: the stores use only what both clients offer.
Client = aioredis.Redis | aioredis.RedisCluster
SyncClient = redis.Redis | redis.cluster.RedisCluster

#: Commands per pipeline round trip for the estimator's reads and writes.
COMMANDS_PER_PIPELINE = 2000
#: A cluster in motion: a slot moved or moving (MOVED, ASK, TRYAGAIN), or the cluster not
#: serving while a master is away (CLUSTERDOWN). The slot map is read again and the
#: operation retried.
CLUSTER_CHANGE_ERRORS = (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                         redis.exceptions.SlotNotCoveredError, redis.exceptions.ClusterError)
#: What a retried operation waits for: Redis away, slow, or still loading its data; a cluster
#: changing its slot map.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, *CLUSTER_CHANGE_ERRORS)
#: How often send_routed reads the slot map again and resends, while a cluster moves a slot.
ROUTED_ATTEMPTS = 6

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]] | None:
    """For a cluster URL (redis+cluster://[auth@]host:port[,host:port...][/0][?options]), the
    plain URL of its first seed (what redis-py parses for credentials and TLS options) and
    every seed as (host, port); None for a one-Redis URL. Pure."""
    parts = urlsplit(url)
    scheme = _CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None:
        return None
    auth, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster URL names its seed nodes as host:port[,host:port...]: {host_port!r}")
        seeds.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0")
    first = f"{auth}@{hosts.split(',')[0]}" if auth else hosts.split(",")[0]
    return urlunsplit((scheme, first, "", parts.query, "")), seeds


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in _CLUSTER_SCHEMES


def connect(url: str) -> Client:
    """An asyncio client for a redis:// or rediss:// URL, or a cluster client for a
    redis+cluster:// or rediss+cluster:// one."""
    seeds = cluster_seeds(url)
    if seeds is None:
        return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)
    plain, nodes = seeds
    return aioredis.RedisCluster.from_url(
        plain, decode_responses=False, startup_nodes=[aiocluster.ClusterNode(h, p) for h, p in nodes])


def connect_one(url: str) -> aioredis.Redis:
    """An asyncio client for one Redis only (the bench's raw measurements send pre-packed
    commands whose keys span slots)."""
    if is_cluster_url(url):
        raise ValueError("this measurement needs one Redis, not a cluster")
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


def connect_sync(url: str, **options: Any) -> SyncClient:
    """A blocking client for the same URLs as connect (tools, checks, tests)."""
    seeds = cluster_seeds(url)
    if seeds is None:
        return redis.Redis.from_url(url, **options)
    plain, nodes = seeds
    return redis.cluster.RedisCluster.from_url(
        plain, startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes], **options)


async def route(client: Client, keys: Sequence[str]) -> list[tuple[Any, list[int]]]:
    """The keys' indices grouped by the node that serves them, as (node, indices); one Redis:
    one group of all (node None). A cluster client learns its slot map first if it has not."""
    if not isinstance(client, aioredis.RedisCluster):
        return [(None, list(range(len(keys))))]
    await client.initialize()
    groups: dict[str, tuple[Any, list[int]]] = {}
    for i, key in enumerate(keys):
        node = client.get_node_from_key(key)
        if node is None:
            raise redis.exceptions.SlotNotCoveredError(f"no node serves the slot of {key}")
        groups.setdefault(node.name, (node, []))[1].append(i)
    return list(groups.values())


async def send_routed(
    client: Client, keys: Sequence[str], pack: Callable[[list[int]], list[tuple[bytes, int]]], replies: bool = False,
) -> list[tuple[list[int], list]]:
    """Send pre-packed commands to the nodes that serve them: `keys` names one key per item
    (each item's commands touch only that key's slot), `pack(indices)` packs those items'
    commands. The groups go out concurrently; returns (indices, replies) per group.

    Only for commands that may run twice (PFADD, SET NX, PEXPIREAT, PFCOUNT, SADD): while a
    cluster moves a slot or a master is away, the slot map is read again and everything is
    resent, up to ROUTED_ATTEMPTS times; then the error goes to the caller (whose retry, or
    the next estimator pass, tries again)."""
    attempt = 0
    while True:
        attempt += 1
        groups = await route(client, keys)
        results = await asyncio.gather(
            *(_send_group(client, node, pack(indices), replies) for node, indices in groups), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return [(indices, out) for (_, indices), out in zip(groups, results)]  # type: ignore[misc]
        if isinstance(client, aioredis.RedisCluster) and all(isinstance(e, (*CLUSTER_CHANGE_ERRORS, redis.ConnectionError)) for e in errors):
            await client.nodes_manager.initialize()  # the slot map as the cluster now tells it
            if attempt < ROUTED_ATTEMPTS:
                log.info("redis cluster changed under a pipelined send (%s: %s); resending", type(errors[0]).__name__, errors[0])
                await asyncio.sleep(0.05 * 2 ** attempt)
                continue
        raise errors[0]


async def _send_group(client: Client, node: Any, chunks: list[tuple[bytes, int]], replies: bool) -> list:
    if node is None:
        return await send_packed(client, chunks, replies)  # type: ignore[arg-type]
    connection = node.acquire_connection()
    try:
        return await exchange(connection, chunks, replies)
    finally:
        node.release(connection)


async def send_packed(client: aioredis.Redis, chunks: list[tuple[bytes, int]], replies: bool = False) -> list:
    """Send pre-packed commands on one connection of one Redis and read their replies
    (`exchange`). With `replies`, returns them."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        return await exchange(connection, chunks, replies)
    finally:
        await pool.release(connection)


async def exchange(connection: Any, chunks: list[tuple[bytes, int]], replies: bool = False) -> list:
    """Send pre-packed commands on `connection` and read their replies, like a
    non-transactional pipeline: a chunk's replies are read while the next chunk waits in
    Redis' input, every reply is read even after an error reply (so the connection stays in
    step) and the first error is raised. A connection that fails or is interrupted halfway
    is closed, never handed back with replies pending. With `replies`, returns them."""
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
    if error is not None:
        raise error
    return out


def bulk(value: str) -> bytes:
    """One argument of a command as RESP bytes (a bulk string)."""
    encoded = value.encode()
    return b"$%d\r\n%s\r\n" % (len(encoded), encoded)


def pack_command(*args: str) -> list[bytes]:
    """RESP bytes of a small command."""
    return [b"*%d\r\n" % len(args), *(bulk(a) for a in args)]


def in_pieces(items: list[list[bytes]], commands_each: int) -> list[tuple[bytes, int]]:
    """Packed items of `commands_each` commands each, as pipeline pieces of about
    COMMANDS_PER_PIPELINE commands (send_packed, send_routed)."""
    per_piece = max(1, COMMANDS_PER_PIPELINE // commands_each)
    return [(b"".join(part for item in items[i : i + per_piece] for part in item), commands_each * len(items[i : i + per_piece]))
            for i in range(0, len(items), per_piece)]


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
