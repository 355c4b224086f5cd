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

from streams.pipeline.redis_io import connect_sync

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("args", "redis_processes"), [((), 1), (("--redis-cluster", "3"), 3)], ids=["one-redis", "cluster"])
def test_services_command_prints_env_lines_and_stops_cleanly(args: tuple[str, ...], redis_processes: int,
                                                             open_tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CROWDPULSE_KAFKA", "CROWDPULSE_REDIS")}
    env["PYTHONPATH"] = str(REPO)
    # The command keeps its logs (it prints where); here they go with the test's own folder, one
    # PostgreSQL can reach (its scratch data folder is created inside it).
    env["TMPDIR"] = str(open_tmp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "services", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
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
        assert lines["CROWDPULSE_REDIS"].startswith("redis+cluster://" if args else "redis://")
        client = connect_sync(lines["CROWDPULSE_REDIS"])
        assert client.ping() is True
        assert client.set("{t}:written", "1") and client.get("{t}:written") == b"1"  # a slot is served
        client.close()
        with psycopg.connect(lines["CROWDPULSE_HISTORY_DB"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # The broker, Redis (or each cluster master) and PostgreSQL's postmaster (its own workers
        # are its children).
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2 + redis_processes
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} left behind"
