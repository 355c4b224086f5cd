"""Fixtures that start the real embedded broker and Redis (once per session) and real workers.

Nothing here skips: if a service cannot start, the tests fail with the reason.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from streams.core.keys import KeyLayout
from streams.core.topics import TopicNames
from streams.pipeline.redis_io import connect_sync
from streams.runtime.services import EmbeddedServices, Endpoints
from streams.tools import harness
from streams.tools.harness import WorkerProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    services = EmbeddedServices(os.environ, log_dir=tmp_path_factory.mktemp("services"), history=True)
    try:
        yield services.start()
    finally:
        services.stop()


@pytest.fixture(scope="session")
def cluster_endpoints(endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """The session's broker and PostgreSQL with a Redis Cluster of three masters (redis-servers
    in cluster mode, the slots split evenly by the fixture: streams/runtime/services.py,
    form_cluster)."""
    shared = {"CROWDPULSE_KAFKA": endpoints.kafka, "CROWDPULSE_HISTORY_DB": endpoints.history_db or ""}
    services = EmbeddedServices(shared, log_dir=tmp_path_factory.mktemp("cluster"), history=True, redis_cluster=3)
    try:
        yield services.start()
    finally:
        services.stop()


@pytest.fixture(params=["one-redis", "redis-cluster"])
def any_redis(request: pytest.FixtureRequest) -> Endpoints:
    """The session's endpoints with one Redis, then with the Redis Cluster: a test taking it
    runs on both."""
    return request.getfixturevalue("endpoints" if request.param == "one-redis" else "cluster_endpoints")


@dataclass
class RunningWorker(WorkerProcess):
    """A worker started by the harness, with a Redis client to read its keys."""

    redis: redis.Redis = None  # type: ignore[assignment]

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    @property
    def keys(self) -> KeyLayout:
        return KeyLayout(self.settings.namespace, self.settings.bucket_s)


def start_worker(endpoints: Endpoints, log_dir: Path, tag: str, **env_overrides: str) -> RunningWorker:
    """A `crowdpulse worker` subprocess on its own topics, Redis namespace and consumer group."""
    tag = f"{tag}-{secrets.token_hex(4)}"
    return launch_worker(
        endpoints,
        log_dir,
        {
            "CROWDPULSE_APP_ID": f"cp-test-{tag}",
            "CROWDPULSE_TOPIC_PREFIX": f"{tag}.",
            "CROWDPULSE_NAMESPACE": f"t{tag}",
            **env_overrides,
        },
    )


def launch_worker(endpoints: Endpoints, log_dir: Path, settings_env: dict[str, str]) -> RunningWorker:
    """A worker with exactly these CROWDPULSE_* settings on the session's services and a free
    HTTP port (streams/tools/harness.py); returns once it answers HTTP."""
    name = settings_env.get("CROWDPULSE_APP_ID", "worker")
    started = harness.launch_worker(endpoints, log_dir / f"worker-{name}-{secrets.token_hex(2)}.log", settings_env)
    return RunningWorker(started.settings, started.base_url, started.process, started.log_path,
                         connect_sync(endpoints.redis_url))  # type: ignore[arg-type]


@pytest.fixture
def worker(endpoints: Endpoints, tmp_path: Path) -> Iterator[RunningWorker]:
    running = start_worker(endpoints, tmp_path, "w")
    try:
        yield running
    finally:
        running.process.stop(timeout=15)
        running.redis.close()


def consume_all(bootstrap: str, topic: str, partitions: int) -> list:
    """Every message of a topic, from the beginning, with a plain kafka-python consumer."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    messages = list(consumer)
    consumer.close()
    return messages


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
