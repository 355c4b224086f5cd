"""The naive baseline that `crowdpulse bench` compares the worker with; not part of the product.

A Faust agent written the way a first version usually is: one Kafka message per event (the
event's 24-byte wire record, no frame header), and for every event one round trip to Redis that
PFADDs the device to each key the event counts in (its cell's bucket and each of its areas'
buckets), so it does the same counting work as the worker, one event at a time. Progress goes to
a Redis key ("<events>:<epoch seconds>") a few times a second so the bench can time it from
outside.

Run by streams/tools/bench/workers.py as `python -m streams.tools.bench.apps`, configured like `crowdpulse worker`
(CROWDPULSE_KAFKA, CROWDPULSE_REDIS, CROWDPULSE_APP_ID, CROWDPULSE_TOPIC_PREFIX,
CROWDPULSE_NAMESPACE) plus CROWDPULSE_BENCH_PROGRESS_KEY.
"""

from __future__ import annotations

import os
import struct
import sys
import time

import faust
import redis.asyncio as aioredis

from streams.core.areas import AreaMap, load_areas
from streams.core.keys import KeyLayout
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.runtime.app import faust_datadir

# One wire-format v1 record: device (8 raw bytes), ts (i64), cell (u32), type, class, segment.
RECORD = struct.Struct("<8sqIBBH")
PROGRESS_ENV = "CROWDPULSE_BENCH_PROGRESS_KEY"


def create_naive_app(settings: Settings, areas: AreaMap, progress_key: str) -> faust.App:
    if not settings.kafka or not settings.redis_url:
        raise RuntimeError("the naive baseline needs CROWDPULSE_KAFKA and CROWDPULSE_REDIS")
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(faust_datadir(settings)),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_rebalance_timeout=settings.group_timeout_s,
        broker_session_timeout=settings.group_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.group_timeout_s / 5),
    )
    events_topic = app.topic(
        TopicNames(settings.topic_prefix).events, key_type=bytes, value_type=bytes,
        value_serializer="raw", key_serializer="raw",
    )
    keys = KeyLayout(settings.namespace, settings.bucket_s)
    bucket_ms = settings.bucket_ms
    areas_of = {int(cell): areas.areas_of_cell(int(cell)) for cell in areas.cell_ids}
    client = aioredis.Redis.from_url(settings.redis_url)
    counted = [0]

    @app.agent(events_topic, concurrency=1)
    async def count_devices(stream: faust.StreamT) -> None:
        async for value in stream:
            device, ts, cell, _type, _class, _segment = RECORD.unpack(value)
            bucket = ts // bucket_ms
            pipe = client.pipeline(transaction=False)
            pipe.pfadd(keys.cell_bucket(cell, bucket), device)
            for area in areas_of.get(cell, ()):
                pipe.pfadd(keys.area_bucket(area, bucket), device)
            await pipe.execute()
            counted[0] += 1

    @app.timer(interval=0.2)
    async def report_progress() -> None:
        await client.set(progress_key, f"{counted[0]}:{time.time():.6f}")

    return app


def main() -> int:
    from faust.worker import Worker

    settings = Settings.from_env()
    app = create_naive_app(settings, load_areas(settings.areas_path), os.environ[PROGRESS_ENV])
    worker = Worker(app, loglevel="warning", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
