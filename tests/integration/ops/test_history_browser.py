"""The footfall history on the dashboard, in a real browser: the tile's "usual" line and the
detail view's day and week charts and daily table show what the history API serves. The rows
are written straight into the session's PostgreSQL for the worker's namespace (weeks of
history through the pipeline are tests/integration/pipeline/test_history.py's and `crowdpulse
evaluate --footfall`'s job); the page reads them through the worker's HTTP API."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from streams.estimate.history import HOUR_MS, DayRow, HourRow, day_of
from streams.pipeline.history_store import HistoryStore

from ..conftest import REPO, start_worker
from ..crowd import NAIVE_PEOPLE, START_MS, CityFeed, load_test_city, small_stadium_city, stop
from .test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, browser_or_skip, stable_estimates

pytestmark = pytest.mark.integration
OUTPUT = REPO / "test-output"
NOW_HOUR = START_MS // HOUR_MS  # the feed's minutes are in this hour (18:00 UTC)
USUAL = [40.0, 50.0, 60.0, 70.0]  # the same hour on each of the four weeks before


def history_rows() -> tuple[list[HourRow], list[DayRow]]:
    """A week of the stadium by the hour (nights withheld, as they would be below k), the same
    hour of the week on the four weeks before, and eight visitor days, one withheld."""
    hours = []
    for h in range(NOW_HOUR - 7 * 24 + 1, NOW_HOUR + 1):
        at = h % 24
        if at < 7:
            hours.append(HourRow("stadium", h, 60, None, None, None, None, None, None, None, "below_min_count"))
        else:
            mean = 20.0 + 3 * at
            hours.append(HourRow("stadium", h, 60, mean, mean * 0.8, mean * 1.25, int(mean * 1.3), int(mean), int(mean * 1.6), mean / 2, None))
    for week, mean in enumerate(USUAL, start=1):
        hours.append(HourRow("stadium", NOW_HOUR - 7 * 24 * week, 60, mean, mean * 0.8, mean * 1.25, int(mean), int(mean), int(mean), mean, None))
    today = day_of(START_MS, 4 * 3600)
    days = [DayRow("stadium", d, 24, 1000 + 10 * i, 990 + 10 * i, 1010 + 10 * i, 430 + 4 * i, 35.0, 80, 7, 50.4, None)
            for i, d in enumerate(range(today - 8, today))]
    days[3] = DayRow("stadium", days[3].day, 24, None, None, None, None, 30.0, 70, 7, None, "below_min_count")
    return hours, days


async def write_history(url: str, namespace: str) -> None:
    store = HistoryStore(url, namespace)
    hours, days = history_rows()
    try:
        await store.write(hours, days, 4 * 3600)
    finally:
        await store.close()


def test_the_dashboard_shows_the_usual_level_and_the_history(endpoints, tmp_path: Path) -> None:
    sync_playwright = browser_or_skip()
    areas_path = small_stadium_city(tmp_path)
    # The history summarises the 5-minute window here: the only one published this early.
    worker = start_worker(endpoints, tmp_path, "hdash", CROWDPULSE_AREAS=str(areas_path), CROWDPULSE_HISTORY_WINDOW_S="300",
                          **NAIVE_PEOPLE)
    feed = CityFeed(endpoints, worker, load_test_city(areas_path))
    OUTPUT.mkdir(exist_ok=True)
    try:
        asyncio.run(write_history(endpoints.history_db, worker.settings.namespace))
        for minute in range(6):
            feed.minute(minute)
        stable_estimates(worker)
        stadium = next(e for e in worker.get("/api/areas") if e["area"] == "stadium" and e["window_s"] == 300)
        assert stadium["usual"] == {"people": 55.0, "low": 43.0, "high": 67.0, "weeks": 4}
        to = dt.datetime.fromtimestamp((NOW_HOUR + 1) * HOUR_MS / 1000, dt.timezone.utc)
        week = worker.get(f"/api/areas/stadium/history?step=hour&from={(to - dt.timedelta(days=7)).isoformat()[:19]}Z"
                          f"&to={to.isoformat()[:19]}Z")["rows"]
        published_week = sum(r["people_mean"] is not None for r in week)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(worker.base_url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=20_000)
            page.select_option("#window", "300")
            usual = page.locator('.tile[data-area="stadium"] [data-field="usual"]')
            page.wait_for_function("document.querySelector('.tile[data-area=\"stadium\"] [data-field=\"usual\"]').textContent !== ''",
                                   timeout=10_000)
            assert usual.inner_text().endswith("usual 55 (43–67, 4 weeks)"), usual.inner_text()
            word = "busier than usual" if stadium["people"] > 67 else "quieter than usual" if stadium["people"] < 43 else "as usual"
            assert usual.inner_text().startswith(word), (usual.inner_text(), stadium["people"])

            page.click('.tile[data-area="stadium"]')
            page.wait_for_selector("#history-week[data-hours]", timeout=10_000)
            assert int(page.get_attribute("#history-week", "data-hours")) == published_week == 7 * 17
            assert int(page.get_attribute("#history-day", "data-hours")) == 17  # 07:00-23:00 of the last day
            assert page.locator("#history-week rect.gap").count() == 7 * 7  # the withheld nights, shaded
            rows = page.locator("#history-days tr[data-day]")
            assert rows.count() == 8
            assert rows.nth(0).inner_text().split("\t")[1] == "1,070", page.locator("#history-days").inner_text()  # the newest day first
            assert "withheld (below_min_count)" in page.locator("#history-days").inner_text()
            page.locator("#history").scroll_into_view_if_needed()
            page.screenshot(path=str(OUTPUT / "dashboard-history.png"), full_page=False)
            page.screenshot(path=str(tmp_path / "dashboard-history.png"))
            assert errors == [], errors
            browser.close()
    finally:
        feed.close()
        stop(worker)
