"""Integration tests for streams.runtime.services against the real embedded broker and redis-server."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.runtime.processes import ManagedProcess
from streams.runtime.services import EmbeddedServices, ensure_topics, start_redis, wait_for_redis

from ..conftest import wait_until

pytestmark = pytest.mark.integration


def _pid_gone(pid: int) -> bool:
    # A zombie still answers signal 0, so this also proves stop() reaped the child.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _port(address: str) -> int:
    """Port of "host:port" or of a URL."""
    return urlsplit(address if "://" in address else f"//{address}").port or 0


def test_starts_both_services_and_stops_them(tmp_path: Path) -> None:
    services = EmbeddedServices(environ={}, log_dir=tmp_path)
    with services:
        endpoints = services.endpoints
        assert endpoints.env_lines() == [
            f"CROWDPULSE_KAFKA={endpoints.kafka}",
            f"CROWDPULSE_REDIS={endpoints.redis_url}",
        ]
        assert [process.name for process in services.processes] == ["tansu-broker", "redis-server"]
        pids = [process.pid for process in services.processes]

        topic = f"services-test-{uuid.uuid4().hex[:8]}"
        ensure_topics(endpoints.kafka, {topic: 3})
        ensure_topics(endpoints.kafka, {topic: 3})  # already existing is fine
        payload = b"crowdpulse-" + uuid.uuid4().bytes
        producer = KafkaProducer(bootstrap_servers=endpoints.kafka)
        try:
            producer.send(topic, payload, partition=2).get(timeout=10)
        finally:
            producer.close()
        # Manual assignment: a consumer-group join takes ~20 s on Tansu and is not what is tested here.
        consumer = KafkaConsumer(
            bootstrap_servers=endpoints.kafka,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=10_000,
        )
        try:
            assert consumer.partitions_for_topic(topic) == {0, 1, 2}
            consumer.assign([TopicPartition(topic, 2)])
            assert next(consumer).value == payload
        finally:
            consumer.close()

        client = redis.Redis.from_url(endpoints.redis_url)
        try:
            client.pfadd("services-test-hll", "a", "b", "c")
            assert client.pfcount("services-test-hll") == 3
        finally:
            client.close()

    assert all(_pid_gone(pid) for pid in pids)
    assert not _accepts_connections(_port(endpoints.kafka))
    assert not _accepts_connections(_port(endpoints.redis_url))
    services.stop()  # idempotent


def test_redis_from_environ_is_used_and_not_started(tmp_path: Path) -> None:
    redis_process, redis_url = start_redis(log_dir=tmp_path)
    try:
        wait_for_redis(redis_url)
        services = EmbeddedServices(environ={"CROWDPULSE_REDIS": redis_url}, log_dir=tmp_path)
        with services:
            assert services.endpoints.redis_url == redis_url
            assert [process.name for process in services.processes] == ["tansu-broker"]
        # Stopping the services must leave the externally provided Redis alone.
        assert redis_process.poll() is None
        wait_for_redis(redis_url, timeout=2.0)
    finally:
        redis_process.stop()
    assert _pid_gone(redis_process.pid)


def test_stop_kills_a_child_that_ignores_sigint_and_sigterm(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(60)\n"
    )
    process = ManagedProcess()
    process.start([sys.executable, "-c", code, str(ready_file)], "stubborn", tmp_path / "stubborn.log")
    try:
        # Without this the SIGTERM could arrive before the child ignores it.
        deadline = time.monotonic() + 10.0
        while not ready_file.exists():
            assert time.monotonic() < deadline, "child never got ready"
            assert process.poll() is None
            time.sleep(0.02)

        started = time.monotonic()
        process.stop(timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        process.stop(timeout=0.1)

    assert process.poll() == -signal.SIGKILL
    assert 1.0 <= elapsed < 3.0
    assert _pid_gone(process.pid)


def test_a_dead_service_is_restarted_on_its_port_and_redis_keeps_its_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    services = EmbeddedServices(environ={"CROWDPULSE_KAFKA": "unused:9"}, log_dir=tmp_path, data_dir=data)
    with services:
        url = services.endpoints.redis_url
        client = redis.Redis.from_url(url)
        client.pfadd("kept-hll", "a", "b", "c")
        client.execute_command("WAIT", 0, 0)
        time.sleep(1.5)  # appendfsync everysec
        assert services.restart_dead() == []
        first = services.processes[0]
        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: first.poll() is not None, 5, "redis to die")
        said = services.restart_dead()
        assert len(said) == 1 and said[0].startswith("Redis (pid ") and f"port {_port(url)}" in said[0]
        assert services.endpoints.redis_url == url and services.processes[0].pid != first.pid
        assert client.pfcount("kept-hll") == 3  # same address, data back from the AOF
        client.close()
    # A later start with the same directory comes back with the data, on another port.
    with EmbeddedServices(environ={"CROWDPULSE_KAFKA": "unused:9"}, log_dir=tmp_path, data_dir=data) as again:
        client = redis.Redis.from_url(again.endpoints.redis_url)
        assert client.pfcount("kept-hll") == 3
        client.close()


def test_postgres_keeps_its_data_dir_and_leaves_nothing_behind(tmp_path: Path, open_tmp: Path) -> None:
    """The footfall history's PostgreSQL: with a data directory its tables outlive a stop and
    come back at the next start; without one its scratch directory is removed at stop. No
    server process is left either way."""
    import psycopg

    only_postgres = {"CROWDPULSE_KAFKA": "unused:9", "CROWDPULSE_REDIS": "redis://unused:1/0"}
    data = open_tmp  # as root the server runs as `nobody`, which must reach the data folder
    with EmbeddedServices(environ=only_postgres, log_dir=tmp_path, data_dir=data, history=True) as services:
        url = services.endpoints.history_db
        assert url and services.endpoints.env_lines()[-1] == f"CROWDPULSE_HISTORY_DB={url}"
        (server,) = services.processes
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x integer)")
            conn.execute("INSERT INTO kept VALUES (42)")
    assert server.poll() is not None
    with EmbeddedServices(environ=only_postgres, log_dir=tmp_path, data_dir=data, history=True) as again:
        with psycopg.connect(again.endpoints.history_db) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
    with EmbeddedServices(environ=only_postgres, log_dir=tmp_path, history=True) as scratch:
        with psycopg.connect(scratch.endpoints.history_db) as conn:
            folder = Path(conn.execute("SHOW data_directory").fetchone()[0])
        assert folder.exists() and not str(folder).startswith(str(data))
        (server,) = scratch.processes
    assert server.poll() is not None and not folder.parent.exists()
