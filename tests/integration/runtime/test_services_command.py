"""`crowdpulse services`: starts both services, prints usable env lines, stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def test_services_command_prints_env_lines_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CROWDPULSE_KAFKA", "CROWDPULSE_REDIS")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "services"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=env, text=True,
    )
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(lines) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                lines[name] = value.strip("'\"")
        assert set(lines) == {"CROWDPULSE_KAFKA", "CROWDPULSE_REDIS", "CROWDPULSE_HISTORY_DB"}
        client = redis.Redis.from_url(lines["CROWDPULSE_REDIS"])
        assert client.ping() is True
        client.close()
        with psycopg.connect(lines["CROWDPULSE_HISTORY_DB"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # The broker, Redis and PostgreSQL's postmaster (its own workers are its children).
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} left behind"
