"""A real `crowdpulse worker` driven from outside, for the tools (evaluate, bench, demo) and the
integration tests: launched as a subprocess on the given services with its own settings, waited
for until its HTTP API answers, read through that API and its /metrics, stopped with SIGINT
(Faust stops cleanly on it) and a bounded wait. One implementation, so every tool and test
starts workers the same way."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streams.core.keys import KeyLayout
from streams.core.settings import Settings
from streams.pipeline.hll_store import parse_partition, stream_time
from streams.runtime.processes import ManagedProcess, free_port
from streams.runtime.services import Endpoints, ensure_topics, topic_partitions

#: The repository root: put on a worker's PYTHONPATH so a checkout runs without installing.
REPO = Path(__file__).resolve().parents[2]
WORKER_COMMAND = ("streams.cli", "worker")


def http_json(url: str, timeout: float = 2.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


def metric_value(exposition: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample of a Prometheus text exposition (None if absent). `name` is the
    sample's name (a counter's `_total` included); `labels` must all match."""
    wanted = dict(labels or {})
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    return None


def estimator_busy(client: Any, keys: KeyLayout, shards: int) -> bool:
    """Has the estimator work left: a shard's changed points not counted yet, a shard not
    counted up to stream time (a catching-up pass waits for partitions still moving), or
    point records not published yet? (A blocking client: redis.Redis or RedisCluster.)"""
    if any(client.exists(keys.dirty_buckets(s)) for s in range(shards)) or client.exists(keys.staged_changed):
        return True
    stream_now = stream_time({p: parse_partition(raw).watermark_ms for p, raw in enumerate(client.hvals(keys.ingest_state))})
    if stream_now is None:
        return False
    newest = stream_now // (keys.bucket_s * 1000)
    counted = client.hmget(keys.counted_through, [str(s) for s in range(shards)])
    return any(c is None or int(c) < newest for c in counted)


@dataclass
class WorkerProcess:
    """A running worker subprocess: its settings, HTTP base URL, process and log."""

    settings: Settings
    base_url: str
    process: ManagedProcess
    log_path: Path

    def get(self, path: str, timeout: float = 2.0) -> object:
        return http_json(self.base_url + path, timeout=timeout)

    def stats(self) -> dict:
        """GET /api/ingest: the books (events in, counted, dead-lettered, late) and stream time."""
        return self.get("/api/ingest", timeout=5.0)  # type: ignore[return-value]

    def metrics_text(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.base_url + "/metrics", timeout=timeout) as response:  # noqa: S310
            return response.read().decode()

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One value from the worker's /metrics; None if absent or the worker does not answer."""
        try:
            return metric_value(self.metrics_text(), name, labels)
        except (OSError, urllib.error.URLError):
            return None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def peak_rss_bytes(self) -> int | None:
        """The process's peak resident memory (Linux /proc), None once it has gone."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def wait_for_http(self, timeout: float = 60.0) -> None:
        """Return once the worker answers HTTP (any status: with tokens configured an anonymous
        probe gets a 401); raise with its log's tail if it exits or stays silent."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with code {self.process.poll()} while starting:\n{self.log_tail()}")
            try:
                self.stats()
                return
            except urllib.error.HTTPError:
                return
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not answer HTTP in {timeout:.0f} s:\n{self.log_tail()}") from None
                time.sleep(0.3)

    def stop(self, timeout: float = 15.0) -> None:
        self.process.stop(timeout=timeout)


def worker_environment(endpoints: Endpoints, settings_env: Mapping[str, str], base: Mapping[str, str] | None = None,
                       http_port: int | None = None) -> dict[str, str]:
    """The environment of a worker on these services: `base` (default: this process's), then
    `settings_env`, then the endpoints, a free HTTP port and this checkout on PYTHONPATH."""
    base = dict(os.environ if base is None else base)
    env = {**base, **settings_env}
    env.update(
        CROWDPULSE_KAFKA=endpoints.kafka,
        CROWDPULSE_REDIS=endpoints.redis_url,
        CROWDPULSE_HTTP_PORT=str(http_port or free_port()),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH", "")) if p),
    )
    if endpoints.history_db and "CROWDPULSE_HISTORY_DB" not in settings_env:
        env["CROWDPULSE_HISTORY_DB"] = endpoints.history_db
    return env


def launch_worker(
    endpoints: Endpoints,
    log_path: Path,
    settings_env: Mapping[str, str],
    base_env: Mapping[str, str] | None = None,
    module: Sequence[str] = WORKER_COMMAND,
    loglevel: str = "info",
    wait: float | None = 60.0,
    http_port: int | None = None,
) -> WorkerProcess:
    """Start a worker (or, with `module`, another worker-like `python -m` entry point) with these
    CROWDPULSE_* settings on the given services, its topics created first, on `http_port` (default:
    a free one); with `wait`, return once it answers HTTP."""
    env = worker_environment(endpoints, settings_env, base_env, http_port)
    settings = Settings.from_env(env)
    ensure_topics(endpoints.kafka, topic_partitions(settings), security=settings.kafka_security.kafka_python_config())
    process = ManagedProcess()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", *module]
    if tuple(module) == WORKER_COMMAND:
        args += ["--loglevel", loglevel]
    process.start(args, log_path.stem, log_path, env=env, stop_signal=signal.SIGINT)
    worker = WorkerProcess(settings, f"http://127.0.0.1:{settings.http_port}", process, log_path)
    if wait is not None:
        try:
            worker.wait_for_http(wait)
        except BaseException:
            process.stop(timeout=15)
            raise
    return worker
