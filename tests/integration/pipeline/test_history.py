"""The footfall history through the real pipeline: events over Kafka to a worker, minute
HyperLogLogs in Redis merged into visitor days, hours and days upserted into the real PostgreSQL
the session started, read back over HTTP (JSON and CSV). docs/footfall.md."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.error
import urllib.request

import numpy as np
import psycopg
import pytest

from producers.publisher import Framer, KafkaSink
from streams.core.areas import load_areas
from streams.core.wire import RECORD_DTYPE
from streams.estimate.history import DayRow, HourRow
from streams.pipeline.history_store import HistoryStore

from ..conftest import start_worker, wait_until

pytestmark = pytest.mark.integration
MIN = 60_000
DAY_START = int(dt.datetime(2026, 1, 5, 4, tzinfo=dt.timezone.utc).timestamp() * 1000)  # a visitor day
VISITORS = 500  # distinct phones on the high street that day
BATCH = 60 * MIN
RESIDENTS = 10  # phones reporting all day in each cell off the high street


def traffic(areas) -> tuple[list[np.ndarray], int]:
    """Event batches of two hours each, from 03:00 on the visitor day to 05:20 the next:
    RESIDENTS phones in every cell off the high street, every 10 minutes (every partition
    moves on, and no area differs from one it contains by fewer than the privacy threshold),
    and VISITORS phones that each spend an hour on the high street between 08:00 and 18:00,
    seen every 10 minutes, each on one visit. Returns the batches and the high-street cell."""
    rng = np.random.default_rng(5)
    street = int(areas.area_by_id["high-street"].cells[0])
    cells = [c for c in areas.cell_ids if c not in set(areas.area_by_id["high-street"].cells)]
    resident_ids = rng.bytes(8 * RESIDENTS * len(cells))
    visitor_ids = rng.bytes(8 * VISITORS)
    arrive = DAY_START + 4 * 60 * MIN + rng.integers(0, 9 * 60, VISITORS) * MIN
    start, end = DAY_START - 60 * MIN, DAY_START + (24 * 60 + 80) * MIN
    batches = []
    for t0 in range(start, end, BATCH):
        rows = []
        for t in range(t0, min(t0 + BATCH, end), 10 * MIN):
            for i in range(RESIDENTS * len(cells)):
                rows.append((resident_ids[8 * i:8 * i + 8], t + i * 100, int(cells[i // RESIDENTS])))
            here = np.flatnonzero((arrive <= t) & (t < arrive + 60 * MIN))
            rows += [(visitor_ids[8 * j:8 * j + 8], t + 500 + int(j), street) for j in here]
        batch = np.zeros(len(rows), dtype=RECORD_DTYPE)
        batch["device"] = [r[0] for r in rows]
        batch["ts"] = [r[1] for r in rows]
        batch["cell"] = [r[2] for r in rows]
        batch["type"] = 4
        batches.append(batch)
    return batches, street


def newest_published(worker) -> int:
    """The newest window end on /api/areas (0 while the worker is busy and does not answer)."""
    try:
        return max((e["as_of"] for e in worker.get("/api/areas", timeout=5)), default=0)
    except OSError:
        return 0


def get(url: str, accept: str = "application/json") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def test_a_day_of_footfall_is_stored_and_served(endpoints, tmp_path) -> None:
    assert endpoints.history_db, "the session's services start PostgreSQL"
    # No rotation: the test's pseudonyms are fixed; the visitor day still starts at 04:00 UTC.
    worker = start_worker(endpoints, tmp_path, "hist", CROWDPULSE_ROTATION_PERIOD_S="0", CROWDPULSE_PUBLISH_INTERVAL_S="0.2",
                          CROWDPULSE_PEOPLE_MODEL="devices")
    try:
        settings = worker.settings
        areas = load_areas(settings.areas_path)
        batches, street = traffic(areas)
        framer = Framer(21, settings.partitions, areas.cell_ids)
        sink = KafkaSink(endpoints.kafka, worker.topics.events)
        for batch in batches:
            sink.send(framer.frames(batch))
            sink.producer.flush()
            # Paced: the estimator publishes every minute of a batch (fewer than its catch-up
            # limit, 240) before the next one comes.
            newest = int(batch["ts"].max()) // MIN * MIN
            wait_until(lambda n=newest: newest_published(worker) >= n, 60, "the estimator to reach the batch's last minute")
        sink.close()
        with psycopg.connect(endpoints.history_db) as conn:
            def day_row():
                return conn.execute(
                    "SELECT visitors, phones, hours, people_mean, dwell_min, withheld FROM crowdpulse_history_daily "
                    "WHERE namespace = %s AND area = 'high-street' AND day = '2026-01-05'", (settings.namespace,)).fetchone()
            wait_until(day_row, 60, "the visitor day's row")
            visitors, phones, hours, people_mean, dwell, withheld = day_row()
            hourly = conn.execute(
                "SELECT hour_start, points, people_mean, withheld FROM crowdpulse_history_hourly "
                "WHERE namespace = %s AND area = 'high-street' ORDER BY hour_start", (settings.namespace,)).fetchall()
        # HyperLogLog's count of the day's distinct phones (exactly VISITORS), scaled to people.
        assert withheld is None and hours == 24, " ".join(f"{r[0].isoformat()[8:13]}:{r[1]}" for r in hourly)
        assert abs(phones - VISITORS) <= 0.03 * VISITORS, phones
        assert visitors == round(phones / (settings.market_share * settings.sims_per_person))
        # Every minute of a whole hour is behind its row; the night is withheld as it was live.
        by_hour = {r[0].hour: r for r in hourly if r[0].date() == dt.date(2026, 1, 5)}
        assert all(by_hour[h][1] == 60 for h in range(4, 24))
        assert by_hour[4][3] == "below_min_count" and by_hour[4][2] is None
        assert all(by_hour[h][2] > 0 and by_hour[h][3] is None for h in range(10, 17))
        # Little's law over the stored hours: mean stay = the day's person-hours / its visitors.
        # (Each visitor stays an hour. The worker runs the plain window model: the history keeps
        # whatever people the estimator publishes, and the visibility model, whose figures this
        # synthetic traffic says nothing about, would cost a third of the test's time; so only
        # the arithmetic is checked here.)
        day_hours = [r for r in hourly if DAY_START <= r[0].timestamp() * 1000 < DAY_START + 86_400_000]
        person_hours = sum(r[2] for r in day_hours if r[3] is None)
        assert people_mean == pytest.approx(person_hours / 24, abs=0.1)
        assert dwell == pytest.approx(person_hours * 60 / visitors, abs=0.1) and 5 < dwell < 180

        base = f"{worker.base_url}/api/areas/high-street/history"
        status, kind, body = get(f"{base}?from=2026-01-05&to=2026-01-07&step=day")
        assert status == 200 and kind.startswith("application/json")
        days = json.loads(body)["rows"]
        assert [d["day"] for d in days][:1] == ["2026-01-05"] and days[0]["visitors"] == visitors
        status, kind, body = get(f"{base}?from=2026-01-05T04:00:00Z&to=2026-01-06T04:00:00Z&step=hour", accept="text/csv")
        assert status == 200 and kind.startswith("text/csv")
        lines = body.splitlines()
        assert lines[0].startswith("area,start,points,people_mean") and len(lines) == 1 + 24
        status, kind, body = get(f"{base}?from=2026-01-05&to=2026-01-06&step=day&format=csv")
        assert status == 200 and body.splitlines()[1].startswith("high-street,2026-01-05T04:00:00Z")
        assert get(f"{base}?step=week")[0] == 400
        assert get(f"{base}?from=yesterday")[0] == 400
        assert get(f"{worker.base_url}/api/areas/nowhere/history")[0] == 404
    finally:
        worker.stop()


async def test_a_rewritten_hour_replaces_its_row_but_never_with_less(endpoints) -> None:
    """Upserts: writing the same hour and day again (a replay, a retried pass) leaves one row
    each with the new values; a row covering fewer minutes (a worker restarted mid-hour on an
    emptied Redis) does not replace a whole one."""
    store = HistoryStore(endpoints.history_db, "upsert-test")
    hour = HourRow("stadium", 500_000, 60, 10.0, 8.0, 12.0, 14, 11, 17, 5.0, None)
    day = DayRow("stadium", 20_000, 24, 120, 118, 122, 52, 10.0, 14, 2, 120.0, None)
    try:
        await store.write([hour], [day], 14_400)
        await store.write([dataclasses.replace(hour, people_mean=11.0)], [dataclasses.replace(day, visitors=121)], 14_400)
        await store.write([dataclasses.replace(hour, points=12, people_mean=3.0)], [dataclasses.replace(day, hours=5, visitors=9)], 14_400)
        rows = await store.hours(["stadium"], 500_000 * 3_600_000, 500_001 * 3_600_000)
        assert [(r.points, r.people_mean) for r in rows] == [(60, 11.0)]
        days = await store.days("stadium", dt.date(2024, 10, 3), dt.date(2024, 10, 5))
        assert [(d["hours"], d["visitors"]) for d in days] == [(24, 121)]
    finally:
        await store.close()


def test_a_history_database_away_never_stops_the_worker(endpoints, tmp_path) -> None:
    """PostgreSQL not answering: the estimates still go out, the failed writes are counted and
    the history endpoint answers 503 in JSON (the next passes retry the writes)."""
    from streams.runtime.processes import free_port

    from ..crowd import CityFeed, load_test_city, small_stadium_city, stop

    areas_path = small_stadium_city(tmp_path)
    worker = start_worker(endpoints, tmp_path, "histaway", CROWDPULSE_AREAS=str(areas_path),
                          CROWDPULSE_HISTORY_DB=f"postgresql://crowdpulse@127.0.0.1:{free_port()}/postgres")
    feed = CityFeed(endpoints, worker, load_test_city(areas_path))
    try:
        # From 18:55 to 19:05: the 18:00 hour is sealed and has minutes to store.
        for minute in range(55, 65):
            feed.minute(minute)
        wait_until(lambda: (worker.metric("crowdpulse_history_errors_total") or 0) >= 1, 30, "a failed history write")
        assert newest_published(worker) > 0 and worker.process.poll() is None
        status, kind, body = get(f"{worker.base_url}/api/areas/stadium/history")
        assert status == 503 and kind.startswith("application/json") and "unavailable" in json.loads(body)["error"]
    finally:
        feed.close()
        stop(worker)


async def test_retention_deletes_rows_older_than_the_cutoff_only(endpoints) -> None:
    store = HistoryStore(endpoints.history_db, "retention-test")
    days = [DayRow("arena", d, 24, 100, 99, 101, 43, 5.0, 9, 0, 60.0, None) for d in (20_000, 20_001, 20_002)]
    hours = [HourRow("arena", 20_000 * 24 + h, 60, 5.0, 4.0, 6.0, 9, 8, 10, 2.0, None) for h in (4, 28, 52)]
    try:
        await store.write(hours, days, 14_400)
        # Keep from the start of the middle visitor day (20,001 at 04:00) on.
        await store.delete_before(20_001 * 86_400_000 + 14_400_000)
        kept_days = await store.days("arena", dt.date(2024, 10, 1), dt.date(2024, 10, 31))
        assert [d["day"] for d in kept_days] == ["2024-10-05", "2024-10-06"]
        kept_hours = await store.hours(["arena"], 0, 30_000 * 86_400_000)
        assert [h.hour for h in kept_hours] == [20_000 * 24 + 28, 20_000 * 24 + 52]
    finally:
        await store.close()
