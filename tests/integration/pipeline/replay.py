"""A simulated stream that ends at the wall clock, replayed through one worker's real ingest and
estimator in process (WorkerParts against real Redis): the shared part of the pipeline tests that
watch what the estimator keeps and deletes between passes."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from producers.simulate import SimulationRun, frames_for
from streams.core.areas import AreaMap, load_areas
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.pipeline.ingest import Message
from streams.runtime.app import WorkerParts
from streams.runtime.services import Endpoints


@dataclass
class Replay:
    settings: Settings
    areas: AreaMap
    start_ms: int
    frames: list


def stream_until_now(endpoints: Endpoints, label: str, minutes: int, devices: int, seed: int, producer_id: int,
                     ended_min_ago: int = 0) -> Replay:
    """`minutes` of the example city ending now (or `ended_min_ago` minutes ago: a replay the
    estimator catches up on to the end), framed, on a fresh Redis namespace."""
    areas = load_areas(DEFAULT_AREAS)
    settings = Settings.from_env({
        "CROWDPULSE_REDIS": endpoints.redis_url, "CROWDPULSE_NAMESPACE": f"{label}{secrets.token_hex(3)}",
    })
    end = int(time.time() * 1000) - ended_min_ago * 60_000
    start = (end // 60_000 - minutes) * 60_000
    run = SimulationRun(devices=devices, seed=seed, start_ms=start, duration_s=(end - start) / 1000, speedup=0.0,
                        partitions=settings.partitions, producer_id=producer_id, rotation=settings.rotation)
    frames = frames_for(run, areas)
    assert frames
    return Replay(settings, areas, start, frames)


async def ingest_in_steps(replay: Replay, steps: int) -> tuple[WorkerParts, list[dict]]:
    """Feed the frames in `steps` batches (offsets per partition as Kafka gives them), an
    estimator pass after each; returns the worker's parts and everything published."""
    parts = WorkerParts.build(replay.settings, replay.areas)
    offsets = {p: 0 for p in range(replay.settings.partitions)}
    published: list[dict] = []
    step = max(1, len(replay.frames) // steps)
    for i in range(0, len(replay.frames), step):
        batch = []
        for partition, key, frame in replay.frames[i : i + step]:
            batch.append(Message("events", partition, offsets[partition], key, frame))
            offsets[partition] += 1
        await parts.ingest.ingest(batch)
        published += await parts.estimator.run()
    return parts, published
