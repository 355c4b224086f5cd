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
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import redis

from streams.core.areas import AreaMap, load_areas
from streams.estimate.estimator import SealedCounts, ahead_share, sealed_through
from streams.core.keys import KeyLayout
from streams.runtime.services import EmbeddedServices, Endpoints, ManagedProcess, ensure_topics
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.estimate.visibility import CURVE_SPANS_S, N60, VisibilityModel, curve_features
from streams.core.wire import HEADER_SIZE, RECORD_DTYPE, RECORD_SIZE, records_to_json

REPO = Path(__file__).resolve().parents[3]
#: The synthetic population: pseudonymous devices, and events per second of *event* time
#: (about 3.6 events per device per hour, the simulator's behaviour). The data is replayed
#: as fast as the consumer can read it, so this only sets how many events share a bucket.
DEVICES = 500_000
EVENT_TIME_RATE = 500.0
FRAME_RECORDS = 1_000
JSON_EVENTS_PER_MESSAGE = 1_000
WINDOW_60_MIN_BUCKETS = 60


@dataclass(frozen=True)
class BenchConfig:
    quick: bool
    frames_events: int  # events in the frames data set (and in the scale-out data set)
    json_events: int
    naive_messages: int  # single-event messages (the raw limit reads all of them)
    naive_seconds: float  # how long the naive baseline is timed
    repeats: int  # repeats of each throughput run; the median is reported
    latency_rate: int  # events/s offered in the latency run
    latency_seconds: float  # measured part of the latency run
    estimator_areas: tuple[int, ...]
    scaleout_events: int  # 0: skipped
    simulator_devices: int
    simulator_seconds: float  # how long each simulator run is timed


QUICK = BenchConfig(True, 2_000_000, 500_000, 600_000, 6.0, 1, 100_000, 10.0, (1_000,), 0, 100_000, 3.0)
FULL = BenchConfig(False, 10_000_000, 2_000_000, 2_000_000, 20.0, 3, 100_000, 60.0, (1_000, 10_000), 12_000_000, 1_000_000, 10.0)


# --- data ---------------------------------------------------------------------------------------
def synthetic_events(
    areas: AreaMap, n: int, seed: int, start_ms: int, devices: int = DEVICES, rate: float = EVENT_TIME_RATE
) -> np.ndarray:
    """n events in event-time order: random devices of the population at random cells."""
    rng = np.random.default_rng(seed)
    population = rng.integers(0, 2**64 - 1, devices, dtype=np.uint64, endpoint=True)
    events = np.zeros(n, dtype=RECORD_DTYPE)
    events["device"] = population[rng.integers(0, devices, n)].view("V8")
    events["ts"] = start_ms + (np.arange(n, dtype=np.float64) * (1000.0 / rate)).astype(np.int64)
    events["cell"] = areas.cell_ids[rng.integers(0, len(areas.cell_ids), n)]
    events["type"] = rng.integers(1, 7, n)
    return events


def frames_of(events: np.ndarray, areas: AreaMap, partitions: int, producer_id: int) -> list[tuple[int, bytes, bytes]]:
    from producers.publisher import Framer

    framer = Framer(producer_id, partitions, areas.cell_ids, FRAME_RECORDS)
    return list(framer.frames(events))


def json_messages(frames: list[tuple[int, bytes, bytes]]) -> Iterator[tuple[int, bytes, bytes]]:
    """The same events as JSON arrays (the interop path), cut like the frames."""
    for partition, key, frame in frames:
        records = np.frombuffer(frame, dtype=RECORD_DTYPE, offset=HEADER_SIZE)
        for start in range(0, len(records), JSON_EVENTS_PER_MESSAGE):
            yield partition, key, records_to_json(records[start : start + JSON_EVENTS_PER_MESSAGE])


def single_event_messages(frames: list[tuple[int, bytes, bytes]]) -> Iterator[tuple[int, bytes, bytes]]:
    """One 24-byte wire record per message (the naive baseline's input), same partitions."""
    for partition, _key, frame in frames:
        body = memoryview(frame)[HEADER_SIZE:]
        records = np.frombuffer(frame, dtype=RECORD_DTYPE, offset=HEADER_SIZE)
        for i, cell in enumerate(records["cell"].tolist()):
            yield partition, str(cell).encode(), bytes(body[i * RECORD_SIZE : (i + 1) * RECORD_SIZE])


