"""The dashboard in a real browser (Debian's chromium, driven by Playwright) while the pipeline
runs: the numbers on the tiles are the ones /api/areas serves, an alert appears without a
reload when a crowd pushes the stadium over its threshold, and acknowledging it works. The
webhook points at a dead port throughout: a failing webhook must not hold anything up.

Screenshots go to test-output/ in the repository (git-ignored) and to the test's tmp_path.
The test skips only outside CI on a machine without a browser; in CI (make test installs
chromium) a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.runtime.processes import free_port

from ..conftest import REPO, start_worker, wait_until
from ..crowd import NAIVE_PEOPLE, CityFeed, five_minute_rules, load_test_city, small_stadium_city, stop

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CROWDPULSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
OUTPUT = REPO / "test-output"


def browser_or_skip():
    """Playwright's sync_playwright, or a skip with the reason (a failure in CI)."""
    sync_playwright = None
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is None and not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        reason = f"no browser at {CHROMIUM} (apt-get install chromium, or set CROWDPULSE_CHROMIUM)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    return sync_playwright


def number(text: str) -> int:
    return int(re.sub(r"[^0-9]", "", text))


def stable_estimates(worker) -> dict:
    """/api/areas once the estimator has nothing left to republish (two reads agree)."""
    def read():
        first = worker.get("/api/areas")
        time.sleep(1.5)
        return first == worker.get("/api/areas") and first

    return {(e["area"], e["window_s"]): e for e in wait_until(read, 30, "the estimates to settle")}


#: The tile's line under "withheld for privacy", per suppressed_reason (dashboard.js WITHHELD).
WITHHELD_WHY = {
    "below_min_count": "fewer phones than the privacy threshold",
    "differencing": "too close to a containing area's count",
    "privacy_budget": "the day's privacy budget is spent",
}


def assert_tiles_match(page, api: dict, area_ids: list[str], window: int) -> int:
    """Every tile shows the API's estimate for `window`; returns how many were suppressed."""
    suppressed = 0
    for area in area_ids:
        e = api[(area, window)]
        tile = page.locator(f'.tile[data-area="{area}"]')
        # Rendering happens on the next animation frame: wait until this tile shows this window
        # at this window end before reading it.
        page.wait_for_function(
            """([a, w, asOf]) => {
                const t = document.querySelector(`.tile[data-area="${a}"]`);
                return t.dataset.window === String(w) && t.dataset.asOf === String(asOf);
            }""",
            arg=[area, window, e["as_of"]], timeout=10_000,
        )
        assert tile.locator('[data-field="window"]').inner_text() == f"{window // 60} min window"
        people = tile.locator('[data-field="people"]').inner_text()
        if e["suppressed"]:
            # No number at all: neither the count, nor its range, nor a share of capacity.
            assert people == "suppressed" and tile.locator('[data-field="pct"]').inner_text() == "—"
            assert tile.locator('[data-field="range"]').inner_text() == "withheld for privacy"
            why = WITHHELD_WHY[e["suppressed_reason"]] + (" · windows still filling" if e["warming_up"] else "")
            assert tile.locator('[data-field="phones"]').inner_text() == why
            assert "suppressed" in tile.get_attribute("class")
            suppressed += 1
        else:
            assert number(people) == e["people"], (area, people, e)
            low, high = tile.locator('[data-field="range"]').inner_text().split("(")[0].split("–")
            assert (number(low), number(high)) == (e["people_low"], e["people_high"]), area
            assert ("warming up" in tile.locator('[data-field="range"]').inner_text()) == e["warming_up"], area
            pct = tile.locator('[data-field="pct"]').inner_text()
            assert number(pct) == round(100 * e["people"] / e["capacity"]), (area, pct)
            assert tile.get_attribute("data-level") == e["level"]
            # The window selector changes what a window counts: its phones, in their own unit.
            assert tile.locator('[data-field="phones"]').inner_text() == f"{e['devices']:,} phones seen in {window // 60} min"
    return suppressed


