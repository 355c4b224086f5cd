"""Fixtures that start the real embedded broker and Redis (once per session) and real workers.

Nothing here skips: if a service cannot start, the tests fail with the reason.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from streams.runtime.services import topic_partitions
from streams.tools.harness import http_json
from streams.core.keys import KeyLayout
from streams.runtime.services import EmbeddedServices, Endpoints, ManagedProcess, ensure_topics, free_port
from streams.core.settings import Settings
from streams.core.topics import TopicNames

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    services = EmbeddedServices(os.environ, log_dir=tmp_path_factory.mktemp("services"))
    try:
        yield services.start()
    finally:
        services.stop()


@dataclass
class RunningWorker:
    settings: Settings
    base_url: str
    process: ManagedProcess
    log_path: Path
    redis: redis.Redis

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    @property
    def keys(self) -> KeyLayout:
        return KeyLayout(self.settings.namespace, self.settings.bucket_s)

    def get(self, path: str) -> object:
        return http_json(self.base_url + path)

    def stats(self) -> dict:
        return self.get("/api/ingest")  # type: ignore[return-value]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


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
    HTTP port; returns once it answers HTTP."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), **settings_env)
    env.update(CROWDPULSE_KAFKA=endpoints.kafka, CROWDPULSE_REDIS=endpoints.redis_url, CROWDPULSE_HTTP_PORT=str(port))
    settings = Settings.from_env(env)
    ensure_topics(endpoints.kafka, topic_partitions(settings))
    process = ManagedProcess()
    log_path = log_dir / f"worker-{settings.app_id}-{port}.log"
    process.start(
        [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
        "worker",
        log_path,
        env=env,
        stop_signal=signal.SIGINT,
    )
    worker = RunningWorker(settings, f"http://127.0.0.1:{port}", process, log_path, redis.Redis.from_url(endpoints.redis_url))
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.poll()}:\n{worker.log_tail()}")
        try:
            worker.stats()
            break
        except urllib.error.HTTPError:
            break  # it answered (with tokens configured, an anonymous probe gets a 401)
        except (OSError, urllib.error.URLError, ValueError):
            if time.monotonic() > deadline:
                process.stop()
                raise RuntimeError(f"worker did not answer in 60 s:\n{worker.log_tail()}") from None
            time.sleep(0.3)
    return worker


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
