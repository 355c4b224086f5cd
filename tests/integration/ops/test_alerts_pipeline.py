"""Alerts end to end on the real broker and Redis: a crowd arrives in the stadium, the worker
raises the alerts once on every channel (crowd.alerts, GET /api/alerts, SSE, the signed
webhook, Prometheus), an operator acknowledges one, and a restarted worker, even one that lost
its engine state, never raises the same alert twice."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from streams.runtime.processes import free_port

from ..conftest import start_worker, wait_until
from ..crowd import (
    MIN,
    NAIVE_PEOPLE,
    START_MS,
    CityFeed,
    SseReader,
    alert_events,
    five_minute_rules,
    load_test_city,
    settings_env,
    small_stadium_city,
    start_worker_with,
    stop,
)

pytestmark = pytest.mark.integration

SECRET = "webhook-test-secret"


class WebhookReceiver:
    """A receiver that answers 500 to its first `fail_first` requests, then 204."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict, bytes, int]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.requests) < receiver.fail_first else 204
                receiver.requests.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/crowd"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict]:
        return [json.loads(body) for _, body, status in list(self.requests) if status == 204]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def active(worker, rule: str, level: str) -> dict | None:
    for record in worker.get("/api/alerts")["active"]:
        if (record["area"], record["rule"], record["level"]) == ("stadium", rule, level):
            return record
    return None


def test_a_crowd_raises_alerts_once_on_every_channel_and_can_be_acknowledged(endpoints, tmp_path: Path) -> None:
    receiver = WebhookReceiver(fail_first=1)
    areas_path = small_stadium_city(tmp_path)
    worker = start_worker(
        endpoints, tmp_path, "alerts",
        CROWDPULSE_AREAS=str(areas_path), CROWDPULSE_ALERT_RULES=str(five_minute_rules(tmp_path)), **NAIVE_PEOPLE,
        CROWDPULSE_WEBHOOK_URL=receiver.url, CROWDPULSE_WEBHOOK_SECRET=SECRET,
    )
    feed = CityFeed(endpoints, worker, load_test_city(areas_path))
    sse = None
    try:
        sse = SseReader(worker.base_url + "/api/stream")
        # Six quiet minutes first: the 5-minute window the rules read is warming up (filling)
        # for the first four, and a trend is only drawn through points after that.
        for minute in range(6):
            feed.minute(minute)
        assert worker.get("/api/alerts")["active"] == []
        for minute in range(6, 10):
            feed.minute(minute, crowd=900)
        critical = wait_until(lambda: active(worker, "capacity", "critical"), 30, "the critical capacity alert")
        assert critical["state"] == "firing" and critical["capacity"] == 1_000
        assert critical["people"] >= 950 and critical["id"] == f"stadium.capacity.critical.{critical['started_at']}"

        # Kafka: every alert fired exactly once, keyed by area.
        events = wait_until(
            lambda: (e := alert_events(endpoints, worker)) and critical["id"] in {x["id"] for x in e} and e,
            30, "the alert on crowd.alerts",
        )
        fired = Counter(e["id"] for e in events if e["event"] == "fired")
        assert fired[critical["id"]] == 1 and set(fired.values()) == {1}
        assert {e["rule"] for e in events} >= {"capacity", "rise"}  # a surge: capacity and rate of rise

        # SSE: the stream carried the alert.
        wait_until(lambda: critical["id"] in {a["id"] for a in sse.alerts()}, 15, "the alert on /api/stream")
        assert any(e == "estimate" for e, _ in sse.events)

        # Webhook: the first attempt got a 500 and was retried; every delivery is signed.
        wait_until(lambda: critical["id"] in {d["id"] for d in receiver.delivered()}, 30, "the webhook delivery")
        first_headers, first_body, first_status = receiver.requests[0]
        assert first_status == 500
        retried = [b for h, b, s in receiver.requests[1:] if h[EVENT_ID_HEADER] == first_headers[EVENT_ID_HEADER]]
        assert retried == [first_body], "the failed delivery is retried with the same body"
        for headers, body, _ in receiver.requests:
            assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
            assert headers["Content-Type"] == "application/json"

        # Prometheus: the exposition parses with prometheus-client's own parser.
        families = {f.name: f for f in text_string_to_metric_families(worker.metrics_text())}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        assert samples[("crowdpulse_alerts_active", (("area", "stadium"), ("level", "critical"), ("state", "firing")))] == 1
        assert samples[("crowdpulse_alerts_fired_total", (("level", "critical"), ("rule", "capacity")))] == 1
        lags = {labels: v for (name, labels), v in samples.items() if name == "crowdpulse_consumer_lag_messages"}
        assert lags and all(v >= 0 for v in lags.values())
        assert samples[("crowdpulse_webhook_failures_total", (("reason", "http_5xx"),))] >= 1
        assert samples[("crowdpulse_area_capacity_ratio", (("area", "stadium"), ("window_s", "300")))] > 0.9
        # Ten minutes of stream: the hour-long window is still filling.
        assert samples[("crowdpulse_warming_up", ())] == 1

        # Acknowledge: JSON only, unknown ids 404, twice is harmless.
        ack_url = f"{worker.base_url}/api/alerts/{critical['id']}/ack"
        assert post(ack_url, b"by=someone", "application/x-www-form-urlencoded")[0] == 415
        assert post(f"{worker.base_url}/api/alerts/stadium.capacity.critical.1/ack", b"{}")[0] == 404
        assert post(ack_url, json.dumps({"by": "x" * 65}).encode())[0] == 400
        status, acked = post(ack_url, json.dumps({"by": "test desk"}).encode())
        assert status == 200 and acked["state"] == "acknowledged" and acked["acknowledged_by"] == "test desk"
        status, again = post(ack_url, json.dumps({"by": "other desk"}).encode())
        assert status == 200 and again["acknowledged_by"] == "test desk"
        assert active(worker, "capacity", "critical")["state"] == "acknowledged"
        wait_until(
            lambda: [e["event"] for e in alert_events(endpoints, worker) if e["id"] == critical["id"]] == ["fired", "acknowledged"],
            30, "one acknowledged event on crowd.alerts",
        )
        wait_until(
            lambda: any(a["id"] == critical["id"] and a["state"] == "acknowledged" for a in sse.alerts()), 15, "the ack on SSE"
        )
        wait_until(
            lambda: any(d["event_id"] == f"{critical['id']}/acknowledged" for d in receiver.delivered()), 30, "the ack on the webhook"
        )
        assert worker.process.poll() is None
    finally:
        if sse is not None:
            sse.close()
        feed.close()
        stop(worker)
        receiver.close()


