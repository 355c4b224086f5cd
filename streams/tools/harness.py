"""What the tools (and the integration tests) need to drive a real worker from outside: its
HTTP API read as JSON."""

from __future__ import annotations

import json
import urllib.request


def http_json(url: str, timeout: float = 2.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())
