"""A worker with tokens: every path asks for its scope; errors are JSON, never a traceback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import start_worker

pytestmark = pytest.mark.integration
TOKENS = "reader-token:estimates,alerts-token:alerts+ack,scrape-token:metrics"


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
