"""Try to read a small count through every channel, directly and by differencing, and fail.

One minute of events: 40 devices in the stadium, 5 more elsewhere in the east district, 5 in
the arena. Published naively, stadium 40 / east 45 / city 50 would give away the 5 outside the
stadium, and the 5-minute versus 60-minute windows of one area would too. After the rule in
streams/estimate/privacy.py only the city's 60-minute count may be seen, on every channel.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.publisher import Framer, KafkaSink
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.segments import encode as encode_segment
from streams.core.wire import RECORD_DTYPE
from streams.tools.harness import estimator_busy

from ..conftest import RunningWorker, consume_all, wait_until

pytestmark = pytest.mark.integration
T0 = parse_time("2026-01-05T12:00:30Z")
STADIUM_ONLY_CELL, EAST_CELL, ARENA_CELL = 1039, 1005, 1050


def events_at(cell: int, n: int, first_device: int) -> np.ndarray:
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["device"] = (np.arange(first_device, first_device + n, dtype=np.uint64) * 0x9E3779B97F4A7C15).view("V8")
    out["ts"] = T0 + np.arange(n)
    out["cell"] = cell
    out["type"] = 4
    return out


def numbers_by_item(estimates) -> dict[tuple[str, int], int]:
    return {(e["area"], e["window_s"]): e["devices"] for e in estimates if e["devices"] is not None}


def test_no_channel_reveals_a_small_count(worker: RunningWorker, endpoints) -> None:
    settings = worker.settings
    areas = load_areas(settings.areas_path)
    assert set(areas.areas_of_cell(STADIUM_ONLY_CELL)) == {"city", "east-district", "stadium"}
    assert set(areas.areas_of_cell(EAST_CELL)) == {"city", "east-district"}
    assert set(areas.areas_of_cell(ARENA_CELL)) == {"city", "west-district", "arena"}
    events = np.concatenate([events_at(STADIUM_ONLY_CELL, 40, 1), events_at(EAST_CELL, 5, 100), events_at(ARENA_CELL, 5, 200)])
    # Segments: 35 of the stadium's 40 in the youngest age band, 5 in the oldest; 5 of them live
    # in the stadium's first cell (residents). Every segment but the young band is below k, and
    # the young band (35) differs from its total (40) by 5: it must be withheld too.
    stadium_home = int(np.searchsorted(areas.cell_ids, STADIUM_ONLY_CELL))
    events["segment"][:40] = encode_segment(np.where(np.arange(40) < 5, stadium_home, -1), np.where(np.arange(40) < 35, 1, 3))
    sink = KafkaSink(endpoints.kafka, worker.topics.events)
    sink.send(Framer(7, settings.partitions, areas.cell_ids).frames(events))
    sink.close()
    wait_until(lambda: worker.stats()["counted"] == len(events), timeout=60, what="events counted")
    wait_until(lambda: len(worker.get("/api/areas")) == len(areas.area_ids) * 3, timeout=30, what="estimates")  # type: ignore[arg-type]
    wait_until(lambda: not estimator_busy(worker.redis, worker.keys, worker.settings.partitions), timeout=30, what="estimator idle")
    time.sleep(2.5)

    allowed = {("city", 3600): 50}
    # HTTP: the list, and every area's detail with its series.
    assert numbers_by_item(worker.get("/api/areas")) == allowed
    for area in areas.area_ids:
        detail = worker.get(f"/api/areas/{area}")
        seen = numbers_by_item(detail["latest"]) | numbers_by_item(  # type: ignore[index]
            e for points in detail["series"].values() for e in points  # type: ignore[index]
        )
        assert seen == {k: v for k, v in allowed.items() if k[0] == area}
    # Kafka: every message ever published on crowd.occupancy.
    messages = [json.loads(m.value) for m in consume_all(endpoints.kafka, worker.topics.occupancy, settings.partitions)]
    assert messages and numbers_by_item(messages) == allowed
    suppressed = [m for m in messages if m["suppressed"]]
    assert all(m[f] is None for m in suppressed for f in ("devices", "people", "people_low", "people_high"))
    # Segments: nothing small, and no segment whose complement in its total is small.
    shown_segments = [(m, name, seg) for m in messages if m.get("segments") for name, seg in m["segments"].items() if seg]
    assert all(seg["devices"] >= settings.min_count and m["devices"] - seg["devices"] >= settings.min_count
               for m, name, seg in shown_segments), shown_segments
    # Prometheus: per-area gauges exist only for what is published, with the published people.
    families = {f.name: f for f in text_string_to_metric_families(worker.metrics_text())}
    people = {(s.labels["area"], int(s.labels["window_s"])): s.value for s in families["crowdpulse_area_people"].samples}
    latest = {(e["area"], e["window_s"]): e["people"] for e in worker.get("/api/areas")}  # type: ignore[union-attr]
    assert set(people) == set(allowed) and people == {k: float(latest[k]) for k in allowed}