async def _produce(bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes | None, bytes]]) -> int:
    """Publish with aiokafka's batch API (about 2.5M small messages/s here, so producing the
    data sets takes seconds). Returns the number of messages."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    try:
        open_batches: dict[int, Any] = {}
        pending = []
        count = 0
        for partition, key, value in messages:
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a message of {len(value)} bytes does not fit in a batch")
            count += 1
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for partition, batch in open_batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        return count
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes | None, bytes]]) -> int:
    return asyncio.run(_produce(bootstrap, topic, messages))


# --- measurements -------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


async def _raw_consume(bootstrap: str, topic: str, partitions: int, messages: int) -> float:
    """Messages/s of an aiokafka consumer that only counts what it reads, timed from its
    first returned batch (the batch itself not counted) to the last message."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got, counted, started = 0, 0, None
        deadline = time.monotonic() + 120
        while got < messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=100_000)
            n = sum(len(records) for records in batch.values())
            if n and started is None:
                started = time.perf_counter()
            elif n:
                counted += n
            got += n
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consumer read {got} of {messages} messages of {topic} in 120 s")
        return counted / (time.perf_counter() - started) if started is not None else float("nan")
    finally:
        await consumer.stop()


def raw_consume(bootstrap: str, topic: str, partitions: int, messages: int) -> float:
    return asyncio.run(_raw_consume(bootstrap, topic, partitions, messages))


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _redis_ceiling(url: str, settings: Settings, areas: AreaMap, frames: list[tuple[int, bytes, bytes]]) -> dict:
    """Redis' own limit for this data: the worker's exact PFADD/PEXPIREAT commands for the
    frames data set, sent as the worker sends them; events per Redis CPU-second (Redis runs
    commands on one thread, so one CPU-second per second is all it has). Also single-member
    PFADDs per CPU-second, the figure redis-benchmark gives."""
    from streams.pipeline.hll_store import HllStore, connect
    from streams.pipeline.ingest import Ingestor, Message

    probe = redis.Redis.from_url(url)
    store = HllStore(connect(url), KeyLayout(settings.namespace, settings.bucket_s))
    try:
        ingestor = Ingestor(settings, areas)
        offsets: dict[int, int] = {}
        messages = []
        for partition, key, frame in frames:
            offset = offsets.get(partition, 0)
            offsets[partition] = offset + 1
            messages.append(Message("bench", partition, offset, key, frame))
        wall = int(time.time() * 1000)
        events = elements = 0
        cpu = 0.0
        for i in range(0, len(messages), settings.batch_messages):
            plan = ingestor.plan(messages[i : i + settings.batch_messages], wall)
            ingestor.commit(plan)
            before = redis_cpu_s(probe)
            await store.apply(plan)
            cpu += redis_cpu_s(probe) - before
            events += plan.counted
            elements += len(plan.adds.members)
        # Single-member PFADDs over 1,000 keys, pipelined (what redis-benchmark -P measures).
        n = 500_000
        rng = np.random.default_rng(5)
        members = rng.integers(0, 2**63, n, dtype=np.uint64).view("V8").tolist()
        names = [f"{settings.namespace}:single:{i % 1000}".encode() for i in range(n)]
        commands = [b"*3\r\n$5\r\nPFADD\r\n$%d\r\n%s\r\n$8\r\n%s\r\n" % (len(k), k, m) for k, m in zip(names, members)]
        before = redis_cpu_s(probe)
        await store._pipeline_packed(_chunked(commands))
        single_cpu = redis_cpu_s(probe) - before
        return {
            "redis_ceiling_eps": events / cpu if cpu > 0 else float("nan"),
            "redis_ceiling_cpu_s": cpu,
            "redis_ceiling_events": events,
            "pfadd_members_per_event": elements / events if events else float("nan"),
            "redis_single_pfadd_per_s": n / single_cpu if single_cpu > 0 else float("nan"),
        }
    finally:
        await store.redis.aclose()
        probe.close()


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    """Remove a run's keys (they would expire by themselves, up to an hour later)."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# --- worker processes ---------------------------------------------------------------------------
@dataclass
class Run:
    """One worker-like subprocess with its own group, namespace and log."""

    process: ManagedProcess
    settings: Settings
    log_path: Path

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def peak_rss_bytes(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        self.process.stop(timeout=15)


def start_run(
    endpoints: Endpoints,
    log_dir: Path,
    prefix: str,
    tag: str,
    module_args: list[str],
    app_id: str | None = None,
    namespace: str | None = None,
    **extra_env: str,
) -> Run:
    tag = f"{tag}-{secrets.token_hex(3)}"
    env = dict(
        os.environ,
        CROWDPULSE_KAFKA=endpoints.kafka,
        CROWDPULSE_REDIS=endpoints.redis_url,
        CROWDPULSE_APP_ID=app_id or f"bench-{tag}",
        CROWDPULSE_TOPIC_PREFIX=prefix,
        CROWDPULSE_NAMESPACE=namespace or f"b{tag}",
        CROWDPULSE_HTTP_PORT=str(_free_port()),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        **extra_env,
    )
    settings = Settings.from_env(env)
    ensure_topics(endpoints.kafka, {name: settings.partitions for name in TopicNames(prefix).all()})
    process = ManagedProcess()
    log_path = log_dir / f"{tag}.log"
    process.start([sys.executable, "-m", *module_args], tag, log_path, env=env, stop_signal=signal.SIGINT)
    return Run(process, settings, log_path)


def _free_port() -> int:
    from streams.runtime.services import free_port

    return free_port()


def _stats_key(settings: Settings) -> str:
    return KeyLayout(settings.namespace, settings.bucket_s).ingest_stats


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_meters(runs: list[Run], client: redis.Redis, broker_pid: int | None) -> dict[str, Callable[[], float]]:
    """Cumulative CPU-second readers for the workers, Redis and (if we started it) the broker."""
    meters: dict[str, Callable[[], float]] = {"redis": lambda: redis_cpu_s(client)}
    if Path("/proc/self/stat").exists():  # Linux; elsewhere only Redis' own figure
        meters["worker"] = lambda: sum(process_cpu_s(run.process.pid) for run in runs)
        if broker_pid is not None:
            meters["broker"] = lambda: process_cpu_s(broker_pid)
    return meters


def time_to_total(
    runs: list[Run], client: redis.Redis, key: str, field: str, total: int, stall_s: float = 90.0,
    meters: dict[str, Callable[[], float]] | None = None,
) -> dict:
    """Poll a counter until it reaches `total`; events/s between the first sample above zero
    (the first written batch: start-up and group join are not timed) and the last event. With
    `meters`, also the CPU each process spent per event over the same span."""
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
    return result


def worker_throughput(
    endpoints: Endpoints, log_dir: Path, prefix: str, total: int, tag: str, client: redis.Redis,
    broker_pid: int | None = None, keep_memory: bool = False, **extra_env: str,
) -> dict:
    """Events/s of one `crowdpulse worker` through a pre-produced backlog, the CPU per event
    of the worker, Redis and the broker, and the worker's peak RSS."""
    run = start_run(endpoints, log_dir, prefix, tag, ["streams.cli", "worker", "--loglevel", "warning"], **extra_env)
    try:
        meters = cpu_meters([run], client, broker_pid)
        result = time_to_total([run], client, _stats_key(run.settings), "events_in", total, meters=meters)
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
    run = start_run(endpoints, log_dir, prefix, "naive", ["streams.tools.bench.apps"], CROWDPULSE_BENCH_PROGRESS_KEY=progress)
    try:
        deadline = time.monotonic() + 120
        first: tuple[float, int] | None = None
        while True:
            raw = client.get(progress)
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


