"""End to end, on the real broker and Redis: simulator -> Kafka -> worker -> Redis -> estimates.
The same test runs on one Redis and on a Redis Cluster of three masters.

Each published distinct count must equal PFCOUNT of a reference HyperLogLog built in the same
Redis from the exact device set of that area and window (same elements, same registers: equal,
not close), and the accounting must close: events in = counted + dead-lettered + late.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pytest

from producers.publisher import Framer, KafkaSink
from producers.simulator import Simulation
from streams.core.areas import load_areas
from streams.core.clock import parse_time
from streams.core.wire import EVENT_TYPES, HEADER, RECORD_DTYPE, frame_bytes
from streams.estimate.privacy import containment_pairs, suppressed_items
from streams.runtime.services import Endpoints
from streams.tools.harness import estimator_busy, metric_value

from ..conftest import RunningWorker, consume_all, start_worker, wait_until

pytestmark = pytest.mark.integration

START_MS = parse_time("2026-01-05T06:00:00Z")  # a replay of the past: stream time, not wall time
DURATION_MS = 20 * 60_000
DEVICES = 20_000


def simulated_events(areas) -> list[np.ndarray]:
    sim = Simulation(areas, DEVICES, seed=7, start_ms=START_MS)
    return [e[e["ts"] < START_MS + DURATION_MS] for e in sim.run(START_MS + DURATION_MS)]


def exact_sets(events: np.ndarray, areas_doc: dict, bucket_ms: int) -> dict[tuple[str, int], set[bytes]]:
    """Plain-Python reference, independent of the numpy hot path: (area, bucket) -> phones
    (M2M devices are in no area's count)."""
    areas_of_cell: dict[int, list[str]] = defaultdict(list)
    for area in areas_doc["areas"]:
        for cell in area["cells"]:
            areas_of_cell[cell].append(area["id"])
    sets: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for record in events.tolist():
        device, ts, cell, device_class = record[0], record[1], record[2], record[4]
        if device_class != 0:
            continue
        for area in areas_of_cell[cell]:
            sets[(area, ts // bucket_ms)].add(bytes(device))
    return sets


@pytest.fixture(params=["one-redis", "redis-cluster"])
def on(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[RunningWorker, Endpoints]]:
    """A worker and its endpoints: one Redis, or a cluster of three masters."""
    endpoints = request.getfixturevalue("endpoints" if request.param == "one-redis" else "cluster_endpoints")
    running = start_worker(endpoints, tmp_path, "w")
    try:
        yield running, endpoints
    finally:
        running.process.stop(timeout=15)
        running.redis.close()


def test_simulated_city_end_to_end(on: tuple[RunningWorker, Endpoints]) -> None:
    worker, endpoints = on
    settings = worker.settings
    # The one line a worker prints when it runs (whatever the log level), naming where it reads.
    ready = wait_until(lambda: [line for line in worker.log_tail(100_000).splitlines() if "crowdpulse worker ready" in line],
                       30, "the worker's ready line")
    assert f"consuming {worker.topics.events} from {endpoints.kafka}" in ready[0] and settings.http_host in ready[0]
    areas = load_areas(settings.areas_path)
    areas_doc = json.loads(settings.areas_path.read_text())
    batches = simulated_events(areas)
    events = np.concatenate(batches)
    framer = Framer(producer_id=0xC0FFEE, partitions=settings.partitions, cell_ids=areas.cell_ids, frame_records=500)
    frames = [f for batch in batches for f in framer.frames(batch)]

    sink = KafkaSink(endpoints.kafka, worker.topics.events)
    sink.send(frames)

    # Bad input, each to be dead-lettered with its reason while the worker keeps going.
    good = frames[0][2]
    one = np.frombuffer(good, dtype=RECORD_DTYPE, offset=HEADER.size, count=1).copy()
    unknown_cell = one.copy()
    unknown_cell["cell"] = 999_999
    bad_type = one.copy()
    bad_type["type"] = 42
    json_event = {"device": "00112233445566ff", "cell": int(areas.cell_ids[0]), "ts": START_MS + DURATION_MS - 30_000, "type": "tau"}
    bad_inputs: list[tuple[bytes, str]] = [
        (b"\x00\x01 not an event", "undecodable"),
        (good[:40], "truncated_frame"),
        (good + b"\x00" * 24, "count_mismatch"),
        (b"CP\x02" + good[3:], "unknown_version"),
        (b"XX" + good[2:], "undecodable"),  # without the magic it is neither a frame nor JSON
        (good[:3] + b"\x80" + good[4:], "bad_flags"),
        (json.dumps(dict(json_event, device="262011234567890")).encode(), "raw_identifier"),  # an IMSI in clear
        (json.dumps({"device": "00112233445566ff", "cell": 1001}).encode(), "missing_field"),
        (b'{"device":"00112233445566ff","cell":1001,"ts":NaN,"type":"tau"}', "bad_json"),
        (json.dumps(dict(json_event, cell="1001")).encode(), "bad_field"),
        (json.dumps(dict(json_event, ts=10**30)).encode(), "bad_event_time"),
        (json.dumps(dict(json_event, ts=int(time.time() * 1000) + 86_400_000)).encode(), "future_event_time"),
        (frame_bytes(unknown_cell, 0xBAD, 0), "unknown_cell"),
        (frame_bytes(bad_type, 0xBAD, 1), "unknown_event_type"),
        (b"[" + b" " * (settings.max_message_bytes + 10) + b"]", "oversized_message"),
    ]
    for value, _reason in bad_inputs:
        sink.send_raw(value, key=b"bad", partition=1)
    # One good JSON event (the interop path), one repeated frame (upstream duplication: its
    # events are re-added, which PFADD absorbs), and one late event (older than watermark - grace).
    sink.send_raw(json.dumps(json_event).encode(), key=str(json_event["cell"]).encode(), partition=2)
    partition, key, repeated = frames[-1]
    sink.send_raw(repeated, key=key, partition=partition)
    late = one.copy()
    late["ts"] = START_MS
    late_partition = int(np.nonzero(framer.sorted_cells == late["cell"][0])[0][0])
    sink.send_raw(frame_bytes(late, 0x1A7E, 0), key=b"late", partition=int(framer.partition_of[late_partition]))
    sink.close()

    repeated_events = (len(repeated) - HEADER.size) // RECORD_DTYPE.itemsize
    expected_in = len(events) + len(bad_inputs) + 1 + repeated_events + 1
    stats = wait_until(
        lambda: (s := worker.stats())["events_in"] >= expected_in and s,
        timeout=120,
        what=f"{expected_in} events in (log tail: see worker log)",
    )
    assert stats["events_in"] == expected_in
    assert stats["counted"] == len(events) + 1 + repeated_events
    assert stats["deadletter"] == len(bad_inputs)
    assert stats["late"] == 1
    assert stats["events_in"] == stats["counted"] + stats["deadletter"] + stats["late"]
    assert stats["sequence_repeats"] == 1
    assert stats["sequence_gaps"] == 0

    # Quiescence: nothing left for the estimator, then one more pass.
    wait_until(lambda: not estimator_busy(worker.redis, worker.keys, worker.settings.partitions), timeout=30, what="estimator to catch up")
    time.sleep(2 * settings.publish_interval_s + 0.5)

    json_record = (bytes.fromhex(json_event["device"]), json_event["ts"], json_event["cell"], EVENT_TYPES["tau"], 0, 0)
    all_events = np.concatenate([events, np.array([json_record], dtype=RECORD_DTYPE)])
    newest_bucket = int(all_events["ts"].max()) // settings.bucket_ms
    sets = exact_sets(all_events, areas_doc, settings.bucket_ms)
    # "usual" (the footfall history's level for this hour of the week) is the API's own
    # annotation beside the estimate; every other field is the estimate every channel carries.
    api = worker.get("/api/areas")
    assert all(e.get("usual", "absent") is None for e in api if e["window_s"] == settings.history_window_s)  # type: ignore[union-attr]
    published = {(e["area"], e["window_s"]): {k: v for k, v in e.items() if k != "usual"} for e in api}  # type: ignore[union-attr]
    assert set(published) == {(a, w) for a in areas.area_ids for w in settings.windows_s}

    # Reference HyperLogLogs from the exact device sets: same elements, same registers.
    reference_key = f"{settings.namespace}:test:reference"
    reference: dict[tuple[str, int], int] = {}
    for area, window in published:
        members: set[bytes] = set()
        for bucket in range(newest_bucket - window // settings.bucket_s + 1, newest_bucket + 1):
            members |= sets.get((area, bucket), set())
        worker.redis.delete(reference_key)
        if members:
            worker.redis.pfadd(reference_key, *members)
        reference[(area, window)] = worker.redis.pfcount(reference_key)
    worker.redis.delete(reference_key)
    # What the privacy rule must withhold, given those counts (docs/privacy.md).
    pairs = containment_pairs({a.id: a.cells for a in areas.areas}, settings.windows_s)
    withheld = suppressed_items(reference, pairs, settings.min_count)
    for item, estimate in published.items():
        assert estimate["as_of"] == (newest_bucket + 1) * settings.bucket_ms
        # Twenty minutes of stream: less than the hour the visibility model reads.
        assert estimate["warming_up"] is True, item
        if item in withheld:
            assert estimate["suppressed"] is True
            assert estimate["devices"] is None and estimate["people"] is None
        else:
            assert estimate["suppressed"] is False
            assert estimate["devices"] == reference[item], item
            assert estimate["people_low"] <= estimate["people"] <= estimate["people_high"]
    assert len(published) - len(withheld) >= 10  # small counts: tests/integration/pipeline/test_privacy_channels.py

    # A plain Kafka consumer sees the same estimates on crowd.occupancy: per area and window,
    # the last message for the newest window end; and a point for every minute of the replay.
    latest: dict[tuple[str, int], dict] = {}
    points: dict[tuple[str, int], set[int]] = defaultdict(set)
    for message in consume_all(endpoints.kafka, worker.topics.occupancy, settings.partitions):
        body = json.loads(message.value)
        assert message.key.decode() == body["area"]
        key = (body["area"], body["window_s"])
        points[key].add(body["as_of"])
        if key not in latest or body["as_of"] >= latest[key]["as_of"]:
            latest[key] = body
    assert latest == published
    first_bucket = START_MS // settings.bucket_ms
    every_minute = {(b + 1) * settings.bucket_ms for b in range(first_bucket, newest_bucket + 1)}
    assert all(points[key] == every_minute for key in published), "one point per minute of stream time"

    # Every bad input is in crowd.deadletter with its reason and source coordinates.
    dead = consume_all(endpoints.kafka, worker.topics.deadletter, settings.partitions)
    reasons = sorted(dict(m.headers)["reason"].decode() for m in dead)
    assert reasons == sorted(reason for _, reason in bad_inputs)
    for m in dead:
        headers = dict(m.headers)
        assert headers["source_topic"].decode() == worker.topics.events
        assert int(headers["source_offset"]) >= 0
    late_messages = consume_all(endpoints.kafka, worker.topics.late, settings.partitions)
    assert len(late_messages) == 1
    assert late_messages[0].value == frame_bytes(late, 0x1A7E, 0)

    detail = worker.get("/api/areas/stadium")
    assert detail["area"] == "stadium" and set(detail["series"]) == {str(w) for w in settings.windows_s}  # type: ignore[index]
    assert worker.process.poll() is None, "the worker must survive every bad input"

    # Prometheus sees the same books.
    exposition = worker.metrics_text()
    assert metric_value(exposition, "crowdpulse_events_total", {"outcome": "counted"}) == stats["counted"]
    assert metric_value(exposition, "crowdpulse_events_total", {"outcome": "deadletter"}) == stats["deadletter"]
    assert metric_value(exposition, "crowdpulse_deadletter_events_total", {"reason": "oversized_message"}) == 1
