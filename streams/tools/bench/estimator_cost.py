"""The estimator's cost and Redis memory per key: `_estimator_cost` refreshes every area of a
synthetic city of n areas (60 one-minute buckets each) as the estimator does it, the three windows
alone, with the visibility model's spans and neighbour search, and as a live pass with sealed spans
kept, timing wall clock and Redis CPU; and measures Redis memory per bucket key and per area
(60 minutes) for small and large areas. `city_key_memory` measures the keys a worker run left."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Any, cast

import numpy as np
import redis

from streams.core.areas import Area, AreaMap, Cell
from streams.core.keys import KeyLayout
from streams.core.metrics import Metrics
from streams.core.settings import Settings
from streams.core.windows import Span
from streams.estimate.visibility import CURVE_SPANS_S, N60, VisibilityModel, curve_features
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.estimator_pass import EstimatorPass, people_model
from streams.tools.bench.limits import chunked, delete_namespace, redis_cpu_s
from streams.tools.bench.report import median

ESTIMATOR_WINDOWS_S = (300, 900, 3600)
SMALL_AREA_DEVICES = (50, 900)  # devices per bucket of a small area: uniform in this range
LARGE_AREA_DEVICES = 20_000
LARGE_AREA_SHARE = 0.05
WINDOW_60_MIN_BUCKETS = 60


async def _estimator_cost(url: str, n_areas: int, repeats: int) -> dict:
    """Every area of `n_areas` refreshed once, as the estimator's span_counts does it, against
    60 one-minute buckets per area; wall time and Redis CPU per full pass.
    Also Redis memory per bucket key and per area (60 minutes) for small and large areas."""
    from streams.pipeline.hll_store import HllStore, pack_hll_adds
    from streams.pipeline.ingest import HllAdds
    from streams.pipeline.redis_io import connect_one, send_packed

    namespace = f"best{secrets.token_hex(3)}"
    keys = KeyLayout(namespace, 60)
    one = connect_one(url)
    store = HllStore(one, keys)
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
        await send_packed(one, pack_hll_adds(HllAdds(names, [far] * len(names), starts, members)))
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
        await send_packed(one, chunked(parts))

        points = [(area, newest) for area in area_ids]

        async def full_pass(spans: list[Span]) -> tuple[float, float, dict]:
            before = redis_cpu_s(probe)
            started = time.perf_counter()
            counts = await store.span_counts(points, spans)  # sent in bounded pieces
            return time.perf_counter() - started, redis_cpu_s(probe) - before, counts

        # The product's own estimator pass over a city of these areas (one cell each), with the
        # visibility model and one pass per 10 s; segments off, as the synthetic keys have none.
        city = AreaMap("bench", [Cell(i, 0.0, 0.0, 100.0) for i in range(n_areas)],
                       [Area(area, area, 10_000, (i,)) for i, area in enumerate(area_ids)])
        pass_settings = Settings.from_env({}, namespace=namespace, segments=False, publish_interval_s=10.0)
        published = EstimateStore(store.redis, keys)

        async def live_pass(blocks: bool = True) -> tuple[float, float, int]:
            """The span counts of a live pass once sealed spans are kept, by the estimator's own
            code (EstimatorPass.span_counts): every area's spans that can still change, plus the
            share of the next window end's sealed spans it counts ahead (estimator.ahead_share).
            A first call at the same window end counts and keeps the sealed spans, as the passes
            before it would have; the second is timed. Stream time is at the start of the newest
            bucket: the fewest buckets sealed. Returns wall and Redis CPU seconds and the spans
            the pass counted in Redis. `blocks` off: every span read bucket by bucket (the
            baseline of the five-minute blocks, streams/core/blocks.py: with them on, the first
            call merges the large areas' sealed blocks and the timed one reads them)."""
            settings = replace(pass_settings, span_blocks=blocks)
            estimator = EstimatorPass(settings, city, store, published, Metrics(), people_model(settings, city))
            stream_now = newest * 60_000
            watermarks: dict[int, int | None] = {p: stream_now for p in range(pass_settings.partitions)}
            await estimator.counter.span_counts(points, newest, stream_now, watermarks)
            counted_before = estimator.counter.metrics.span_counts.labels("redis")._value.get()
            before = redis_cpu_s(probe)
            started = time.perf_counter()
            await estimator.counter.span_counts(points, newest, stream_now, watermarks)
            wall, cpu = time.perf_counter() - started, redis_cpu_s(probe) - before
            return wall, cpu, int(estimator.counter.metrics.span_counts.labels("redis")._value.get() - counted_before)

        # The three windows alone (the naive model), then the pass the product runs with the
        # visibility model: the windows plus the curve's spans, and the neighbour search.
        window_spans = [Span.window(w) for w in ESTIMATOR_WINDOWS_S]
        model_spans = window_spans + [span for span in CURVE_SPANS_S if span not in window_spans]
        walls, cpus, model_walls, model_cpus, knn, live_walls, live_cpus = [], [], [], [], [], [], []
        bucket_walls, bucket_cpus = [], []
        model = VisibilityModel.load(Settings.from_env({}).visibility_model_path)
        for _ in range(repeats):
            wall, cpu, counts = await full_pass(window_spans)
            walls.append(wall)
            cpus.append(cpu)
            wall, cpu, curve_counts = await full_pass(model_spans)
            model_walls.append(wall)
            model_cpus.append(cpu)
            wall, cpu, live_spans = await live_pass()
            live_walls.append(wall)
            live_cpus.append(cpu)
            wall, cpu, _ = await live_pass(blocks=False)
            bucket_walls.append(wall)
            bucket_cpus.append(cpu)
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
        result: dict[str, Any] = {
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
            "model_live_pass_spans": live_spans,
            "model_live_pass_no_blocks_wall_s": median(bucket_walls),
            "model_live_pass_no_blocks_redis_cpu_s": median(bucket_cpus),
        }
        memory = {
            "small_area_devices_per_bucket": list(SMALL_AREA_DEVICES),
            "small_area_key_bytes": float(np.mean(small_keys)) if small_keys else None,
            "small_area_encodings": sorted(encodings),
            "small_area_60min_bytes": float(np.mean(small_keys)) * WINDOW_60_MIN_BUCKETS if small_keys else None,
            "large_area_devices_per_bucket": LARGE_AREA_DEVICES,
            "large_area_key_bytes": float(np.mean(large_keys)) if large_keys else None,
            "large_area_60min_bytes": float(np.mean(large_keys)) * WINDOW_60_MIN_BUCKETS if large_keys else None,
            "hll_sparse_max_bytes": int(cast(dict, probe.config_get("hll-sparse-max-bytes"))["hll-sparse-max-bytes"]),
        }
        from streams.tools.bench.shared_estimator import shared_passes

        result["shared"] = await shared_passes(store, pass_settings, city, newest, probe)
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
        if ":b" in name.decode().rpartition(":hll:")[2]:
            continue  # a five-minute block (streams/core/blocks.py), not a bucket
        if tag.startswith("{c:"):
            cells.append(int(size))
        else:
            areas.setdefault(tag[3:], []).append(int(size))
    return {
        "cell_key_bytes": float(np.mean(cells)) if cells else None,
        "area_key_bytes": {area: float(np.mean(sizes)) for area, sizes in sorted(areas.items())},
    }
