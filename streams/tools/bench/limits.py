"""The hardware limits the worker is compared with: a raw aiokafka consumer that only counts what
it reads, and Redis' ceiling (events per Redis CPU-second for exactly the PFADDs the worker sends
for this data, and for single-member PFADDs). Also the probes the other measurements share: Redis'
and a process's CPU seconds, the CPU meters of a run, a run's key clean-up and pipeline chunking."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from streams.core.areas import AreaMap
from streams.core.keys import KeyLayout
from streams.core.settings import Settings
from streams.tools.harness import WorkerProcess


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
        # At least ten batches: a first batch holding every message (the smoke run's 100,000
        # could come in one) would leave nothing timed.
        per_batch = max(1, min(100_000, messages // 10))
        while got < messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=per_batch)
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


async def _redis_ceiling(url: str, settings: Settings, areas: AreaMap, frames: list[tuple[int, bytes, bytes]],
                         single_pfadds: int = 500_000) -> dict:
    """Redis' own limit for this data: the worker's exact PFADD/PEXPIREAT commands for the
    frames data set, sent as the worker sends them; events per Redis CPU-second (Redis runs
    commands on one thread, so one CPU-second per second is all it has). Also single-member
    PFADDs per CPU-second, the figure redis-benchmark gives."""
    from streams.pipeline.hll_store import HllStore
    from streams.pipeline.ingest import Ingestor, Message
    from streams.pipeline.redis_io import connect_one, send_packed

    probe = redis.Redis.from_url(url)
    one = connect_one(url)
    store = HllStore(one, KeyLayout(settings.namespace, settings.bucket_s))
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
        n = single_pfadds
        rng = np.random.default_rng(5)
        members = rng.integers(0, 2**63, n, dtype=np.uint64).view("V8").tolist()
        names = [f"{settings.namespace}:single:{i % 1000}".encode() for i in range(n)]
        commands = [b"*3\r\n$5\r\nPFADD\r\n$%d\r\n%s\r\n$8\r\n%s\r\n" % (len(k), k, m) for k, m in zip(names, members)]
        before = redis_cpu_s(probe)
        await send_packed(one, chunked(commands))
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



def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_meters(runs: list[WorkerProcess], client: redis.Redis, broker_pid: int | None) -> dict[str, Callable[[], float]]:
    """Cumulative CPU-second readers for the workers, Redis and (if we started it) the broker."""
    meters: dict[str, Callable[[], float]] = {"redis": lambda: redis_cpu_s(client)}
    if Path("/proc/self/stat").exists():  # Linux; elsewhere only Redis' own figure
        meters["worker"] = lambda: sum(process_cpu_s(run.process.pid) for run in runs)
        if broker_pid is not None:
            meters["broker"] = lambda: process_cpu_s(broker_pid)
    return meters



def chunked(commands: list[bytes], per_chunk: int = 20_000) -> list[tuple[bytes, int]]:
    """Pre-packed commands as pipeline chunks for redis_io.send_packed."""
    return [(b"".join(commands[i : i + per_chunk]), len(commands[i : i + per_chunk]))
            for i in range(0, len(commands), per_chunk)]

