"""Traffic and helpers for the alert and dashboard tests.

`CityFeed` publishes one minute of events at a time to a running worker: in every cell a set of
people who stay and a few who pass through (the churn matters: the privacy rules suppress a
window whose count differs from a containing one by fewer than k, so without passers-by every
area would look like its neighbour and be suppressed), plus, when asked, a crowd in the stadium.
The example city is used with the stadium's capacity cut to 1,000, so a crowd of 900 puts it over
its critical level (95%) without publishing tens of thousands of events.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from producers.publisher import Framer, KafkaSink
from streams.core.areas import AreaMap, load_areas
from streams.core.clock import parse_time
from streams.core.settings import DEFAULT_AREAS
from streams.core.wire import EVENT_TYPES, RECORD_DTYPE
from streams.runtime.services import Endpoints

from .conftest import RunningWorker, consume_all, launch_worker

START_MS = parse_time("2026-01-05T18:00:00Z")  # a replay of the past: stream time, not wall time
MIN = 60_000
STADIUM_CELLS = (1038, 1039)
STADIUM_CAPACITY = 1_000


def small_stadium_city(directory: Path) -> Path:
    """The example city with the stadium's capacity cut to STADIUM_CAPACITY."""
    doc = json.loads(DEFAULT_AREAS.read_text())
    for area in doc["areas"]:
        if area["id"] == "stadium":
            area["capacity"] = STADIUM_CAPACITY
    path = directory / "city-small-stadium.json"
    path.write_text(json.dumps(doc))
    return path


def five_minute_rules(directory: Path) -> Path:
    """Alert rules on the 5-minute window: the tests' streams are minutes long, and for the
    first 15 minutes the privacy rules withhold the 15-minute window (it equals the 60-minute
    one), so the default (15-minute) window would have nothing to alert on yet."""
    path = directory / "rules-5min.json"
    path.write_text(json.dumps({"defaults": {"window_s": 300}}))
    return path


def pseudonyms(label: str, n: int) -> np.ndarray:
    """n stable 8-byte keyed-looking pseudonyms (no digits in clear: the worker refuses those)."""
    return np.array([hashlib.blake2b(f"{label}:{i}".encode(), digest_size=8).digest() for i in range(n)], dtype="V8")


def minute_events(
    areas: AreaMap, minute: int, crowd: int = 0, stayers: int = 20, passers: int = 16, start_ms: int = START_MS
) -> np.ndarray:
    """One minute of events, in time order: per cell `stayers` (the same people every minute)
    and `passers` (new ones each minute); `crowd` more people spread over the stadium's cells.

    With 16 passers per cell, an area's 5-minute count differs from its 60-minute count by at
    least k (15) from minute 5 on, so the privacy rules publish the 5-minute windows from then."""
    parts = []
    for cell in areas.cell_ids.tolist():
        parts.append((pseudonyms(f"stay:{cell}", stayers), cell))
        parts.append((pseudonyms(f"pass:{cell}:{minute}", passers), cell))
    if crowd:
        people = pseudonyms("crowd", crowd)
        for i, cell in enumerate(STADIUM_CELLS):
            parts.append((people[i :: len(STADIUM_CELLS)], cell))
    n = sum(len(devices) for devices, _ in parts)
    records = np.zeros(n, dtype=RECORD_DTYPE)
    at = 0
    for devices, cell in parts:
        records["device"][at : at + len(devices)] = devices
        records["cell"][at : at + len(devices)] = cell
        at += len(devices)
    records["type"] = EVENT_TYPES["tau"]
    records["ts"] = start_ms + minute * MIN + (np.arange(n) * 59_000) // n
    return records


class CityFeed:
    """Publishes minutes of events and waits until the worker has taken them in."""

    def __init__(self, endpoints: Endpoints, worker: RunningWorker, areas: AreaMap) -> None:
        self.areas = areas
        self.worker = worker
        self.framer = Framer(producer_id=0xFEED, partitions=worker.settings.partitions, cell_ids=areas.cell_ids)
        self.sink = KafkaSink(endpoints.kafka, worker.topics.events)
        self.sent = 0

    def minute(self, minute: int, crowd: int = 0, timeout: float = 30) -> None:
        events = minute_events(self.areas, minute, crowd)
        self.sink.send(self.framer.frames(events))
        self.sink.producer.flush()
        self.sent += len(events)
        deadline = time.monotonic() + timeout
        while self.worker.stats()["events_in"] < self.sent:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker took in fewer than {self.sent} events in {timeout:.0f}s:\n{self.worker.log_tail()}")
            time.sleep(0.1)

    def close(self) -> None:
        self.sink.close()


def start_worker_with(endpoints: Endpoints, log_dir: Path, settings_env: dict[str, str]) -> RunningWorker:
    """A worker with exactly these CROWDPULSE_* settings (tests/integration/conftest.py picks
    fresh ones for every worker; a restart must keep the namespace, topics and group)."""
    return launch_worker(endpoints, log_dir, settings_env)


#: The alert tests feed a synthetic crowd whose people are exactly its distinct devices, and
#: test the alert mechanics on the naive model (people = devices): the visibility model is
#: calibrated to the simulator's signalling, not to this feed (docs/estimation.md).
NAIVE_PEOPLE = {"CROWDPULSE_PEOPLE_MODEL": "devices"}


def settings_env(worker: RunningWorker, **extra: str) -> dict[str, str]:
    s = worker.settings
    env = {
        "CROWDPULSE_PEOPLE_MODEL": s.people_model,
        "CROWDPULSE_APP_ID": s.app_id,
        "CROWDPULSE_TOPIC_PREFIX": s.topic_prefix,
        "CROWDPULSE_NAMESPACE": s.namespace,
        "CROWDPULSE_AREAS": str(s.areas_path),
    }
    if s.alert_rules_path is not None:
        env["CROWDPULSE_ALERT_RULES"] = str(s.alert_rules_path)
    env.update(extra)
    return env


def alert_events(endpoints: Endpoints, worker: RunningWorker) -> list[dict]:
    """Every message on the worker's crowd.alerts, checked to be keyed by its area."""
    out = []
    for m in consume_all(endpoints.kafka, worker.topics.alerts, worker.settings.partitions):
        body = json.loads(m.value)
        assert m.key.decode() == body["area"]
        out.append(body)
    return out


class SseReader:
    """Reads /api/stream in a thread and keeps every (event, data) it sees."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        self.conn.request("GET", parsed.path, headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.status
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")
        self.events: list[tuple[str, dict]] = []
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event = None
        try:
            while True:
                raw = self.response.fp.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event:
                    self.events.append((event, json.loads(line[len("data: "):])))
                    event = None
        except (OSError, ValueError, AttributeError):  # closed under us: the test is done
            return

    def alerts(self) -> list[dict]:
        return [d for e, d in list(self.events) if e == "alert"]

    def close(self) -> None:
        self.conn.close()


def stop(worker: RunningWorker) -> None:
    worker.process.stop(timeout=15)
    worker.redis.close()


def load_test_city(path: Path) -> AreaMap:
    return load_areas(path)