# --- latency ------------------------------------------------------------------------------------
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


async def _latency(run: Run, areas: AreaMap, city_cells: np.ndarray, rate: int, seconds: float, stats_client: redis.Redis) -> dict:
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
    stats_key = _stats_key(settings)
    sent = 0
    last = time.time() * 1000
    next_probe = last
    carry = 0.0
    measure_from = measure_until = None
    try:
        while True:
            await asyncio.sleep(0.02)
            now = time.time() * 1000
            if measure_from is None and int(stats_client.hget(stats_key, "events_in") or 0) > 0:
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
                measured = measure_from is not None and measure_from <= next_probe <= measure_until
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
    consumed = int(stats_client.hget(stats_key, "events_in") or 0)

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
    run = start_run(
        endpoints, log_dir, f"bench-lat-{secrets.token_hex(3)}.", "latency",
        ["streams.cli", "worker", "--loglevel", "warning"],
        CROWDPULSE_AREAS=str(areas_path), CROWDPULSE_MIN_COUNT="0",
    )
    try:
        areas = load_areas(areas_path)
        return asyncio.run(_latency(run, areas, city.cell_ids, config.latency_rate, config.latency_seconds, client))
    finally:
        run.stop()
        delete_namespace(client, run.settings.namespace)


# --- estimator cost and memory ------------------------------------------------------------------
ESTIMATOR_WINDOWS_S = (300, 900, 3600)
SMALL_AREA_DEVICES = (50, 900)  # devices per bucket of a small area: uniform in this range
LARGE_AREA_DEVICES = 20_000
LARGE_AREA_SHARE = 0.05


def _chunked(commands: list[bytes], per_chunk: int = 20_000) -> list[tuple[bytes, int]]:
    """Pre-packed commands as pipeline chunks for HllStore._pipeline_packed."""
    return [(b"".join(commands[i : i + per_chunk]), len(commands[i : i + per_chunk]))
            for i in range(0, len(commands), per_chunk)]


