"""A worker with tokens: every path asks for its scope; errors are JSON, never a traceback."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..conftest import start_worker

pytestmark = pytest.mark.integration
TOKENS = "reader-token:estimates,alerts-token:alerts+ack,scrape-token:metrics,ops-token:estimates+alerts"


def call(base: str, path: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_scopes_are_enforced_and_errors_are_json(endpoints, tmp_path: Path) -> None:
    worker = start_worker(endpoints, tmp_path, "auth", CROWDPULSE_API_TOKENS=TOKENS, CROWDPULSE_HTTP_HOST="127.0.0.1")
    try:
        base = worker.base_url
        assert call(base, "/api/areas")[0] == 401
        assert call(base, "/api/areas", "wrong-token")[0] == 401
        assert call(base, "/api/areas", "alerts-token")[0] == 403
        status, body = call(base, "/api/areas", "reader-token")
        assert status == 200 and isinstance(json.loads(body), list)
        assert call(base, "/metrics", "reader-token")[0] == 403
        status, body = call(base, "/metrics", "scrape-token")
        assert status == 200 and b"crowdpulse_events_total" in body
        assert call(base, "/api/stream?access_token=alerts-token")[0] == 403
        for path, token, expected in [
            ("/api/areas/no-such-area", "reader-token", 404),
            ("/api/areas/%2e%2e%2fsecrets", "reader-token", 404),
            ("/api/nothing-here", "reader-token", 404),
        ]:
            status, body = call(base, path, token)
            doc = json.loads(body)
            assert status == expected and doc["status"] == expected and doc["error"], (path, body)
            assert b"Traceback" not in body
    finally:
        worker.process.stop(timeout=15)
        worker.redis.close()


def stream_events(base: str, token: str, seconds: float = 3.0) -> list[str]:
    """The `event:` names received on /api/stream within a few seconds."""
    names: list[str] = []
    request = urllib.request.Request(f"{base}/api/stream?access_token={token}")
    deadline = time.monotonic() + seconds
    with urllib.request.urlopen(request, timeout=seconds) as response:
        try:
            while time.monotonic() < deadline:
                line = response.readline().decode()
                if not line:
                    break
                if line.startswith("event:"):
                    names.append(line.split(":", 1)[1].strip())
                    if names.count("alert") and names.count("estimate"):
                        break
        except TimeoutError:
            pass  # nothing more within the time: the stream stays open, we stop listening
    return names


def test_the_live_stream_carries_alerts_only_for_the_alerts_scope(endpoints, tmp_path: Path) -> None:
    worker = start_worker(endpoints, tmp_path, "sse", CROWDPULSE_API_TOKENS=TOKENS)
    try:
        keys = worker.keys
        alert = {"id": "stadium.capacity.warn.1", "area": "stadium", "level": "warn", "state": "firing", "fired_at": 1}
        worker.redis.hset(keys.alert_records, alert["id"], json.dumps(alert))
        estimate = {"area": "city", "window_s": 300, "as_of": 60_000, "devices": 500, "people": 500,
                    "people_low": 490, "people_high": 510, "suppressed": False, "capacity": 400000, "level": "ok"}
        worker.redis.hset(keys.latest_estimates, "city|300", json.dumps(estimate))
        assert "alert" in stream_events(worker.base_url, "ops-token")
        seen = stream_events(worker.base_url, "reader-token")
        assert "estimate" in seen and "alert" not in seen
    finally:
        worker.process.stop(timeout=15)
        worker.redis.close()
