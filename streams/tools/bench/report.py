"""The bench's figures as output: the medians and per-step progress lines, the table printed at
the end (`format_table`) and the JSON form of the figures (`finite`: no NaN in JSON)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")



def median_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for row in rows for name in row})
    return {name: median([row[name] for row in rows if name in row]) for name in names}


def stepper(out: Callable[[str], None], started: float) -> Callable[[str], None]:
    def step(name: str) -> None:
        out(f"[{time.monotonic() - started:6.1f} s] {name} ...")

    return step


def finite(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
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
    if "frames_no_blocks_eps" in f:
        lines.append(
            f"{'  (frames, every span bucket by bucket, 1 run)':<50} {eps(f['frames_no_blocks_eps'])} "
            f"{ratios(f['frames_no_blocks_eps'])}"
        )
    if "frames_no_registers_eps" in f:
        lines.append(
            f"{'  (frames, every member by PFADD, 1 run)':<50} {eps(f['frames_no_registers_eps'])} "
            f"{ratios(f['frames_no_registers_eps'])}"
        )
    for label, key in (("frames", "frames_cpu_us_per_event"), ("ingest alone", "frames_ingest_only_cpu_us_per_event"),
                       ("frames without five-minute blocks", "frames_no_blocks_cpu_us_per_event"),
                       ("frames without register writes", "frames_no_registers_cpu_us_per_event")):
        cpu = f.get(key)
        if cpu:
            total = sum(cpu.values())
            parts = ", ".join(f"{name} {us:.2f}" for name, us in sorted(cpu.items()))
            lines.append(
                f"CPU per event, {label} (us): {parts}; total {total:.2f}, so {f['cpu_count'] or 1} cores "
                f"bound it near {1e6 * (f['cpu_count'] or 1) / total:,.0f} events/s"
            )
    if "cluster_eps" in f:
        cpu = f["cluster_cpu_us_per_event"]
        shards = ", ".join(f"{us:.2f}" for us in f["cluster_shard_cpu_us_per_event"])
        lines.append(
            f"Redis Cluster of {f['cluster_masters']} (same frames, same machine): {eps(f['cluster_eps']).strip()} events/s; "
            f"CPU per event (us): worker {cpu.get('worker', float('nan')):.2f}, broker {cpu.get('broker', float('nan')):.2f}, "
            f"Redis {cpu['redis']:.2f} in all, per shard {shards}"
            + (f"; busiest shard {f['cluster_busiest_shard_vs_ideal']:.2f}x of one Redis / {f['cluster_masters']}, "
               f"all shards {f['cluster_redis_total_vs_one']:.2f}x of one Redis" if "cluster_busiest_shard_vs_ideal" in f else "")
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
            f"a live pass with sealed spans kept (the estimator's own EstimatorPass.span_counts, "
            f"{e.get('model_live_pass_spans', 0):,} spans from Redis) {e.get('model_live_pass_wall_s', float('nan')):.2f} s, Redis CPU "
            f"{e.get('model_live_pass_redis_cpu_s', float('nan')):.2f} s ({100 * e.get('model_live_redis_cpu_share_at_10s', float('nan')):.1f}%); "
            f"the same pass reading every span bucket by bucket (no five-minute blocks) "
            f"{e.get('model_live_pass_no_blocks_wall_s', float('nan')):.2f} s, "
            f"Redis CPU {e.get('model_live_pass_no_blocks_redis_cpu_s', float('nan')):.2f} s"
        )
    for n, e in (f.get("estimator") or {}).items():
        shared = e.get("shared")
        if not shared:
            continue
        per = [shared[k] for k in ("1", "2", "3") if k in shared]

        def each(name: str, per: list = per) -> str:
            return " / ".join(f"{x[name]:.2f}" for x in per)

        publisher = per[0]["publisher"]
        lines.append(
            f"estimator shared, {int(n):,} areas over {shared['shards']} shards, per worker of 1/2/3 (CPU s, the busiest counter): "
            f"new minute {each('per_worker_new_minute_cpu_s')}, live pass {each('per_worker_live_cpu_s')} "
            f"(x{each('per_worker_live_cpu_vs_one')} of one); Redis CPU in all, live {each('redis_live_cpu_s')}; "
            f"publisher (the leader) new minute {publisher['new_minute']['cpu_s']:.2f} s, live pass {publisher['live']['cpu_s']:.2f} s"
        )
    if f.get("sizing"):
        z = f["sizing"]
        lines.append(
            "sizing from these figures (1 core per worker and per Redis shard, a pass every 10 s, areas of the estimator run): "
            + "; ".join(f"{r['workers']} workers + {r['shards']} shards: {r['events_per_s']:,.0f} events/s with "
                        f"{r['areas']:,} areas, or {r['max_areas']:,.0f} areas with no events" for r in z["rows"])
            + f"; the publisher (one worker) alone bounds the areas at {z['publisher_max_areas']:,.0f}; "
            + (f"100,000 areas every 10 s (80% busy at most) need {z['needed_for_100k']['workers']} workers and "
               f"{z['needed_for_100k']['shards']} shards" if z["needed_for_100k"]["workers"] else
               "100,000 areas every 10 s: beyond the publisher on one worker")
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
        def cpu(n: int) -> str:
            parts = f.get(f"scaleout_{n}_complete_cpu_us_per_event") or {}
            return " + ".join(f"{name} {us:.2f}" for name, us in sorted(parts.items())) or "n/a"
        lines.append(
            f"scale-out: 1 worker {f['scaleout_1_eps']:,.0f}, 2 workers {f['scaleout_2_eps']:,.0f} events/s ingested "
            f"(x{f['scaleout_ratio']:.2f}); to the last minute published {f['scaleout_1_complete_eps']:,.0f} and "
            f"{f['scaleout_2_complete_eps']:,.0f} (x{f['scaleout_complete_ratio']:.2f}); CPU us/event to then: "
            f"1 worker {cpu(1)}; 2 workers {cpu(2)}"
        )
    if "frames_vs_naive" in f:
        lines.append(
            f"ratios: frames/naive {f['frames_vs_naive']:.1f}x, JSON/naive {f['json_vs_naive']:.1f}x, "
            f"frames/raw limit {100 * f['frames_vs_raw_limit']:.0f}%, frames/Redis ceiling {100 * f['frames_vs_redis_ceiling']:.0f}%"
        )
    return "\n".join(lines)


def sizing(f: dict, areas: int = 10_000, layouts: tuple[tuple[int, int], ...] = ((1, 1), (3, 3), (10, 10), (30, 30))) -> dict | None:
    """What N workers and M Redis shards sustain, from this run's measured costs: per event the
    worker's and Redis' CPU (the frames run; per shard the cluster run's busiest shard share),
    per area and live pass the counter's and Redis' CPU and the publisher's (the largest
    estimator run, one counter, a pass every 10 s with one new minute in six). Each worker and
    each shard has one core; the publisher's cost lands on one worker on top. A model, not a
    measurement of such a deployment (docs/performance.md says which parts were run)."""
    cpu = f.get("frames_cpu_us_per_event") or {}
    estimators = f.get("estimator") or {}
    if not cpu.get("worker") or not cpu.get("redis") or not estimators:
        return None
    largest = max(estimators, key=int)
    shared = (estimators[largest].get("shared") or {}).get("1")
    if not shared:
        return None
    n = int(largest)
    counter_s = shared["per_worker_live_cpu_s"] / n  # worker CPU per area and pass
    redis_s = shared["redis_live_cpu_s"] / n  # Redis CPU per area and pass
    pub = shared["publisher"]
    publisher_s = (pub["new_minute"]["cpu_s"] + 5 * pub["live"]["cpu_s"]) / 6 / n
    worker_us, redis_us = cpu["worker"], cpu["redis"]
    busiest = f.get("cluster_busiest_shard_vs_ideal") or 1.0  # a shard's load against an even split
    rows = []
    for workers, shards in layouts:
        # The leader counts its share of the areas and publishes all of them: the busiest worker.
        leader_busy = areas * (counter_s / workers + publisher_s) / 10.0  # core-seconds per second
        shard_busy = areas * redis_s * busiest / shards / 10.0
        by_workers = max(0.0, 1.0 - leader_busy) * workers * 1e6 / worker_us
        by_redis = max(0.0, 1.0 - shard_busy) * shards * 1e6 / (redis_us * busiest)
        max_areas = min(10.0 / (counter_s / workers + publisher_s), shards * 10.0 / (redis_s * busiest))
        rows.append({"workers": workers, "shards": shards, "areas": areas, "events_per_s": min(by_workers, by_redis),
                     "leader_estimator_cores": leader_busy, "shard_estimator_cores": shard_busy, "max_areas": max_areas})
    # A deployment refreshing 100,000 areas every 10 s with 20% headroom on the busiest worker
    # (the leader) and the busiest shard, and no events: the fewest workers and shards.
    target, budget = 100_000, 0.8 * 10.0
    room = budget / target - publisher_s
    needed = {"areas": target, "workers": math.ceil(counter_s / room) if room > 0 else None,
              "shards": math.ceil(target * redis_s * busiest / budget)}
    return {"needed_for_100k": needed, "counter_cpu_s_per_area": counter_s, "redis_cpu_s_per_area": redis_s, "publisher_cpu_s_per_area": publisher_s,
            "worker_us_per_event": worker_us, "redis_us_per_event": redis_us, "busiest_shard_factor": busiest,
            "publisher_max_areas": 10.0 / publisher_s, "rows": rows}