async def _estimator_cost(url: str, n_areas: int, repeats: int) -> dict:
    """Every area of `n_areas` refreshed once, as the estimator's span_counts does it, against
    60 one-minute buckets per area; wall time and Redis CPU per full pass.
    Also Redis memory per bucket key and per area (60 minutes) for small and large areas."""
    from streams.pipeline.hll_store import HllStore, connect, pack_hll_adds
    from streams.pipeline.ingest import HllAdds

    namespace = f"best{secrets.token_hex(3)}"
    keys = KeyLayout(namespace, 60)
    store = HllStore(connect(url), keys)
    probe = redis.Redis.from_url(url)
    rng = np.random.default_rng(n_areas)
    try:
        # Templates: HLLs of realistic sizes, copied into place (COPY runs in Redis, so filling
        # n_areas x 60 keys takes seconds instead of millions of PFADDs).
        sizes = [int(s) for s in rng.integers(SMALL_AREA_DEVICES[0], SMALL_AREA_DEVICES[1] + 1, 64)]
        sizes += [LARGE_AREA_DEVICES] * 8
        names = [f"{namespace}:template:{i}" for i in range(len(sizes))]
        members = rng.integers(0, 2**64 - 1, sum(sizes), dtype=np.uint64, endpoint=True)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        far = int(time.time() * 1000) + 3_600_000
        await store._pipeline_packed(pack_hll_adds(HllAdds(names, [far] * len(names), starts, members)))
        area_ids = [f"a{i:05d}" for i in range(n_areas)]
        large = rng.random(n_areas) < LARGE_AREA_SHARE
        newest = int(time.time() // 60) - 1
        parts = []
        for area, is_large in zip(area_ids, large.tolist()):
            pool = range(64, 72) if is_large else range(64)
            for bucket in range(newest - WINDOW_60_MIN_BUCKETS + 1, newest + 1):
                src = names[int(rng.choice(pool))].encode()
                dst = keys.area_bucket(area, bucket).encode()
                parts.append(b"*3\r\n$4\r\nCOPY\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(src), src, len(dst), dst))
        await store._pipeline_packed(_chunked(parts))

        points = [(area, newest) for area in area_ids]

        async def full_pass(spans: list[tuple[int, int]]) -> tuple[float, float, dict]:
            before = redis_cpu_s(probe)
            started = time.perf_counter()
            counts = await store.span_counts(points, spans)  # sent in bounded pieces
            return time.perf_counter() - started, redis_cpu_s(probe) - before, counts

        async def live_pass(spans: list[tuple[int, int]]) -> tuple[float, float]:
            """The pass a live estimator makes once sealed spans are kept (app.Pipeline.
            _span_counts) at one pass per 10 s: every area's spans that can still change, plus
            the share of the next window end's sealed spans it counts ahead (a fifth of the
            areas at the start of a minute: estimator.ahead_share; counted here at this window
            end: the same keys, the same cost)."""
            settings = Settings.from_env({})
            # Stream time at the start of the newest bucket: the fewest buckets sealed.
            through = sealed_through({0: newest * 60_000}, 1, settings.grace_s * 1000, 60_000)
            sealed = SealedCounts(60)
            changing = [span for span in spans if not sealed.sealed(newest, span, through)]
            closed = [span for span in spans if sealed.sealed(newest, span, through)]
            share = area_ids[: ahead_share(n_areas, newest * 60_000, newest, 60_000, 10.0)]
            requests = [((area, newest), changing) for area in area_ids] + [((area, newest), closed) for area in share]
            before = redis_cpu_s(probe)
            started = time.perf_counter()
            await store.count_spans(requests)
            return time.perf_counter() - started, redis_cpu_s(probe) - before

        # The three windows alone (the naive model), then the pass the product runs with the
        # visibility model: the windows plus the curve's spans, and the neighbour search.
        window_spans = [(0, w) for w in ESTIMATOR_WINDOWS_S]
        model_spans = window_spans + [span for span in CURVE_SPANS_S if span not in window_spans]
        walls, cpus, model_walls, model_cpus, knn, live_walls, live_cpus = [], [], [], [], [], [], []
        model = VisibilityModel.load(Settings.from_env({}).visibility_model_path)
        for _ in range(repeats):
            wall, cpu, counts = await full_pass(window_spans)
            walls.append(wall)
            cpus.append(cpu)
            wall, cpu, curve_counts = await full_pass(model_spans)
            model_walls.append(wall)
            model_cpus.append(cpu)
            wall, cpu = await live_pass(model_spans)
            live_walls.append(wall)
            live_cpus.append(cpu)
            curves = np.array([[curve_counts[(a, newest, span)] for span in CURVE_SPANS_S] for a in area_ids], dtype=np.float64)
            started = time.perf_counter()
            model.predict(curve_features(curves, curves.max(axis=0)), curves[:, N60])
            knn.append(time.perf_counter() - started)
        assert len(counts) == n_areas * len(ESTIMATOR_WINDOWS_S)

        def key_bytes(area_index: int) -> list[int]:
            area = area_ids[area_index]
            pipe = probe.pipeline(transaction=False)
            for bucket in range(newest - WINDOW_60_MIN_BUCKETS + 1, newest + 1):
                pipe.memory_usage(keys.area_bucket(area, bucket), samples=0)
            return [int(b) for b in pipe.execute()]

        small_sample = [i for i in np.flatnonzero(~large)[:20].tolist()]
        large_sample = [i for i in np.flatnonzero(large)[:5].tolist()]
        small_keys = [b for i in small_sample for b in key_bytes(i)]
        large_keys = [b for i in large_sample for b in key_bytes(i)]
        encodings = {probe.execute_command("PFDEBUG", "ENCODING", n).decode() for n in names[:64]}
        result = {
            "areas": n_areas,
            "windows": len(ESTIMATOR_WINDOWS_S),
            "refresh_wall_s": median(walls),
            "refresh_redis_cpu_s": median(cpus),
            "redis_cpu_share_at_10s": median(cpus) / 10.0,
            "pfcount_keys_per_area": sum(w // 60 for w in ESTIMATOR_WINDOWS_S),
            "model_spans": len(model_spans),
            "model_refresh_wall_s": median(model_walls),
            "model_refresh_redis_cpu_s": median(model_cpus),
            "model_redis_cpu_share_at_10s": median(model_cpus) / 10.0,
            "model_knn_s": median(knn),
            "model_live_pass_wall_s": median(live_walls),
            "model_live_pass_redis_cpu_s": median(live_cpus),
            "model_live_redis_cpu_share_at_10s": median(live_cpus) / 10.0,
        }
        memory = {
            "small_area_devices_per_bucket": list(SMALL_AREA_DEVICES),
            "small_area_key_bytes": float(np.mean(small_keys)) if small_keys else None,
            "small_area_encodings": sorted(encodings),
            "small_area_60min_bytes": float(np.mean(small_keys)) * WINDOW_60_MIN_BUCKETS if small_keys else None,
            "large_area_devices_per_bucket": LARGE_AREA_DEVICES,
            "large_area_key_bytes": float(np.mean(large_keys)) if large_keys else None,
            "large_area_60min_bytes": float(np.mean(large_keys)) * WINDOW_60_MIN_BUCKETS if large_keys else None,
            "hll_sparse_max_bytes": int(probe.config_get("hll-sparse-max-bytes")["hll-sparse-max-bytes"]),
        }
        return {"estimator": result, "memory": memory}
    finally:
        await store.redis.aclose()
        delete_namespace(probe, namespace)
        probe.close()


def city_key_memory(client: redis.Redis, namespace: str) -> dict:
    """Memory of the bucket keys a worker run left: per cell key and per area key."""
    cells: list[int] = []
    areas: dict[str, list[int]] = {}
    pipe = client.pipeline(transaction=False)
    names = list(client.scan_iter(match=f"{namespace}:*:hll:*", count=5000))
    for name in names:
        pipe.memory_usage(name, samples=0)
    for name, size in zip(names, pipe.execute()):
        tag = name.decode()[len(namespace) + 1 :].partition("}")[0]  # "{c:<cell>" or "{a:<area>"
        if tag.startswith("{c:"):
            cells.append(int(size))
        else:
            areas.setdefault(tag[3:], []).append(int(size))
    return {
        "cell_key_bytes": float(np.mean(cells)) if cells else None,
        "area_key_bytes": {area: float(np.mean(sizes)) for area, sizes in sorted(areas.items())},
    }


# --- simulator ------------------------------------------------------------------------------------
def simulator_rates(bootstrap: str, partitions: int, areas: AreaMap, devices: int, seconds: float = 3.0,
                    step_s: float = 60.0, threads: int = 2) -> dict:
    """What a user runs to publish, `crowdpulse simulate --speedup 0 --threads N` (producers/
    simulate.py's run_simulation: Simulation -> Framer -> kafka-python KafkaSink in one process,
    flushed at the end), timed end to end for `seconds` (`simulator_total_eps`) with `threads`
    generating (Simulation's shards) and, side by side, with one (`simulator_1thread_*`); then
    the parts of the threaded run timed one after the other on the same kind of events:
    Simulation.step (generation), Framer (framing), KafkaSink (publishing); and for comparison
    the same frames published with aiokafka.

    The steady scenario at a 60 s step: the step is the simulator's unit of work (everyone who
    moved is re-placed once per step), so the longer it is the more events share that cost; 60 s
    is the longest step a truth file allows (the step must divide its 60 s buckets). The start
    is 12:00 UTC, far from the pseudonym-key rotation (at 04:00, whose overlap would add shadow
    copies), and each epoch's pseudonyms (one HMAC per device, once a simulated day) are
    computed before the clock starts."""
    try:
        import threading

        from producers.publisher import Framer, KafkaSink
        from producers.simulate import SimulationRun, run_simulation

        day_ms = 86_400_000
        start_ms = (int(time.time() * 1000) // day_ms - 1) * day_ms + 12 * 3_600_000

        def simulation(n_threads: int):
            run = SimulationRun(devices=devices, seed=1, start_ms=start_ms, duration_s=30 * 86_400.0, speedup=0.0,
                                partitions=partitions, producer_id=1, step_s=step_s, threads=n_threads)
            sim = run.simulation(areas)
            sim.pseudonyms.for_epoch(int(sim.rotation.epoch(start_ms)))
            return run, sim

        def end_to_end(n_threads: int) -> tuple[dict, list]:
            """As the command does it (kafka-python sends from its own thread meanwhile); then
            the generation alone on a fresh run of the same simulation (its batches returned)."""
            run, sim = simulation(n_threads)
            stop = threading.Event()
            timer = threading.Timer(seconds, stop.set)
            timer.start()
            summary = run_simulation(run, areas, KafkaSink(bootstrap, topic), stop, sim=sim)
            timer.cancel()
            _, sim = simulation(n_threads)
            batches = []
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                batches.append(sim.step())
            generate_s = time.perf_counter() - started
            return {"total_eps": summary["events"] / summary["wall_s"], "total_events": summary["events"],
                    "total_wall_s": summary["wall_s"], "generate_eps": sum(len(b) for b in batches) / generate_s}, batches

        topic = f"bench-sim-{secrets.token_hex(3)}.crowd.events"
        ensure_topics(bootstrap, {topic: partitions})
        one, _ = end_to_end(1)
        threaded, batches = end_to_end(threads)
        events = sum(len(b) for b in batches)
        generate_s = events / threaded["generate_eps"]
        framer = Framer(1, partitions, areas.cell_ids)
        started = time.perf_counter()
        frames = [f for batch in batches for f in framer.frames(batch)]
        frame_s = time.perf_counter() - started
        sink = KafkaSink(bootstrap, topic)
        started = time.perf_counter()
        sink.send(frames)
        sink.close()
        publish_s = time.perf_counter() - started
        # The same frames through aiokafka's batch API (C record builder and CRC).
        started = time.perf_counter()
        produce(bootstrap, topic, frames)
        aiokafka_s = time.perf_counter() - started
        return {
            "simulator_devices": devices,
            "simulator_step_s": step_s,
            "simulator_threads": threads,
            "simulator_seconds": seconds,
            "simulator_events": events,
            "simulator_generate_eps": threaded["generate_eps"],
            "simulator_frame_eps": events / frame_s,
            "simulator_publish_eps": events / publish_s,
            # The parts' times added up (no overlap), and the measured end-to-end rate.
            "simulator_serial_eps": events / (generate_s + frame_s + publish_s),
            "simulator_total_eps": threaded["total_eps"],
            "simulator_total_events": threaded["total_events"],
            "simulator_total_wall_s": threaded["total_wall_s"],
            "simulator_publish_aiokafka_eps": events / aiokafka_s,
            # The same, generated in one thread: the baseline of the threads' speed-up.
            "simulator_1thread_total_eps": one["total_eps"],
            "simulator_1thread_generate_eps": one["generate_eps"],
        }
    except Exception as exc:  # report, do not fail the bench
        return {"simulator_error": f"{type(exc).__name__}: {exc}"}


# --- scale-out ------------------------------------------------------------------------------------
def scaleout(
    endpoints: Endpoints, log_dir: Path, frames: list[tuple[int, bytes, bytes]], total: int, client: redis.Redis,
    broker_pid: int | None = None,
) -> dict:
    """One worker, then two in one group, on a backlog published after the group settled."""
    result: dict[str, Any] = {}
    for workers in (1, 2):
        prefix = f"bench-scale{workers}-{secrets.token_hex(3)}."
        app_id = f"bench-scale-{secrets.token_hex(3)}"
        namespace = f"bs{secrets.token_hex(3)}"
        runs = [
            start_run(endpoints, log_dir, prefix, f"scale{workers}", ["streams.cli", "worker", "--loglevel", "info"],
                      app_id=app_id, namespace=namespace)
            for _ in range(workers)
        ]
        try:
            for run in runs:
                _wait_http(run)
            time.sleep(runs[0].settings.group_timeout_s + 4)  # let the group settle on all members
            produce(endpoints.kafka, TopicNames(prefix).events, frames)
            meters = cpu_meters(runs, client, broker_pid)
            timing = time_to_total(runs, client, _stats_key(runs[0].settings), "events_in", total, meters=meters)
            shares = [_counted_by(run) for run in runs]
            result[f"scaleout_{workers}_eps"] = timing["eps"]
            result[f"scaleout_{workers}_cpu_us_per_event"] = timing.get("cpu_us_per_event")
            result[f"scaleout_{workers}_events_per_worker"] = shares
        finally:
            for run in runs:
                run.stop()
            delete_namespace(client, namespace)
    result["scaleout_ratio"] = result["scaleout_2_eps"] / result["scaleout_1_eps"]
    return result


def _wait_http(run: Run, timeout: float = 90.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{run.settings.http_port}/api/ingest"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                response.read()
            return
        except (OSError, urllib.error.URLError):
            if run.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{run.process.name} did not answer HTTP:\n{run.log_tail()}") from None
            time.sleep(0.3)


def _counted_by(run: Run) -> float | None:
    """crowdpulse_events_total{outcome="counted"} of one worker (its own Prometheus counter)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{run.settings.http_port}/metrics", timeout=5) as response:  # noqa: S310
            for line in response.read().decode().splitlines():
                if line.startswith('crowdpulse_events_total{outcome="counted"}'):
                    return float(line.split()[-1])
    except OSError:
        return None
    return None


# --- the whole bench ------------------------------------------------------------------------------
def run_bench(config: BenchConfig, json_path: Path | None = None, out: Callable[[str], None] = print) -> dict:
    started = time.monotonic()
    figures: dict[str, Any] = {
        "mode": "quick" if config.quick else "full",
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
        step = _stepper(out, started)

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
        figures.update(asyncio.run(_redis_ceiling(endpoints.redis_url, ceiling_settings, areas, ceiling_frames)))
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
        figures["frames_cpu_us_per_event"] = _median_dicts([r.get("cpu_us_per_event", {}) for r in runs])
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

        step("worker on JSON")
        json_runs = [worker_throughput(endpoints, log_dir, prefixes["json"], json_total, "json", client, broker_pid)
                     for _ in range(config.repeats)]
        figures["json_eps"] = median([r["eps"] for r in json_runs])
        figures["json_cpu_us_per_event"] = _median_dicts([r.get("cpu_us_per_event", {}) for r in json_runs])
        figures["json_samples"] = [r["eps"] for r in json_runs]
        figures["worker_peak_rss_json_bytes"] = max((r["peak_rss_bytes"] or 0) for r in json_runs) or None

        step("latency")
        figures.update(latency(endpoints, log_dir, config, client))

        step("estimator and memory")
        figures["estimator"] = {}
        for n_areas in config.estimator_areas:
            cost = asyncio.run(_estimator_cost(endpoints.redis_url, n_areas, max(3, config.repeats)))
            figures["estimator"][str(n_areas)] = cost["estimator"]
            figures["memory"] = cost["memory"]

        step("simulator")
        figures.update(simulator_rates(endpoints.kafka, settings.partitions, areas, config.simulator_devices,
                                       seconds=config.simulator_seconds))

        if config.scaleout_events:
            step("scale-out")
            scale_events = synthetic_events(areas, config.scaleout_events, seed=2, start_ms=start_ms)
            scale_frames = frames_of(scale_events, areas, settings.partitions, producer_id=2)
            figures.update(scaleout(endpoints, log_dir, scale_frames, config.scaleout_events, client, broker_pid))

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
        json_path.write_text(json.dumps(_finite(figures), indent=2, sort_keys=True) + "\n")
    return figures


def _median_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for row in rows for name in row})
    return {name: median([row[name] for row in rows if name in row]) for name in names}


def _stepper(out: Callable[[str], None], started: float) -> Callable[[str], None]:
    def step(name: str) -> None:
        out(f"[{time.monotonic() - started:6.1f} s] {name} ...")

    return step


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def format_table(f: dict) -> str:
    def eps(x: Any) -> str:
        return f"{x:>12,.0f}" if isinstance(x, (int, float)) and math.isfinite(x) else f"{'n/a':>12}"

    naive, raw = f.get("naive_eps"), f.get("raw_limit_eps")

    def ratios(x: Any) -> str:
        if not isinstance(x, (int, float)) or not naive or not raw:
            return ""
        return f"{x / naive:>9.1f}x {100 * x / raw:>7.0f}%"

    load = " ".join(f"{x:.2f}" for x in f["loadavg_start"])
    lines = [
        f"crowdpulse bench ({f['mode']}): {f['cpu_count']} CPUs, load average {load} at start, "
        f"medians of {f['repeats']} run(s), Redis {f.get('redis_version', '?')}",
        f"{'path':<50} {'events/s':>12} {'vs naive':>10} {'vs raw':>8}",
        f"{'limit: raw aiokafka consumer, 1 event/message':<50} {eps(raw)} {ratios(raw)}",
        f"{'limit: raw aiokafka consumer, frames (1,000 ev)':<50} {eps(f.get('raw_frames_eps'))} {ratios(f.get('raw_frames_eps'))}",
        f"{'limit: Redis, this data`s PFADDs per CPU-second':<50} {eps(f.get('redis_ceiling_eps'))} {ratios(f.get('redis_ceiling_eps'))}",
        f"{'naive Faust: 1 event/message, 1 round trip/event':<50} {eps(naive)} {ratios(naive)}",
        f"{'crowdpulse worker, binary frames':<50} {eps(f.get('frames_eps'))} {ratios(f.get('frames_eps'))}",
        f"{'crowdpulse worker, JSON arrays of 1,000':<50} {eps(f.get('json_eps'))} {ratios(f.get('json_eps'))}",
    ]
    if "frames_ingest_only_eps" in f:
        lines.append(
            f"{'  (frames, estimator idle: ingest alone, 1 run)':<50} {eps(f['frames_ingest_only_eps'])} "
            f"{ratios(f['frames_ingest_only_eps'])}"
        )
    for label, key in (("frames", "frames_cpu_us_per_event"), ("ingest alone", "frames_ingest_only_cpu_us_per_event")):
        cpu = f.get(key)
        if cpu:
            total = sum(cpu.values())
            parts = ", ".join(f"{name} {us:.2f}" for name, us in sorted(cpu.items()))
            lines.append(
                f"CPU per event, {label} (us): {parts}; total {total:.2f}, so {f['cpu_count'] or 1} cores "
                f"bound it near {1e6 * (f['cpu_count'] or 1) / total:,.0f} events/s"
            )
    if "latency_p50_s" in f:
        lines.append(
            f"latency event -> published estimate at {f['latency_offered_eps']:,} events/s offered: "
            f"p50 {f['latency_p50_s']:.2f} s, p99 {f['latency_p99_s']:.2f} s, max {f['latency_max_s']:.2f} s "
            f"({f['latency_probes']} probes, {f['latency_unmatched']} unmatched)"
        )
    for n, e in (f.get("estimator") or {}).items():
        lines.append(
            f"estimator: {int(n):,} areas x {e['windows']} windows refreshed in {e['refresh_wall_s']:.2f} s, "
            f"Redis CPU {e['refresh_redis_cpu_s']:.2f} s ({100 * e['redis_cpu_share_at_10s']:.1f}% of a core at one pass per 10 s); "
            f"with the visibility model's {e['model_spans']} spans {e['model_refresh_wall_s']:.2f} s, Redis CPU "
            f"{e['model_refresh_redis_cpu_s']:.2f} s ({100 * e['model_redis_cpu_share_at_10s']:.1f}%), neighbour search {e['model_knn_s']:.2f} s; "
            f"a live pass with sealed spans kept {e.get('model_live_pass_wall_s', float('nan')):.2f} s, Redis CPU "
            f"{e.get('model_live_pass_redis_cpu_s', float('nan')):.2f} s ({100 * e.get('model_live_redis_cpu_share_at_10s', float('nan')):.1f}%)"
        )
    m = f.get("memory")
    if m and m.get("small_area_key_bytes"):
        lines.append(
            f"memory per (area, minute) key: small area ({m['small_area_devices_per_bucket'][0]}-{m['small_area_devices_per_bucket'][1]} devices) "
            f"{m['small_area_key_bytes']:,.0f} B {'/'.join(m['small_area_encodings'])}, large ({m['large_area_devices_per_bucket']:,}) "
            f"{m['large_area_key_bytes']:,.0f} B; per area for 60 min: {m['small_area_60min_bytes'] / 1024:,.0f} KiB / "
            f"{m['large_area_60min_bytes'] / 1024:,.0f} KiB (hll-sparse-max-bytes {m['hll_sparse_max_bytes']})"
        )
    if f.get("worker_peak_rss_bytes"):
        lines.append(f"worker peak RSS: {f['worker_peak_rss_bytes'] / 2**20:,.0f} MiB (frames), "
                     f"{(f.get('worker_peak_rss_json_bytes') or 0) / 2**20:,.0f} MiB (JSON)")
    if "simulator_total_eps" in f:
        lines.append(
            f"simulator ({f['simulator_devices']:,} devices, {f.get('simulator_step_s', 10):g} s steps, "
            f"{f.get('simulator_threads', 1)} threads generating): generate, frame and publish in one process "
            f"{f['simulator_total_eps']:,.0f} events/s end to end (one thread: "
            f"{f.get('simulator_1thread_total_eps', float('nan')):,.0f}) (kafka-python KafkaSink); parts alone: "
            f"generate {f['simulator_generate_eps']:,.0f} (one thread: {f.get('simulator_1thread_generate_eps', float('nan')):,.0f}), "
            f"frame {f['simulator_frame_eps']:,.0f}, publish {f['simulator_publish_eps']:,.0f}; "
            f"the same frames via aiokafka {f['simulator_publish_aiokafka_eps']:,.0f} events/s"
        )
    elif "simulator_error" in f:
        lines.append(f"simulator: not measured ({f['simulator_error']})")
    if "scaleout_ratio" in f:
        lines.append(
            f"scale-out: 1 worker {f['scaleout_1_eps']:,.0f}, 2 workers {f['scaleout_2_eps']:,.0f} events/s "
            f"(x{f['scaleout_ratio']:.2f})"
        )
    if "frames_vs_naive" in f:
        lines.append(
            f"ratios: frames/naive {f['frames_vs_naive']:.1f}x, JSON/naive {f['json_vs_naive']:.1f}x, "
            f"frames/raw limit {100 * f['frames_vs_raw_limit']:.0f}%, frames/Redis ceiling {100 * f['frames_vs_redis_ceiling']:.0f}%"
        )
    return "\n".join(lines)
