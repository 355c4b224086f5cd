"""Worker-like subprocesses and the throughput runs: each run is a `crowdpulse worker` (or the
naive baseline of apps.py) started through the shared harness (streams/tools/harness.py) on its
own consumer group, Redis namespace and topics, and timed through its own books in Redis; the
worker on a pre-produced backlog, the naive baseline, and one worker against two (scale-out)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import redis

from streams.core.keys import KeyLayout
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.runtime.services import Endpoints
from streams.tools.bench.data import produce
from streams.tools.bench.estimator_cost import city_key_memory
from streams.tools.bench.limits import cpu_meters, delete_namespace
from streams.tools.harness import WORKER_COMMAND, WorkerProcess, launch_worker

#: The naive baseline (apps.py), run as `python -m streams.tools.bench.apps`.
NAIVE_COMMAND = ("streams.tools.bench.apps",)


def launch_run(
    endpoints: Endpoints,
    log_dir: Path,
    prefix: str,
    tag: str,
    module: Sequence[str] = WORKER_COMMAND,
    loglevel: str = "warning",
    app_id: str | None = None,
    namespace: str | None = None,
    **extra_env: str,
) -> WorkerProcess:
    """One worker-like subprocess (by default `crowdpulse worker --loglevel <loglevel>`; with
    `module`, another `python -m` entry point such as the naive baseline) on the topics of
    `prefix`, with its own consumer group and Redis namespace unless given, logging to
    log_dir/<tag>-<random>.log: the harness's launch_worker with the bench's names. Returns
    without waiting for its HTTP API (the runs are timed from their own books)."""
    tag = f"{tag}-{secrets.token_hex(3)}"
    settings_env = {
        "CROWDPULSE_APP_ID": app_id or f"bench-{tag}",
        "CROWDPULSE_TOPIC_PREFIX": prefix,
        "CROWDPULSE_NAMESPACE": namespace or f"b{tag}",
        **extra_env,
    }
    return launch_worker(endpoints, log_dir / f"{tag}.log", settings_env, module=module, loglevel=loglevel, wait=None)


def stats_key(settings: Settings) -> str:
    """The Redis hash of a run's books (`events_in`, what GET /api/ingest serves)."""
    return KeyLayout(settings.namespace, settings.bucket_s).ingest_stats


def time_to_total(
    runs: list[WorkerProcess], client: redis.Redis, key: str, field: str, total: int, stall_s: float = 90.0,
    meters: dict[str, Callable[[], float]] | None = None, published: tuple[str, int] | None = None,
) -> dict:
    """Poll a counter until it reaches `total`; events/s between the first sample above zero
    (the first written batch: start-up and group join are not timed) and the last event. With
    `meters`, also the CPU each process spent per event over the same span. With `published`
    (the estimator state hash, the last event's bucket), then on until the estimator has
    published that bucket: `complete_s`, and the CPU per event up to then."""
    samples: list[tuple[float, int]] = []
    last_change = time.monotonic()
    previous = -1
    cpu_start: dict[str, float] = {}
    while True:
        now = time.perf_counter()
        value = int(client.hget(key, field) or 0)
        samples.append((now, value))
        if value > 0 and meters and not cpu_start:
            cpu_start = {name: read() for name, read in meters.items()}
        if value != previous:
            previous, last_change = value, time.monotonic()
        if value >= total:
            break
        for run in runs:
            if run.process.poll() is not None:
                raise RuntimeError(f"{run.process.name} exited with {run.process.poll()}:\n{run.log_tail()}")
        if time.monotonic() - last_change > stall_s:
            tails = "\n".join(run.log_tail() for run in runs)
            raise RuntimeError(f"no progress for {stall_s:.0f} s at {value} of {total} events:\n{tails}")
        time.sleep(0.05)
    first = next((t, v) for t, v in samples if v > 0)
    if first[1] >= total:
        return {"eps": float("nan"), "seconds": 0.0, "events": total}
    seconds = samples[-1][0] - first[0]
    events = samples[-1][1] - first[1]
    result: dict[str, Any] = {"eps": events / seconds, "seconds": seconds, "events": events}
    if meters and cpu_start:
        result["cpu_us_per_event"] = {name: 1e6 * (read() - cpu_start[name]) / events for name, read in meters.items()}
    if published is not None:
        state, last_bucket = published
        deadline = time.monotonic() + stall_s
        while int(client.hget(state, "published_through") or -1) < last_bucket:
            if time.monotonic() > deadline:
                tails = "\n".join(run.log_tail() for run in runs)
                raise RuntimeError(f"the estimator did not publish bucket {last_bucket} within {stall_s:.0f} s:\n{tails}")
            time.sleep(0.05)
        result["complete_s"] = time.perf_counter() - first[0]
        if meters and cpu_start:
            result["complete_cpu_us_per_event"] = {
                name: 1e6 * (read() - cpu_start[name]) / events for name, read in meters.items()}
    return result


