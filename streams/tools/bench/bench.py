"""`crowdpulse bench`: the worker side by side with the hardware limit and a naive baseline, on
one machine, one broker and one Redis, with the same pre-produced data. See docs/performance.md.

What runs, in order (each worker is a `crowdpulse worker` subprocess on its own consumer group,
Redis namespace and topics, so runs never share state):

1. data: synthetic events of the shipped city (a population of DEVICES pseudonyms, EVENT_TIME_RATE
   events per second of event time, a day in the past) published once as binary frames of 1,000
   records, once as JSON arrays of 1,000 events, and once as one 24-byte record per message;
2. the limit: a raw aiokafka consumer reads the one-event-per-message topic (and the frames
   topic) with no processing; Redis' ceiling is events / Redis CPU-second for exactly the
   PFADDs the worker sends for this data (and for single-member PFADDs);
3. the naive baseline (streams/tools/bench/apps.py): Faust, one event per message, one Redis round
   trip per event;
4. the worker on the frames and on the JSON topic: events/s from the worker's own books
   (`events_in` in Redis, what GET /api/ingest serves) between its first written batch and the
   last event;
5. latency at a fixed offered load, the estimator's cost for 1,000 and 10,000 areas, Redis memory
   per key and per area, the simulator's publishing rate, and two workers against one.

Timings are noisy on a shared machine: every rate is the median of `repeats` runs, every ratio is
between figures of the same invocation, and the load average is recorded with them.

The pieces, one module each: data.py (the events and how they are published), limits.py (the
raw consumer and Redis' ceiling, CPU meters), workers.py (worker-like subprocesses, through
streams/tools/harness.py, and the throughput runs), latency.py, estimator_cost.py (the estimator's
cost and Redis memory per key), simulator.py, report.py (the table and the JSON form); apps.py is
the naive baseline. This module holds the configurations and runs them in order (`run_bench`).
"""


from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from streams.core.areas import load_areas
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.core.wire import HEADER_SIZE, RECORD_SIZE
from streams.runtime.services import EmbeddedServices, ensure_topics
from streams.tools.bench.cluster import cluster_throughput
from streams.tools.bench.config import BenchConfig
from streams.tools.bench.data import FRAME_RECORDS, frames_of, json_messages, produce, single_event_messages, synthetic_events
from streams.tools.bench.estimator_cost import _estimator_cost
from streams.tools.bench.latency import latency
from streams.tools.bench.limits import _redis_ceiling, delete_namespace, raw_consume
from streams.tools.bench.report import finite, format_table, median, median_dicts, sizing, stepper
from streams.tools.bench.simulator import simulator_rates
from streams.tools.bench.workers import naive_throughput, scaleout, worker_throughput


