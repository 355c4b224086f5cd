"""A replay the estimator catches up on (its stream ended hours ago), through the real ingest and
estimator against real Redis, fed the uneven ways consumers feed it: one partition far behind
the others, and a shard whose counter stops for a while (its worker gone, its areas not yet
taken over). Each must end with the figures of the same replay fed in order with every shard
counted, with no window end missing, and the lagging partition must not make the estimator
count the same window ends again and again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import pytest

from streams.pipeline.ingest import Message
from streams.runtime.app import WorkerParts
from streams.runtime.services import Endpoints

from .replay import Replay, stream_until_now

pytestmark = pytest.mark.integration
MINUTES = 150
STEPS = MINUTES  # about one estimator pass per simulated minute
LAGGING_PARTITION = 1


@dataclass
class Run:
    parts: WorkerParts
    published: list[dict]
    #: After each step: (the lowest shard's counted window end, the lagging partition's
    #: watermark bucket, stream time's bucket).
    progress: list[tuple[int | None, int | None, int | None]]


async def replay_run(replay: Replay, frames: list[tuple[int, bytes, bytes]],
                     shards_counted: Callable[[int], Iterable[int]], log_ends: bool = False) -> Run:
    """Feed `frames` in STEPS batches; after each, the counter counts the shards
    `shards_counted(step)` gives and the publisher publishes. A partition moves here while its
    watermark changed since the previous pass (in a worker: within two publish intervals), so
    what holds counting back does not depend on this machine's speed. With `log_ends`, each pass
    is told every partition's log end (all the frames were produced before the replay began), as
    a worker tells it from its consumer's highwaters. Then the stream stops:
    the next pass finds every partition idle and counts what was left, and one more publishes
    it."""
    settings = replace(replay.settings, namespace=f"{replay.settings.namespace}{secrets.token_hex(2)}")
    parts = WorkerParts.build(settings, replay.areas)
    counter, publisher = parts.estimator.counter, parts.estimator.publisher
    counter.motion.idle_s = 0.0
    shards = parts.hll.shards
    offsets = {p: 0 for p in range(settings.partitions)}
    published: list[dict] = []
    progress = []
    ends = {p: sum(1 for part, _, _ in frames if part == p) for p in range(settings.partitions)}
    size = -(-len(frames) // STEPS)
    for step, start in enumerate(range(0, len(frames), size)):
        batch = []
        for partition, key, frame in frames[start : start + size]:
            batch.append(Message("events", partition, offsets[partition], key, frame))
            offsets[partition] += 1
        await parts.ingest.ingest(batch)
        await counter.run(shards_counted(step), ends if log_ends else None)
        published += await publisher.run()
        counted = await counter.stage.counted(shards)
        marks = await parts.hll.watermarks()
        lagging = marks.get(LAGGING_PARTITION)
        known = [m for m in marks.values() if m is not None]
        progress.append((
            None if None in counted.values() else min(c for c in counted.values() if c is not None),
            None if lagging is None else lagging // settings.bucket_ms,
            max(known) // settings.bucket_ms if known else None,
        ))
    for _ in range(2):
        await counter.run(range(shards))
        published += await publisher.run()
    return Run(parts, published, progress)


def final_figures(published: list[dict]) -> dict[tuple[str, int, int], dict]:
    """The last estimate published for each (area, window, window end)."""
    return {(e["area"], e["window_s"], e["as_of"]): e for e in published}


def points_counted(run: Run) -> float:
    return run.parts.metrics.points_counted._value.get()


@pytest.fixture(scope="module")
def replay(endpoints: Endpoints) -> Replay:
    return stream_until_now(endpoints, "catchup", MINUTES, devices=2000, seed=13, producer_id=14, ended_min_ago=180)


@pytest.fixture(scope="module")
def reference(replay: Replay) -> Run:
    """The frames in order, every shard counted at every pass."""
    return asyncio.run(replay_run(replay, replay.frames, lambda step: range(replay.settings.partitions)))


def test_reference_replay_publishes_every_window_end_of_every_area(replay: Replay, reference: Run) -> None:
    finals = final_figures(reference.published)
    ends = sorted({as_of for _, _, as_of in finals})
    bucket_ms = replay.settings.bucket_ms
    assert len(ends) >= MINUTES - 2 and ends == list(range(ends[0], ends[-1] + bucket_ms, bucket_ms))
    for area in replay.areas.area_ids:
        for window in replay.settings.windows_s:
            assert all((area, window, end) in finals for end in ends), (area, window)
    assert not reference.parts.estimator.live


def test_a_partition_far_behind_holds_counting_back_and_changes_no_figure(replay: Replay, reference: Run) -> None:
    # The lagging partition is read at two thirds of the others' pace: it falls behind by up
    # to a third of the stream (50 minutes), then catches up alone.
    order = sorted(range(len(replay.frames)),
                   key=lambda i: i * (1.5 if replay.frames[i][0] == LAGGING_PARTITION else 1.0))
    run = asyncio.run(replay_run(replay, [replay.frames[i] for i in order], lambda step: range(replay.settings.partitions)))

    # While it lagged, window ends were counted only up to the one it had left behind.
    behind = [(counted, lagging, stream) for counted, lagging, stream in run.progress
              if counted is not None and lagging is not None and stream is not None and stream - lagging >= 20]
    assert len(behind) > STEPS // 5
    assert all(counted < lagging for counted, lagging, _ in behind)
    # So each window end was counted about once, as in order; without the limit every pass
    # would count again every window end from the lagging partition's to stream time's.
    assert points_counted(run) <= 1.15 * points_counted(reference)
    assert final_figures(run.published) == final_figures(reference.published)


def test_a_stalled_partition_with_a_backlog_holds_counting_back(replay: Replay, reference: Run) -> None:
    # The lagging partition stalls: its frames come in bursts, each a sixth of the stream
    # (about 25 minutes) late, its watermark standing still in between, as when its worker is
    # busy. Standing still, it reads as caught up; its recorded log end says it is not.
    block = len(replay.frames) // 6
    order = sorted(range(len(replay.frames)),
                   key=lambda i: (i // block + 1) * block - 0.5 if replay.frames[i][0] == LAGGING_PARTITION else i)
    frames = [replay.frames[i] for i in order]
    blind = asyncio.run(replay_run(replay, frames, lambda step: range(replay.settings.partitions)))
    told = asyncio.run(replay_run(replay, frames, lambda step: range(replay.settings.partitions), log_ends=True))
    print(f"\npoints counted: in order {points_counted(reference):.0f}, stalled {points_counted(blind):.0f} "
          f"without the log ends, {points_counted(told):.0f} with")
    # Without the log ends, each burst changes window ends counted already: counted again.
    assert points_counted(blind) > 1.3 * points_counted(reference)
    # With them, about once each, as in order, and the same figures.
    assert points_counted(told) <= 1.15 * points_counted(reference)
    assert final_figures(told.published) == final_figures(reference.published)
    assert final_figures(blind.published) == final_figures(reference.published)


def test_a_partition_read_late_and_behind_changes_no_figure(replay: Replay, reference: Run) -> None:
    # The lagging partition's first frames come a quarter of the stream (about 37 minutes)
    # late: until then it has no watermark, holds nothing back, and the others' window ends are
    # counted; its events then change window ends counted already, which are counted again as
    # far as they had been (past the ones it has left behind).
    lag = len(replay.frames) // 4
    order = sorted(range(len(replay.frames)),
                   key=lambda i: i + (lag if replay.frames[i][0] == LAGGING_PARTITION else 0))
    run = asyncio.run(replay_run(replay, [replay.frames[i] for i in order], lambda step: range(replay.settings.partitions)))
    assert any(counted is not None and lagging is not None and counted - lagging > 20
               for counted, lagging, _ in run.progress)
    assert final_figures(run.published) == final_figures(reference.published)


def test_a_shard_left_uncounted_for_an_hour_and_a_half_changes_no_figure(replay: Replay, reference: Run) -> None:
    # Shard 2's counter stops for 90 simulated minutes (90 passes), then counts again: the
    # publisher must keep the buckets and records of the window ends it has not counted, though
    # every partition's watermark is far past them.
    shards = replay.settings.partitions
    gone = range(STEPS // 5, STEPS // 5 + 90)
    run = asyncio.run(replay_run(replay, replay.frames,
                                 lambda step: [s for s in range(shards) if s != 2 or step not in gone]))
    assert any(counted is not None and stream is not None and stream - counted > 80
               for counted, _, stream in run.progress)
    assert final_figures(run.published) == final_figures(reference.published)
