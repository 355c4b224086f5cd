"""`crowdpulse publish` end to end: an operator's raw events (subscriber ids in clear) go in at
the edge, the real broker carries only keyed pseudonyms, and the real worker counts every
subscriber once per window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from producers.pseudonyms import KeySchedule, pseudonymise
from streams.cli import main
from streams.core.areas import load_areas
from streams.core.settings import Settings

from ..conftest import RunningWorker, consume_all, wait_until

SUBSCRIBERS = 400
START_MS = 1_767_636_000_000  # 2026-01-05 18:00 UTC: a replay of the past


def test_raw_events_are_published_pseudonymised_and_counted(worker: RunningWorker, endpoints, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    areas = load_areas(worker.settings.areas_path)
    stadium = areas.area_by_id["stadium"]
    source = tmp_path / "events.jsonl"
    with source.open("w") as f:
        for minute in range(5):
            for i in range(SUBSCRIBERS):
                cell = stadium.cells[i % len(stadium.cells)]
                f.write(json.dumps({"subscriber": f"26201{i:010d}", "cell": cell, "ts": START_MS + minute * 60_000 + i,
                                    "type": "data" if i % 3 else "tau"}) + "\n")
        f.write("this line is not an event\n")
    monkeypatch.setenv("CROWDPULSE_KAFKA", endpoints.kafka)
    monkeypatch.setenv("CROWDPULSE_TOPIC_PREFIX", worker.settings.topic_prefix)
    monkeypatch.setenv("CROWDPULSE_PSEUDONYM_SECRET", "an operator's edge secret")

    assert main(["publish", str(source)]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["events"] == 5 * SUBSCRIBERS and summary["rejected_lines"] == 1 and summary["undelivered_events"] == 0
    assert "line 2001: not a JSON object" in err

    wait_until(lambda: worker.stats()["events_in"] >= 5 * SUBSCRIBERS, 60, "the worker to take the events in")
    stats = worker.stats()
    assert stats["counted"] == 5 * SUBSCRIBERS and stats["deadletter"] == 0
    # Each minute's stadium bucket holds exactly the 400 subscribers' pseudonyms: the same
    # HyperLogLog as adding them, computed here with the edge's key, to a key of our own.
    settings = Settings.from_env()
    schedule = KeySchedule(b"an operator's edge secret", settings.rotation)
    expected = pseudonymise(np.array([f"26201{i:010d}" for i in range(SUBSCRIBERS)], dtype=object),
                            schedule.key(int(settings.rotation.epoch(START_MS))))
    reference = f"{worker.settings.namespace}:test-reference"
    worker.redis.pfadd(reference, *[bytes(d) for d in expected])
    bucket = START_MS // 60_000
    for minute in range(5):
        key = worker.keys.area_bucket("stadium", bucket + minute)
        assert worker.redis.pfcount(key) == worker.redis.pfcount(reference)
        worker.redis.pfmerge(f"{reference}:merged", key, reference)
        assert worker.redis.pfcount(f"{reference}:merged") == worker.redis.pfcount(reference)  # no other member
    # The same first minute again as CSV: the same pseudonyms (the count does not move), once more in the books.
    rows = tmp_path / "minute0.csv"
    rows.write_text("subscriber,cell,ts,type\n" + "".join(
        f"26201{i:010d},{stadium.cells[i % len(stadium.cells)]},{START_MS + i},tau\n" for i in range(SUBSCRIBERS)))
    assert main(["publish", str(rows)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["events"] == SUBSCRIBERS
    wait_until(lambda: worker.stats()["events_in"] >= 6 * SUBSCRIBERS, 60, "the CSV events")
    assert worker.redis.pfcount(worker.keys.area_bucket("stadium", bucket)) == worker.redis.pfcount(reference)
    # Nothing that left the edge carries an identifier in clear.
    messages = consume_all(endpoints.kafka, worker.topics.events, worker.settings.partitions)
    assert messages and not any(b"26201" in m.value for m in messages)


def test_publish_refuses_to_run_without_a_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CROWDPULSE_PSEUDONYM_SECRET", raising=False)
    assert main(["publish", "-"]) == 2
    assert "secret of at least 16 bytes" in capsys.readouterr().err
