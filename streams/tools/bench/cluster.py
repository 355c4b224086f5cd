"""The worker on a Redis Cluster: the frames backlog through one worker whose Redis is an
embedded cluster of `masters` masters, with the CPU per event of the worker, the broker and
each master (shard), beside the same figures on one Redis measured in the same bench run (the
"worker on frames" section). Every master runs on this machine's cores, so events/s do not
show what more machines would give; the CPU per event per shard does."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis

from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.pipeline.redis_io import cluster_seeds, connect_sync
from streams.runtime.services import EmbeddedServices, Endpoints, ensure_topics
from streams.tools.bench.data import produce
from streams.tools.bench.limits import process_cpu_s, redis_cpu_s
from streams.tools.bench.workers import launch_run, stats_key, time_to_total


def cluster_throughput(
    endpoints: Endpoints, log_dir: Path, frames: list[tuple[int, bytes, bytes]], total: int, masters: int,
    broker_pid: int | None, one_redis_cpu: dict[str, float] | None,
) -> dict[str, Any]:
    """One worker through `frames` on a cluster of `masters`; figures keyed cluster_*. With
    `one_redis_cpu` (the frames run's CPU per event on one Redis), each shard's share of it."""
    services = EmbeddedServices({"CROWDPULSE_KAFKA": endpoints.kafka}, log_dir=log_dir / "cluster", redis_cluster=masters)
    try:
        cluster = services.start()
        seeds = cluster_seeds(cluster.redis_url)
        assert seeds is not None
        nodes = [redis.Redis(host=host, port=port) for host, port in seeds[1]]
        client = connect_sync(cluster.redis_url)
        settings = Settings.from_env({})
        prefix = f"bench-cluster-{secrets.token_hex(3)}."
        ensure_topics(endpoints.kafka, {name: settings.partitions for name in TopicNames(prefix).all()})
        produce(endpoints.kafka, TopicNames(prefix).events, frames)
        run = launch_run(cluster, log_dir, prefix, "cluster", loglevel="warning")
        try:
            meters: dict[str, Callable[[], float]] = {f"shard_{i}": functools.partial(redis_cpu_s, node)
                                                      for i, node in enumerate(nodes)}
            if Path("/proc/self/stat").exists():
                meters["worker"] = lambda: process_cpu_s(run.process.pid)
                if broker_pid is not None:
                    meters["broker"] = lambda: process_cpu_s(broker_pid)
            timing = time_to_total([run], cast(redis.Redis, client), stats_key(run.settings), "events_in", total, meters=meters)
        finally:
            run.stop()
            for node in nodes:
                node.close()
            client.close()
    finally:
        services.stop()
    cpu = dict(timing.get("cpu_us_per_event") or {})
    shards = [cpu.get(f"shard_{i}", float("nan")) for i in range(masters)]
    cpu["redis"] = sum(shards)
    result: dict[str, Any] = {
        "cluster_masters": masters,
        "cluster_eps": timing["eps"],
        "cluster_cpu_us_per_event": cpu,
        "cluster_shard_cpu_us_per_event": shards,
    }
    if one_redis_cpu and one_redis_cpu.get("redis"):
        ideal = one_redis_cpu["redis"] / masters
        # 1.0: every shard carries exactly 1/M of one Redis' work; the busiest shard decides.
        result["cluster_busiest_shard_vs_ideal"] = max(shards) / ideal
        result["cluster_redis_total_vs_one"] = cpu["redis"] / one_redis_cpu["redis"]
    return result