def run_bench(config: BenchConfig, json_path: Path | None = None, out: Callable[[str], None] = print) -> dict:
    started = time.monotonic()
    figures: dict[str, Any] = {
        "mode": config.name,
        "config": asdict(config),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "repeats": config.repeats,
        "python": sys.version.split()[0],
    }
    log_dir = Path(tempfile.mkdtemp(prefix="crowdpulse-bench-"))
    figures["log_dir"] = str(log_dir)
    settings = Settings.from_env({})
    areas = load_areas(settings.areas_path)
    services = EmbeddedServices(os.environ, log_dir=log_dir)
    client: redis.Redis | None = None
    try:
        endpoints = services.start()
        broker_pid = services.processes[0].pid if not os.environ.get("CROWDPULSE_KAFKA") and services.processes else None
        client = redis.Redis.from_url(endpoints.redis_url)
        figures["redis_version"] = client.info("server")["redis_version"]
        start_ms = (int(time.time() * 1000) - 86_400_000) // 60_000 * 60_000
        step = stepper(out, started)

        step("data")
        events = synthetic_events(areas, config.frames_events, seed=1, start_ms=start_ms)
        frames = frames_of(events, areas, settings.partitions, producer_id=1)
        tag = secrets.token_hex(3)
        prefixes = {kind: f"bench-{kind}-{tag}." for kind in ("frames", "json", "naive")}
        for prefix in prefixes.values():
            ensure_topics(endpoints.kafka, {name: settings.partitions for name in TopicNames(prefix).all()})
        produce(endpoints.kafka, TopicNames(prefixes["frames"]).events, frames)
        json_frames = frames[: math.ceil(config.json_events / FRAME_RECORDS)]
        json_total = sum((len(f) - HEADER_SIZE) // RECORD_SIZE for _, _, f in json_frames)
        produce(endpoints.kafka, TopicNames(prefixes["json"]).events, json_messages(json_frames))
        naive_frames = frames[: math.ceil(config.naive_messages / FRAME_RECORDS)]
        naive_total = produce(endpoints.kafka, TopicNames(prefixes["naive"]).events, single_event_messages(naive_frames))
        figures.update(frames_events=config.frames_events, json_events=json_total, naive_messages=naive_total)

        step("raw aiokafka consumption")
        raw = [raw_consume(endpoints.kafka, TopicNames(prefixes["naive"]).events, settings.partitions, naive_total)
               for _ in range(max(3, config.repeats))]
        raw_frames = [raw_consume(endpoints.kafka, TopicNames(prefixes["frames"]).events, settings.partitions, len(frames))
                      for _ in range(max(3, config.repeats))]
        figures["raw_limit_eps"] = median(raw)
        figures["raw_limit_samples"] = raw
        figures["raw_frames_eps"] = median(raw_frames) * FRAME_RECORDS
        figures["raw_frames_messages_per_s"] = median(raw_frames)

        step("Redis ceiling")
        ceiling_settings = Settings.from_env({}, namespace=f"bceil{tag}")
        ceiling_frames = frames[: min(len(frames), 2_000)]
        figures.update(asyncio.run(_redis_ceiling(endpoints.redis_url, ceiling_settings, areas, ceiling_frames,
                                                   config.single_pfadds)))
        delete_namespace(client, ceiling_settings.namespace)

        step("naive baseline")
        naive = [naive_throughput(endpoints, log_dir, prefixes["naive"], config.naive_seconds, client, naive_total)
                 for _ in range(config.repeats)]
        figures["naive_eps"] = median([r["eps"] for r in naive])
        figures["naive_samples"] = [r["eps"] for r in naive]

        step("worker on frames")
        runs = []
        for i in range(config.repeats):
            runs.append(worker_throughput(endpoints, log_dir, prefixes["frames"], config.frames_events, "frames", client,
                                          broker_pid, keep_memory=(i == 0)))
        figures["frames_eps"] = median([r["eps"] for r in runs])
        figures["frames_cpu_us_per_event"] = median_dicts([r.get("cpu_us_per_event", {}) for r in runs])
        figures["frames_samples"] = [r["eps"] for r in runs]
        figures["worker_peak_rss_bytes"] = max((r["peak_rss_bytes"] or 0) for r in runs) or None
        figures["city_memory"] = runs[0].get("memory")
        if not config.quick:
            # The same worker with its estimator idle (one pass an hour): what ingest alone costs.
            # A replay moves stream time through ~10 buckets a second, and the estimator publishes
            # every one of them; the difference is that work.
            ingest = worker_throughput(endpoints, log_dir, prefixes["frames"], config.frames_events, "ingest", client,
                                       broker_pid, CROWDPULSE_PUBLISH_INTERVAL_S="3600")
            figures["frames_ingest_only_eps"] = ingest["eps"]
            figures["frames_ingest_only_cpu_us_per_event"] = ingest.get("cpu_us_per_event")
            # And with every span read bucket by bucket: the baseline of the five-minute blocks
            # (streams/core/blocks.py), in the same run.
            unblocked = worker_throughput(endpoints, log_dir, prefixes["frames"], config.frames_events, "no-blocks", client,
                                          broker_pid, CROWDPULSE_SPAN_BLOCKS="off")
            figures["frames_no_blocks_eps"] = unblocked["eps"]
            figures["frames_no_blocks_cpu_us_per_event"] = unblocked.get("cpu_us_per_event")
            # And with every member sent by PFADD: the baseline of the register writes
            # (streams/core/hll.py, pack_hll_adds), in the same run.
            by_member = worker_throughput(endpoints, log_dir, prefixes["frames"], config.frames_events, "no-registers",
                                          client, broker_pid, CROWDPULSE_REGISTER_WRITES="off")
            figures["frames_no_registers_eps"] = by_member["eps"]
            figures["frames_no_registers_cpu_us_per_event"] = by_member.get("cpu_us_per_event")

        if config.cluster_masters:
            step(f"worker on frames, Redis Cluster of {config.cluster_masters}")
            figures.update(cluster_throughput(endpoints, log_dir, frames, config.frames_events, config.cluster_masters,
                                              broker_pid, figures.get("frames_cpu_us_per_event")))

        step("worker on JSON")
        json_runs = [worker_throughput(endpoints, log_dir, prefixes["json"], json_total, "json", client, broker_pid)
                     for _ in range(config.repeats)]
        figures["json_eps"] = median([r["eps"] for r in json_runs])
        figures["json_cpu_us_per_event"] = median_dicts([r.get("cpu_us_per_event", {}) for r in json_runs])
        figures["json_samples"] = [r["eps"] for r in json_runs]
        figures["worker_peak_rss_json_bytes"] = max((r["peak_rss_bytes"] or 0) for r in json_runs) or None

        step("latency")
        figures.update(latency(endpoints, log_dir, config, client))

        step("estimator and memory")
        figures["estimator"] = {}
        for n_areas in config.estimator_areas:
            repeats = 1 if config.name == "smoke" else max(3, config.repeats)  # smoke: the code runs, once
            cost = asyncio.run(_estimator_cost(endpoints.redis_url, n_areas, repeats))
            figures["estimator"][str(n_areas)] = cost["estimator"]
            figures["memory"] = cost["memory"]

        step("simulator")
        figures.update(simulator_rates(endpoints.kafka, settings.partitions, areas, config.simulator_devices,
                                       seconds=config.simulator_seconds))

        if config.scaleout_events:
            step("scale-out")
            scale_events = synthetic_events(areas, config.scaleout_events, seed=2, start_ms=start_ms)
            scale_frames = frames_of(scale_events, areas, settings.partitions, producer_id=2)
            last_bucket = int(scale_events["ts"].max()) // settings.bucket_ms
            figures.update(scaleout(endpoints, log_dir, scale_frames, config.scaleout_events, last_bucket, client,
                                    broker_pid))

        figures["sizing"] = sizing(figures)
        figures["frames_vs_naive"] = figures["frames_eps"] / figures["naive_eps"]
        figures["json_vs_naive"] = figures["json_eps"] / figures["naive_eps"]
        figures["frames_vs_raw_limit"] = figures["frames_eps"] / figures["raw_limit_eps"]
        figures["frames_vs_raw_frames"] = figures["frames_eps"] / figures["raw_frames_eps"]
        figures["frames_vs_redis_ceiling"] = figures["frames_eps"] / figures["redis_ceiling_eps"]
        figures["loadavg_end"] = list(os.getloadavg())
        figures["wall_s"] = time.monotonic() - started
    finally:
        if client is not None:
            client.close()
        services.stop()
    out(format_table(figures))
    if json_path is not None:
        json_path.write_text(json.dumps(finite(figures), indent=2, sort_keys=True) + "\n")
    return figures
