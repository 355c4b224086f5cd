"""Latency at a fixed offered load: a worker on the shipped city plus one-cell probe areas, fed
events at `latency_rate` events/s with a probe event every PROBE_INTERVAL_MS; each measured
probe's latency is the time from its event to the first published estimate of its area that
counts it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import numpy as np
import redis

from streams.core.areas import AreaMap, load_areas
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.core.wire import RECORD_DTYPE
from streams.runtime.services import Endpoints
from streams.tools.bench.config import BenchConfig
from streams.tools.bench.data import DEVICES, FRAME_RECORDS
from streams.tools.bench.limits import delete_namespace
from streams.tools.bench.workers import launch_run, stats_key
from streams.tools.harness import WorkerProcess

PROBE_CELL_BASE = 4_000_000_000
PROBE_AREAS = 300
PROBE_INTERVAL_MS = 100
LATENCY_WINDOW_S = 300


def latency_areas(base: Path, out: Path, probes: int = PROBE_AREAS) -> Path:
    """The shipped city plus `probes` one-cell areas that only probe events reach.

    Probe k goes to area k mod probes as a new device, so the first estimate of that area whose
    count includes it is recognisable by its count alone (a handful of devices per window:
    HyperLogLog is exact there in practice; a probe it misses is reported as unmatched).
    """
    doc = json.loads(base.read_text())
    for j in range(probes):
        cell = PROBE_CELL_BASE + j
        doc["cells"].append({"id": cell, "x_m": 50_000.0 + 10 * j, "y_m": 50_000.0, "radius_m": 100.0})
        doc["areas"].append({"id": f"probe-{j}", "name": f"probe {j}", "capacity": 1_000, "cells": [cell], "kind": "probe"})
    out.write_text(json.dumps(doc))
    return out


async def _latency(run: WorkerProcess, areas: AreaMap, city_cells: np.ndarray, rate: int, seconds: float, stats_client: redis.Redis) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from producers.publisher import Framer

    settings = run.settings
    topics = TopicNames(settings.topic_prefix)
    bootstrap = settings.kafka or ""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2, max_batch_size=1 << 20)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    received: list[tuple[float, str, int, int]] = []  # (wall ms received, area, as_of, devices)
    stop = asyncio.Event()

    async def read_estimates() -> None:
        tps = [TopicPartition(topics.occupancy, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time() * 1000
            for records in batch.values():
                for record in records:
                    estimate = json.loads(record.value)
                    if estimate["window_s"] == LATENCY_WINDOW_S and estimate["area"].startswith("probe-"):
                        received.append((now, estimate["area"], estimate["as_of"], estimate["devices"] or 0))

    reader = asyncio.create_task(read_estimates())
    rng = np.random.default_rng(11)
    population = rng.integers(0, 2**64 - 1, DEVICES, dtype=np.uint64, endpoint=True)
    framer = Framer(secrets.randbits(63), settings.partitions, areas.cell_ids, FRAME_RECORDS)
    probes: list[tuple[int, int, bool]] = []  # (ts ms, probe area, measured)
    books = stats_key(settings)
    sent = 0
    last = time.time() * 1000
    next_probe = last
    carry = 0.0
    measure_from = measure_until = None
    try:
        while True:
            await asyncio.sleep(0.02)
            now = time.time() * 1000
            if measure_from is None and int(stats_client.hget(books, "events_in") or 0) > 0:
                measure_from = now + 3_000  # a few seconds for the worker to settle
                measure_until = measure_from + seconds * 1000
            if measure_until is not None and now > measure_until + 4_000:
                break  # 4 s more traffic: the last probes' estimates get published
            if measure_from is None and now - last > 120_000:
                raise RuntimeError(f"the latency worker consumed nothing in 120 s:\n{run.log_tail()}")
            carry += rate * (now - last) / 1000
            n = int(carry)
            carry -= n
            bulk = np.zeros(n, dtype=RECORD_DTYPE)
            bulk["device"] = population[rng.integers(0, DEVICES, n)].view("V8")
            bulk["ts"] = np.sort(rng.uniform(last, now, n)).astype(np.int64)
            bulk["cell"] = city_cells[rng.integers(0, len(city_cells), n)]
            bulk["type"] = 4
            extra = []
            while next_probe <= now and (measure_until is None or next_probe <= measure_until):
                k = len(probes)
                probe = np.zeros(1, dtype=RECORD_DTYPE)
                probe["device"] = rng.integers(0, 2**64 - 1, 1, dtype=np.uint64, endpoint=True).view("V8")
                probe["ts"] = int(next_probe)
                probe["cell"] = PROBE_CELL_BASE + k % PROBE_AREAS
                probe["type"] = 5
                extra.append(probe)
                measured = measure_from is not None and measure_until is not None and measure_from <= next_probe <= measure_until
                probes.append((int(next_probe), k % PROBE_AREAS, measured))
                next_probe += PROBE_INTERVAL_MS
            events = np.concatenate([bulk, *extra]) if extra else bulk
            events = events[np.argsort(events["ts"], kind="stable")]
            for partition, key, frame in framer.frames(events):
                await producer.send(topics.events, value=frame, key=key, partition=partition)
            sent += len(events)
            last = now
        await producer.flush()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await reader
        await consumer.stop()
        await producer.stop()
    consumed = int(stats_client.hget(books, "events_in") or 0)

    # Match each measured probe with the first estimate of its area that counts it.
    by_area: dict[str, list[tuple[float, int, int]]] = {}
    for received_ms, area, as_of, devices in received:
        by_area.setdefault(area, []).append((received_ms, as_of, devices))
    window_ms = LATENCY_WINDOW_S * 1000
    latencies: list[float] = []
    unmatched = 0
    unmatched_detail: list[dict] = []
    for k, (ts, j, measured) in enumerate(probes):
        if not measured:
            continue
        area_probes = [t for t, a, _ in probes[: k + 1] if a == j]
        found = None
        for received_ms, as_of, devices in by_area.get(f"probe-{j}", []):
            if not as_of - window_ms <= ts < as_of or received_ms < ts:
                continue
            expected = sum(1 for t in area_probes if as_of - window_ms <= t < as_of)
            if devices >= expected:
                found = received_ms
                break
        if found is None:
            unmatched += 1
            # What its area's estimates counted instead: one short of the probes means two probe
            # devices share a HyperLogLog register (a few in 16,384); none at all, a lost update.
            covering = [
                {"as_of": a, "devices": d, "probes": sum(1 for t in area_probes if a - window_ms <= t < a)}
                for r, a, d in by_area.get(f"probe-{j}", []) if a - window_ms <= ts < a and r >= ts
            ]
            unmatched_detail.append({"area": f"probe-{j}", "ts": ts, "estimates": covering[-3:]})
        else:
            latencies.append((found - ts) / 1000)
    if not latencies:
        raise RuntimeError(f"no probe estimate was matched ({unmatched} probes):\n{run.log_tail()}")
    return {
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p99_s": float(np.percentile(latencies, 99)),
        "latency_max_s": float(max(latencies)),
        "latency_probes": len(latencies),
        "latency_unmatched": unmatched,
        "latency_unmatched_detail": unmatched_detail[:10],
        "latency_offered_eps": rate,
        "latency_events_sent": sent,
        "latency_events_consumed": consumed,
        "latency_seconds": seconds,
    }


def latency(endpoints: Endpoints, log_dir: Path, config: BenchConfig, client: redis.Redis) -> dict:
    base = Settings.from_env({}).areas_path
    city = load_areas(base)
    areas_path = latency_areas(base, log_dir / "latency-areas.json")
    run = launch_run(
        endpoints, log_dir, f"bench-lat-{secrets.token_hex(3)}.", "latency", loglevel="warning",
        CROWDPULSE_AREAS=str(areas_path), CROWDPULSE_MIN_COUNT="0",
    )
    try:
        areas = load_areas(areas_path)
        return asyncio.run(_latency(run, areas, city.cell_ids, config.latency_rate, config.latency_seconds, client))
    finally:
        run.stop()
        delete_namespace(client, run.settings.namespace)