def worker_throughput(
    endpoints: Endpoints, log_dir: Path, prefix: str, total: int, tag: str, client: redis.Redis,
    broker_pid: int | None = None, keep_memory: bool = False, **extra_env: str,
) -> dict:
    """Events/s of one `crowdpulse worker` through a pre-produced backlog, the CPU per event
    of the worker, Redis and the broker, and the worker's peak RSS."""
    run = launch_run(endpoints, log_dir, prefix, tag, loglevel="warning", **extra_env)
    try:
        meters = cpu_meters([run], client, broker_pid)
        result = time_to_total([run], client, stats_key(run.settings), "events_in", total, meters=meters)
        result["peak_rss_bytes"] = run.peak_rss_bytes()
        if keep_memory:
            result["memory"] = city_key_memory(client, run.settings.namespace)
        return result
    finally:
        run.stop()
        delete_namespace(client, run.settings.namespace)


def naive_throughput(
    endpoints: Endpoints, log_dir: Path, prefix: str, seconds: float, client: redis.Redis, total: int
) -> dict:
    """Events/s of the naive baseline over `seconds`, from its own progress reports."""
    progress = f"bench-naive-{secrets.token_hex(4)}"
    run = launch_run(endpoints, log_dir, prefix, "naive", module=NAIVE_COMMAND, CROWDPULSE_BENCH_PROGRESS_KEY=progress)
    try:
        deadline = time.monotonic() + 120
        first: tuple[float, int] | None = None
        while True:
            raw = cast("bytes | None", client.get(progress))
            count, at = (int(raw.split(b":")[0]), float(raw.split(b":")[1])) if raw else (0, 0.0)
            if count > 0 and first is None:
                first = (at, count)
            if first is not None and (at - first[0] >= seconds or count >= total):
                break
            if run.process.poll() is not None:
                raise RuntimeError(f"naive baseline exited with {run.process.poll()}:\n{run.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"naive baseline made no progress in 120 s:\n{run.log_tail()}")
            time.sleep(0.05)
        return {"eps": (count - first[1]) / (at - first[0]), "seconds": at - first[0], "events": count - first[1]}
    finally:
        run.stop()
        client.delete(progress)
        delete_namespace(client, run.settings.namespace)


def scaleout(
    endpoints: Endpoints, log_dir: Path, frames: list[tuple[int, bytes, bytes]], total: int, last_bucket: int,
    client: redis.Redis, broker_pid: int | None = None,
) -> dict:
    """One worker, then two in one group, on a backlog published after the group settled:
    events/s and CPU per event to the last event counted (ingest), and to the estimator's
    publication of the last event's minute (complete: every window end counted and
    published)."""
    result: dict[str, Any] = {}
    for workers in (1, 2):
        prefix = f"bench-scale{workers}-{secrets.token_hex(3)}."
        app_id = f"bench-scale-{secrets.token_hex(3)}"
        namespace = f"bs{secrets.token_hex(3)}"
        runs = [
            launch_run(endpoints, log_dir, prefix, f"scale{workers}", loglevel="info", app_id=app_id, namespace=namespace)
            for _ in range(workers)
        ]
        try:
            for run in runs:
                run.wait_for_http(90.0)
            time.sleep(runs[0].settings.group_timeout_s + 4)  # let the group settle on all members
            produce(endpoints.kafka, TopicNames(prefix).events, frames)
            meters = cpu_meters(runs, client, broker_pid)
            state = KeyLayout(namespace, runs[0].settings.bucket_s).estimator_state
            timing = time_to_total(runs, client, stats_key(runs[0].settings), "events_in", total, meters=meters,
                                   published=(state, last_bucket))
            shares = [run.metric("crowdpulse_events_total", {"outcome": "counted"}) for run in runs]
            result[f"scaleout_{workers}_eps"] = timing["eps"]
            result[f"scaleout_{workers}_cpu_us_per_event"] = timing.get("cpu_us_per_event")
            result[f"scaleout_{workers}_complete_eps"] = timing["events"] / timing["complete_s"]
            result[f"scaleout_{workers}_complete_cpu_us_per_event"] = timing.get("complete_cpu_us_per_event")
            result[f"scaleout_{workers}_points_counted"] = [
                run.metric("crowdpulse_estimator_points_counted_total") for run in runs]
            result[f"scaleout_{workers}_events_per_worker"] = shares
        finally:
            for run in runs:
                run.stop()
            delete_namespace(client, namespace)
    result["scaleout_ratio"] = result["scaleout_2_eps"] / result["scaleout_1_eps"]
    result["scaleout_complete_ratio"] = result["scaleout_2_complete_eps"] / result["scaleout_1_complete_eps"]
    return result