def test_dashboard_shows_the_api_numbers_raises_and_acks_an_alert(endpoints, tmp_path: Path) -> None:
    sync_playwright = browser_or_skip()
    areas_path = small_stadium_city(tmp_path)
    dead_webhook = f"http://127.0.0.1:{free_port()}/nobody-listens"
    worker = start_worker(
        endpoints, tmp_path, "dash",
        CROWDPULSE_AREAS=str(areas_path), CROWDPULSE_ALERT_RULES=str(five_minute_rules(tmp_path)), **NAIVE_PEOPLE,
        CROWDPULSE_WEBHOOK_URL=dead_webhook, CROWDPULSE_WEBHOOK_SECRET="s",
    )
    feed = CityFeed(endpoints, worker, load_test_city(areas_path))
    OUTPUT.mkdir(exist_ok=True)
    try:
        for minute in range(6):
            feed.minute(minute)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(worker.base_url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=20_000)

            # 1. The tiles show exactly what /api/areas serves: the 5-minute window (the default,
            # every area published), then the 15-minute one, which the privacy rules suppress
            # this early in the stream (it equals the 60-minute window): shown as suppressed.
            api = stable_estimates(worker)
            area_ids = load_test_city(areas_path).area_ids
            # A wide screen lays the tiles out in a grid (three or more to a row at 1600 px).
            tops = [page.locator(".tile").nth(i).bounding_box()["y"] for i in range(3)]
            assert tops[0] == tops[1] == tops[2], tops
            assert assert_tiles_match(page, api, area_ids, 300) == 0
            page.select_option("#window", "900")
            assert assert_tiles_match(page, api, area_ids, 900) >= 1
            page.screenshot(path=str(OUTPUT / "dashboard-15min.png"), full_page=True)
            page.select_option("#window", "300")
            assert assert_tiles_match(page, api, area_ids, 300) == 0
            assert page.locator("#alerts li").count() == 0

            # 2. A crowd arrives in the stadium: the alert appears live (no reload).
            for minute in range(6, 9):
                feed.minute(minute, crowd=900)
            item = page.locator('#alerts li[data-alert-id^="stadium.capacity.critical."]')
            item.wait_for(timeout=30_000)
            page.wait_for_selector('.tile[data-area="stadium"].level-critical', timeout=15_000)
            alert_id = item.get_attribute("data-alert-id")
            assert "Stadium" in item.inner_text() and "critical" in item.inner_text().lower()
            # Beside the numbers of the moment it fired, what the area reads now, and the badge
            # on the tile names the alerting level.
            stadium_now = worker.get("/api/areas/stadium")["latest"]
            now_line = item.locator('[data-field="now"]').inner_text()
            assert now_line.startswith("now: ") and "% of capacity" in now_line
            assert any(f"{e['people']:,} people" in now_line for e in stadium_now if e["window_s"] == 300), (now_line, stadium_now)
            assert page.locator('.tile[data-area="stadium"] [data-field="badge"]').inner_text().startswith("critical")
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload happened"
            # Every point of the series reached the page over SSE, even buckets published
            # within the same second, with the values the API has now.
            stable_estimates(worker)
            api_series = {e["as_of"]: e["people"] for e in worker.get("/api/areas/stadium")["series"]["300"]}
            page.wait_for_function(
                "(n) => (state.series.get('stadium|300') || []).length >= n", arg=len(api_series), timeout=10_000
            )
            shown = page.evaluate("state.series.get('stadium|300').map(p => [p.as_of, p.people])")
            assert {t: v for t, v in shown} == api_series
            page.screenshot(path=str(OUTPUT / "dashboard-alert.png"), full_page=True)
            page.screenshot(path=str(tmp_path / "dashboard-alert.png"), full_page=True)

            # 3. Acknowledge it from the screen.
            page.fill("#acker", "browser test")
            page.dispatch_event("#acker", "change")
            item.locator("button.ack").click()
            page.wait_for_selector(f'#alerts li[data-alert-id="{alert_id}"].state-acknowledged', timeout=10_000)
            record = worker.get(f"/api/alerts/{alert_id}")
            assert record["state"] == "acknowledged" and record["acknowledged_by"] == "browser test"

            # 4. The detail view: the estimate band over time with its thresholds.
            page.click('.tile[data-area="stadium"]')
            page.wait_for_selector("dialog#detail[open] #chart polygon.band", timeout=10_000)
            assert page.locator("#chart line.thr.critical").count() >= 1
            assert page.locator("#detail-alerts li").count() >= 1
            page.screenshot(path=str(OUTPUT / "dashboard-detail.png"))
            page.screenshot(path=str(tmp_path / "dashboard-detail.png"))

            # 5. On a phone the alerts come before the tiles, not 1,100 px down.
            page.keyboard.press("Escape")
            page.set_viewport_size({"width": 390, "height": 844})
            page.evaluate("window.scrollTo(0, 0)")
            alerts_top = page.locator("#alerts").bounding_box()["y"]
            tiles_top = page.locator("#tiles").bounding_box()["y"]
            assert 0 < alerts_top < tiles_top and alerts_top < 844, (alerts_top, tiles_top)
            page.screenshot(path=str(OUTPUT / "dashboard-phone.png"))

            # The page names its icon (no 404 for /favicon.ico in the browser's console).
            assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("/static/favicon.svg")
            with urllib.request.urlopen(worker.base_url + "/static/favicon.svg", timeout=5) as icon:
                assert icon.headers["Content-Type"].startswith("image/svg+xml") and b"<svg" in icon.read()

            assert errors == [], errors
            foreign = [u for u in requests if not u.startswith(worker.base_url)]
            assert foreign == [], f"the dashboard must work offline, it asked for {foreign}"
            browser.close()

        # The dead webhook failed (and keeps retrying) without holding up the stream.
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(worker.metrics_text())
            for s in f.samples
        }
        assert samples[("crowdpulse_webhook_failures_total", (("reason", "connection"),))] >= 1
        assert worker.process.poll() is None
    finally:
        feed.close()
        stop(worker)
