"""The estimator split across workers, measured: the synthetic city of estimator_cost.py (n
areas, 60 one-minute buckets each) counted by N counters (CountPass, each the estimator shards
a worker of N would own) and published by one publisher (PublishPass), for N = 1, 2, 3. Each
counter runs alone, one after the other, in this process: its wall time, this process' CPU
time (the worker's share: packing, the people model's neighbour search, records) and Redis'
CPU are what one of N workers would spend. The publisher's (after each round of counters) are
what the leader adds: reading every changed record, the privacy rule, the snapshot and series,
one bucket's old keys deleted.

Two passes per counter: a new minute (every owned area's spans counted: the pass that opens a
window end) and a live pass at the same window end with every area changed (sealed spans kept
from the first, as a live estimator's passes within a minute are)."""

from __future__ import annotations

import time
from typing import Any

import redis

from streams.core.areas import AreaMap
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.estimate.estimator import sealed_through
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.estimator_pass import CountPass, PublishPass, people_model
from streams.pipeline.hll_store import HllStore
from streams.pipeline.ingest import BatchPlan, PartitionState
from streams.pipeline.stage_store import StageStore
from streams.tools.bench.limits import redis_cpu_s

#: Estimator shards in this measurement: divisible by 1, 2 and 3 workers (and 4 and 6).
SHARDS = 12


async def shared_passes(store: HllStore, settings: Settings, city: AreaMap, newest: int, probe: redis.Redis,
                        workers: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    """Per N in `workers`: each counter's and the publisher's wall, CPU and Redis CPU seconds."""
    settings = Settings.from_env({}, namespace=settings.namespace, segments=False, publish_interval_s=10.0, partitions=SHARDS)
    hll = HllStore(store.redis, store.keys, shards=SHARDS, broadcast={city.reference})
    stream_now = newest * 60_000 + 30_000
    await hll.save_partitions({p: PartitionState(0, stream_now) for p in range(SHARDS)}, {})
    model = people_model(settings, city)
    out: dict[str, Any] = {"shards": SHARDS, "areas": len(city.area_ids)}
    for n in workers:
        await store.redis.delete(store.keys.counted_through, store.keys.staged_changed)
        stage = StageStore(store.redis, store.keys)
        counters = [CountPass(settings, city, hll, stage, Metrics(), model) for _ in range(n)]
        for counter in counters:
            # Building the city can take longer than the grace period, and a pass that finds
            # stream time that far behind the wall clock is catching up: it would count only
            # window ends behind partitions still moving (estimator.moving_through). Here none
            # moves: a live pass is what is measured.
            counter.motion.idle_s = -1.0
        owned = [[s for s in range(SHARDS) if s % n == i] for i in range(n)]
        publisher = PublishPass(settings, city, hll, StageStore(store.redis, store.keys), EstimateStore(store.redis, store.keys),
                                Metrics(), model)
        # The old buckets a first pass would delete at once (up to DROP_AT_MOST_BUCKETS) are
        # deleted untimed; the timed passes delete one bucket's keys, as a live pass a minute does.
        through = sealed_through(await hll.watermarks(), SHARDS, settings.grace_s * 1000, settings.bucket_ms)
        await publisher.drop_old_buckets(None if through is None else through - 1)
        # The five-minute blocks sealed before this minute (streams/core/blocks.py) are merged
        # untimed, as the passes of the minutes before would have: a new minute looks at one
        # block per area at most, every fifth minute.
        for counter, shards in zip(counters, owned):
            if counter.blocks is not None:
                mine = counter.areas_of(shards)
                await counter.merge_blocks([*mine, *sorted(hll.broadcast - set(mine))], through, newest, stream_now)
        runs: dict[str, list[dict[str, float]]] = {"new_minute": [], "live": []}
        published: dict[str, dict[str, float]] = {}
        for phase in ("new_minute", "live"):
            if phase == "live":
                plan = BatchPlan()
                plan.dirty_buckets = {(a, newest) for a in city.area_ids}
                for shard, members in hll.dirty_by_shard(plan.dirty_buckets).items():
                    await store.redis.sadd(store.keys.dirty_buckets(shard), *members)
            for counter, shards in zip(counters, owned):
                runs[phase].append(await _timed(lambda c=counter, s=shards: c.run(s), probe))
            published[phase] = await _timed(publisher.run, probe)
        out[str(n)] = {
            "counters": runs,
            "per_worker_new_minute_wall_s": max(r["wall_s"] for r in runs["new_minute"]),
            "per_worker_new_minute_cpu_s": max(r["cpu_s"] for r in runs["new_minute"]),
            "per_worker_live_wall_s": max(r["wall_s"] for r in runs["live"]),
            "per_worker_live_cpu_s": max(r["cpu_s"] for r in runs["live"]),
            "redis_new_minute_cpu_s": sum(r["redis_cpu_s"] for r in runs["new_minute"]),
            "redis_live_cpu_s": sum(r["redis_cpu_s"] for r in runs["live"]),
            "publisher": published,
        }
    one = out[str(workers[0])]
    for n in workers:
        figures = out[str(n)]
        figures["per_worker_live_cpu_vs_one"] = figures["per_worker_live_cpu_s"] / one["per_worker_live_cpu_s"]
        figures["per_worker_new_minute_cpu_vs_one"] = figures["per_worker_new_minute_cpu_s"] / one["per_worker_new_minute_cpu_s"]
    return out


async def _timed(run: Any, probe: redis.Redis) -> dict[str, float]:
    redis_before, cpu_before, started = redis_cpu_s(probe), time.process_time(), time.perf_counter()
    result = await run()
    done = {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu_before,
            "redis_cpu_s": redis_cpu_s(probe) - redis_before}
    done["items"] = float(result if isinstance(result, int) else len(result))
    return done
