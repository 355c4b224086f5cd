"""Pseudonym rotation through the real pipeline: with shadow frames in the overlap before the
boundary, a window spanning the rotation counts each phone once; without them (what naive
re-keying does) the same window counts the phones twice. docs/privacy.md, "Pseudonym rotation"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from producers.pseudonyms import KeySchedule, Pseudonymiser
from producers.publisher import Framer, KafkaSink
from streams.core.areas import load_areas
from streams.core.rotation import Rotation
from streams.core.wire import RECORD_DTYPE
from streams.tools.harness import estimator_busy

from ..conftest import consume_all, start_worker, wait_until

pytestmark = pytest.mark.integration
ROTATION = Rotation(period_s=86_400, offset_s=4 * 3600, overlap_s=3600)
BOUNDARY = ROTATION.boundary_ms(20_458)  # 2026-01-05T04:00:00Z
PHONES = 400


def traffic(shadows: bool) -> list[tuple[np.ndarray, bool]]:
    """The same 400 phones report every 10 minutes from 03:10 to 04:20 in one stadium cell, as
    (events, is_shadow) batches in time order. (The privacy rule withholds the stadium and
    district counts, equal to the city's here: the city count is read.)"""
    people = Pseudonymiser(np.arange(10**14, 10**14 + PHONES), KeySchedule(b"edge-master-secret-for-tests", ROTATION))
    batches: list[tuple[np.ndarray, bool]] = []
    who = np.arange(PHONES)
    for round_start in BOUNDARY - 50 * 60_000 + np.arange(8) * 10 * 60_000:
        ts = round_start + who * 100
        devices, shadow_pos, shadow_devices = people.label(who, ts)
        primary = np.zeros(PHONES, dtype=RECORD_DTYPE)
        primary["device"], primary["ts"], primary["cell"], primary["type"] = devices, ts, 1039, 4
        batches.append((primary, False))
        if shadows and len(shadow_pos):
            shadow = primary[shadow_pos].copy()
            shadow["device"] = shadow_devices
            batches.append((shadow, True))
    return batches


@pytest.mark.parametrize("shadows", [True, False])
def test_a_window_spanning_a_rotation_counts_each_phone_once(endpoints, tmp_path: Path, shadows: bool) -> None:
    # Without the protocol, the worker reads every bucket under its own key (rotation off).
    period = "86400" if shadows else "0"
    worker = start_worker(
        endpoints, tmp_path, "rot",
        CROWDPULSE_ROTATION_PERIOD_S=period, CROWDPULSE_ROTATION_OFFSET_S="14400", CROWDPULSE_ROTATION_OVERLAP_S="3600",
    )
    try:
        settings = worker.settings
        areas = load_areas(settings.areas_path)
        batches = traffic(shadows)
        framer = Framer(11, settings.partitions, areas.cell_ids)
        sink = KafkaSink(endpoints.kafka, worker.topics.events)
        for events, is_shadow in batches:  # shadow copies travel right after what they duplicate
            sink.send(framer.frames(events, shadow=is_shadow))
        sink.close()
        expected = sum(len(events) for events, _ in batches)
        wait_until(lambda: worker.stats()["counted"] == expected, timeout=60, what="events counted")
        wait_until(lambda: not estimator_busy(worker.redis, worker.keys, worker.settings.partitions), timeout=30, what="estimator idle")
        time.sleep(2.5)
        messages = [json.loads(m.value) for m in consume_all(endpoints.kafka, worker.topics.occupancy, settings.partitions)]
        hourly = {m["as_of"]: m["devices"] for m in messages if m["area"] == "city" and m["window_s"] == 3600}
        before = hourly[BOUNDARY]  # the window ending at the rotation: one epoch only
        after = hourly[BOUNDARY + 20 * 60_000]  # spans 03:20-04:20: both sides of the rotation
        assert abs(before - PHONES) <= 0.03 * PHONES
        if shadows:
            assert abs(after - PHONES) <= 0.03 * PHONES, hourly
        else:
            assert after > 1.8 * PHONES, hourly  # the naive way: every phone twice
    finally:
        worker.process.stop(timeout=15)
        worker.redis.close()


def test_a_feed_that_does_not_declare_a_rotation_keeps_whole_windows(endpoints, tmp_path: Path) -> None:
    # The worker runs the default schedule (daily at 04:00 UTC), but this feed's pseudonyms
    # never rotate and it sends no shadow events: a window across 04:00 must not be cut there.
    worker = start_worker(endpoints, tmp_path, "norot", CROWDPULSE_ROTATION_PERIOD_S="86400",
                          CROWDPULSE_ROTATION_OFFSET_S="14400", CROWDPULSE_ROTATION_OVERLAP_S="3600")
    try:
        settings = worker.settings
        areas = load_areas(settings.areas_path)
        framer = Framer(12, settings.partitions, areas.cell_ids)
        sink = KafkaSink(endpoints.kafka, worker.topics.events)
        sent = 0
        # 400 phones report every 10 minutes until 03:50, then leave; 20 others stay past 04:00.
        for round_start in BOUNDARY - 50 * 60_000 + np.arange(8) * 10 * 60_000:
            who = np.arange(PHONES) if round_start < BOUNDARY else np.arange(PHONES, PHONES + 20)
            events = np.zeros(len(who), dtype=RECORD_DTYPE)
            events["device"] = (who + 7_000_000).astype("<u8").view("V8")
            events["ts"], events["cell"], events["type"] = round_start + (who % PHONES) * 100, 1039, 4
            sink.send(framer.frames(events))
            sent += len(events)
        sink.close()
        wait_until(lambda: worker.stats()["counted"] == sent, timeout=60, what="events counted")
        wait_until(lambda: not estimator_busy(worker.redis, worker.keys, worker.settings.partitions), timeout=30, what="estimator idle")
        time.sleep(2.5)
        messages = [json.loads(m.value) for m in consume_all(endpoints.kafka, worker.topics.occupancy, settings.partitions)]
        hourly = {m["as_of"]: m["devices"] for m in messages if m["area"] == "city" and m["window_s"] == 3600}
        after = hourly[BOUNDARY + 20 * 60_000]  # 03:20-04:20: the 400 before 04:00 and the 20 after
        assert abs(after - (PHONES + 20)) <= 0.03 * PHONES, hourly
    finally:
        worker.process.stop(timeout=15)
        worker.redis.close()
