"""Differential privacy on: releases carry discrete-Laplace noise, and each area's daily epsilon
budget is tracked in Redis and enforced on every channel (a release past it is withheld)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from producers.publisher import Framer, KafkaSink
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.wire import RECORD_DTYPE
from streams.estimate.estimator import DAY_MS
from streams.tools.harness import estimator_busy

from ..conftest import consume_all, start_worker, wait_until

pytestmark = pytest.mark.integration
T0 = parse_time("2026-01-05T12:00:00Z")


def test_noise_and_budget(endpoints, tmp_path: Path) -> None:
    worker = start_worker(
        endpoints, tmp_path, "dp",
        CROWDPULSE_DP_EPSILON="1.0", CROWDPULSE_DP_DAILY_BUDGET="4", CROWDPULSE_DP_SECRET="test-secret",
    )
    try:
        settings = worker.settings
        areas = load_areas(settings.areas_path)
        n = 30_000
        events = np.zeros(n, dtype=RECORD_DTYPE)
        events["device"] = (np.arange(1, n + 1, dtype=np.uint64) * 0x9E3779B97F4A7C15).view("V8")
        events["ts"] = T0 + np.arange(n) * 20  # ten minutes of stream time, all devices distinct
        events["cell"] = np.resize(areas.cell_ids, n)
        events["type"] = 4
        sink = KafkaSink(endpoints.kafka, worker.topics.events)
        sink.send(Framer(9, settings.partitions, areas.cell_ids).frames(events))
        sink.close()
        wait_until(lambda: worker.stats()["counted"] == len(events), timeout=60, what="events counted")
        wait_until(lambda: not estimator_busy(worker.redis, worker.keys, worker.settings.partitions), timeout=30, what="estimator idle")
        time.sleep(2.5)

        messages = [json.loads(m.value) for m in consume_all(endpoints.kafka, worker.topics.occupancy, settings.partitions)]
        released = [m for m in messages if not m["suppressed"]]
        assert released and all(m["noise"] == "discrete-laplace" for m in released)
        assert all(m["people_low"] <= m["people"] <= m["people_high"] for m in released)
        per_area = Counter(m["area"] for m in released)
        assert max(per_area.values()) <= 4  # epsilon 1 per release, budget 4 per area and day
        seen = Counter((m["area"], m["window_s"], m["as_of"], m["suppressed"], m.get("suppressed_reason")) for m in messages)
        assert any(m.get("suppressed_reason") == "privacy_budget" and m["people"] is None for m in messages), seen
        day = T0 // DAY_MS
        spent = {k.decode(): float(v) for k, v in worker.redis.hgetall(worker.keys.dp_budget(day)).items()}
        assert spent == {area: float(n) for area, n in per_area.items()}
        assert all(e["people"] is None or e.get("noise") for e in worker.get("/api/areas"))  # type: ignore[union-attr]
    finally:
        worker.process.stop(timeout=15)
        worker.redis.close()
