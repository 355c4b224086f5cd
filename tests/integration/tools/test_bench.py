"""`crowdpulse bench --smoke` (the quick bench's sections on tiny data sets) runs end to end and writes well-formed figures.

A benchmark is never a timed test: the figures are checked for shape (present, positive,
finite, consistent with each other), never against the performance targets.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.runtime.services import Endpoints
from streams.tools.bench.config import SMOKE

from ..conftest import REPO

pytestmark = pytest.mark.integration

REQUIRED = ("raw_limit_eps", "naive_eps", "frames_eps", "json_eps", "latency_p50_s", "latency_p99_s")
ALSO_POSITIVE = (
    "raw_frames_eps",
    "redis_ceiling_eps",
    "redis_single_pfadd_per_s",
    "frames_vs_naive",
    "json_vs_naive",
    "frames_vs_raw_limit",
    "frames_vs_redis_ceiling",
    "worker_peak_rss_bytes",
    "latency_probes",
)


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.timeout(600)
def test_smoke_bench_prints_the_table_and_writes_well_formed_json(endpoints: Endpoints, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(
        os.environ,
        CROWDPULSE_KAFKA=endpoints.kafka,
        CROWDPULSE_REDIS=endpoints.redis_url,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        TMPDIR=str(tmp_path),  # the bench keeps its logs; here they go with the test's own files
    )
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--smoke", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=540,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    figures = json.loads(out.read_text())
    for key in REQUIRED + ALSO_POSITIVE:
        assert positive(figures.get(key)), (key, figures.get(key))
    assert figures["mode"] == "smoke" and figures["repeats"] >= 1
    assert len(figures["loadavg_start"]) == 3 and all(x >= 0 for x in figures["loadavg_start"])
    assert figures["latency_p50_s"] <= figures["latency_p99_s"] <= figures["latency_max_s"]
    # Each unmatched probe (if any) is described: what its area's estimates counted instead.
    assert len(figures["latency_unmatched_detail"]) == min(10, figures["latency_unmatched"])
    assert figures["frames_vs_naive"] == pytest.approx(figures["frames_eps"] / figures["naive_eps"])
    assert len(figures["frames_samples"]) == figures["repeats"]
    assert figures["frames_eps"] == sorted(figures["frames_samples"])[len(figures["frames_samples"]) // 2]
    # The same frames on a Redis Cluster of three masters: CPU per event per shard.
    assert figures["cluster_masters"] == 3 and positive(figures["cluster_eps"])
    shards = figures["cluster_shard_cpu_us_per_event"]
    assert len(shards) == 3 and all(positive(x) for x in shards)
    assert figures["cluster_cpu_us_per_event"]["redis"] == pytest.approx(sum(shards))
    assert positive(figures["cluster_busiest_shard_vs_ideal"]) and positive(figures["cluster_redis_total_vs_one"])
    (n_areas,) = SMOKE.estimator_areas  # --smoke's synthetic city
    estimator = figures["estimator"][str(n_areas)]
    assert estimator["areas"] == n_areas and positive(estimator["refresh_wall_s"])
    assert estimator["refresh_redis_cpu_s"] >= 0
    # The visibility model's pass counts more spans than the three windows alone.
    assert estimator["model_spans"] > estimator["windows"] and positive(estimator["model_knn_s"])
    assert positive(estimator["model_refresh_wall_s"]) and estimator["model_refresh_redis_cpu_s"] >= 0
    # The estimator split over 1, 2 and 3 counters: every area counted once in each split, the
    # publisher timed; the sizing model built from this run's figures.
    shared = estimator["shared"]
    for n in ("1", "2", "3"):
        counters = shared[n]["counters"]
        assert len(counters["new_minute"]) == int(n)
        assert sum(c["items"] for c in counters["new_minute"]) >= n_areas  # every area (and the reference, once each)
        assert all(positive(c["cpu_s"]) for c in counters["new_minute"] + counters["live"])
        assert shared[n]["publisher"]["new_minute"]["items"] == 3 * n_areas  # every area x 3 windows published
    assert shared["1"]["per_worker_live_cpu_vs_one"] == 1.0
    sizing = figures["sizing"]
    assert positive(sizing["counter_cpu_s_per_area"]) and positive(sizing["publisher_max_areas"])
    assert [(r["workers"], r["shards"]) for r in sizing["rows"]] == [(1, 1), (3, 3), (10, 10), (30, 30)]
    assert all(r["max_areas"] > 0 for r in sizing["rows"])
    memory = figures["memory"]
    assert positive(memory["small_area_key_bytes"]) and positive(memory["large_area_key_bytes"])
    assert memory["small_area_key_bytes"] < memory["large_area_key_bytes"]
    assert positive(figures["city_memory"]["cell_key_bytes"])
    # The simulator publishing from one process, two threads generating and, beside it, one.
    assert figures["simulator_threads"] == 2, figures.get("simulator_error")
    for key in ("simulator_total_eps", "simulator_1thread_total_eps", "simulator_generate_eps",
                "simulator_1thread_generate_eps", "simulator_publish_eps"):
        assert positive(figures.get(key)), (key, figures.get(key))

    table = result.stdout
    for line in ("limit: raw aiokafka consumer", "naive Faust", "crowdpulse worker, binary frames",
                 "crowdpulse worker, JSON", "latency event -> published estimate", f"estimator: {n_areas} areas", "Redis Cluster of 3 (same frames",
                 f"estimator shared, {n_areas} areas over 12 shards", "sizing from these figures",
                 "simulator (20,000 devices, 60 s steps, 2 threads generating)"):
        assert line in table, line
