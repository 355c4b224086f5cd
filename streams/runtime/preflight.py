"""Checks before a command starts its work: the configured Kafka and Redis answer and the HTTP
port is free. Each failure is one line naming what to check (errors.ServiceUnavailable), instead
of half a minute of connection errors and a traceback from deep inside a client library."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import redis

from streams.core.errors import ServiceUnavailable
from streams.pipeline.redis_io import connect_sync

TIMEOUT_S = 5.0


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


def check_kafka(bootstrap: str, timeout: float = TIMEOUT_S) -> None:
    """At least one bootstrap server accepts a TCP connection (the clients do the rest)."""
    errors = []
    for server in bootstrap.split(","):
        try:
            socket.create_connection(_host_port(server), timeout=timeout).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{server.strip()}: {exc}")
    raise ServiceUnavailable(f"cannot reach Kafka ({'; '.join(errors)}); check CROWDPULSE_KAFKA, "
                             "or unset it to run the embedded broker")


def redacted(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    auth, at, hosts = parts.netloc.rpartition("@")  # a cluster URL names several hosts
    user, colon, _password = auth.partition(":")
    if not colon:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:***{at}{hosts}"))


def check_redis(url: str, timeout: float = TIMEOUT_S) -> None:
    """Redis answers PING (with the URL's credentials and TLS)."""
    try:
        client = connect_sync(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except (redis.RedisError, redis.exceptions.RedisClusterException, ValueError) as exc:
        raise ServiceUnavailable(f"cannot use Redis at {redacted(url)}: {exc}; check CROWDPULSE_REDIS, "
                                 "or unset it to run the embedded Redis") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"cannot use Redis at {redacted(url)}: {exc}; check CROWDPULSE_REDIS, "
                                 "or unset it to run the embedded Redis") from None
    finally:
        client.close()


def check_port_free(host: str, port: int) -> None:
    """Nothing listens on (host, port), so the HTTP API can bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServiceUnavailable(f"HTTP port {port} on {host} is in use ({exc.strerror}): another worker or demo "
                                     "may be running; pick another with CROWDPULSE_HTTP_PORT (or --http-port)") from None