def alert_pass_reached(worker, as_of: int) -> bool:
    """The leader's alert pass has evaluated the stadium's point at `as_of` (its engine state
    says how far it got; the pass runs right after the estimator)."""
    raw = worker.redis.hget(worker.keys.alert_engine, "stadium")
    return raw is not None and json.loads(raw)["as_of"] == as_of


def test_a_restarted_worker_that_lost_its_alert_state_never_fires_twice(endpoints, tmp_path: Path) -> None:
    areas_path = small_stadium_city(tmp_path)
    first = start_worker(
        endpoints, tmp_path, "restart", CROWDPULSE_AREAS=str(areas_path), CROWDPULSE_ALERT_RULES=str(five_minute_rules(tmp_path)),
        **NAIVE_PEOPLE,
    )
    areas = load_test_city(areas_path)
    feed = CityFeed(endpoints, first, areas)
    try:
        for minute in range(6):  # quiet until the 5-minute window is done warming up (as above)
            feed.minute(minute)
        for minute in range(6, 9):
            feed.minute(minute, crowd=900)
        wait_until(lambda: alert_pass_reached(first, START_MS + 9 * MIN), 30, "the alert pass over minute 8")
        wait_until(lambda: not first.redis.llen(first.keys.alert_outbox), 30, "the outbox to be published")
        before = {e["id"] for e in alert_events(endpoints, first) if e["event"] == "fired"}
        assert any(i.startswith("stadium.capacity.critical.") for i in before)
    finally:
        stop(first)
    # Lose the engine state too: the next leader must rebuild it from the series and still
    # recognise every episode it already raised.
    assert first.redis.delete(first.keys.alert_engine) == 1

    second = start_worker_with(endpoints, tmp_path, settings_env(first))
    feed.worker = second
    try:
        for minute in range(9, 12):  # the crowd stays: the same episodes go on
            feed.minute(minute, crowd=900)
        wait_until(lambda: alert_pass_reached(second, START_MS + 12 * MIN), 30, "the alert pass over minute 11")
        wait_until(lambda: not second.redis.llen(second.keys.alert_outbox), 30, "the outbox to be published")
        events = alert_events(endpoints, second)
        fired = Counter(e["id"] for e in events if e["event"] == "fired")
        assert set(fired.values()) == {1}, f"an alert fired twice: {fired}"
        assert set(fired) == before, "an ongoing episode got a new id after the restart"
        per_check = Counter((e["area"], e["rule"], e["level"]) for e in events if e["event"] == "fired")
        assert set(per_check.values()) == {1}
        # What is still active after the restart is what was raised before it.
        assert {r["id"] for r in second.get("/api/alerts")["active"]} <= before
    finally:
        feed.close()
        stop(second)
