"""The outside corpus (tests/outside: a feed and its truth from a generator written without the
simulator's code) through `crowdpulse calibrate --truth --events --check`, the way an operator
checks the model against its own counts.

It asserts the accounting (every phone event read, every count with an hour of feed behind it
scored) and what the levels promise on a network the model has never seen: no `critical` while
fewer than 80% of capacity are there. The accuracy figures, which are poor there, are in
docs/estimation.md ("An outside corpus"); this test does not pretend otherwise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from streams.cli import main
from tests.outside import generate

MIN = 60_000


def test_an_outside_feed_is_checked_against_its_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # The town concert: M2M meters to leave out, a division, a share and SIMs to scale by. (The
    # festival runs end to end in tests/integration/tools/test_outside_feed.py.)
    corpus = tmp_path / "town-concert"
    assert generate.main(["--scenario", "town-concert", "--out", str(corpus), "--small", "--check"]) == 0  # its self-checks pass
    summary = json.loads((corpus / "summary.json").read_text())
    for line in (corpus / "settings.env").read_text().split():
        name, value = line.split("=", 1)
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CROWDPULSE_AREAS", str(corpus / "areas.json"))
    # Every 20th minute of the truth, as an operator's periodic counts (the check costs a few
    # milliseconds a count).
    with open(corpus / "counts.csv") as f:
        rows = [r for r in csv.DictReader(f) if (int(r["time"]) - summary["start_ms"]) % (20 * MIN) == 0]
    counts = tmp_path / "counts.csv"
    counts.write_text("area,time,people\n" + "".join(f"{r['area']},{r['time']},{r['people']}\n" for r in rows))
    assert main(["calibrate", "--truth", str(counts), "--events", str(corpus / "events.jsonl"), "--check",
                 "--min-people", "200", "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert summary["events_m2m"] > 0  # meters in the feed, left out of every count
    assert checked["events"] == summary["events"] - summary["events_m2m"] and checked["refused_lines"] == {}
    # A count needs an hour of feed before its minute; every other count of 200 or more is scored.
    big = [r for r in rows if int(r["people"]) >= 200]
    early = [r for r in big if int(r["time"]) < summary["start_ms"] + 61 * MIN]
    assert checked["counts_used"] == len(big) - len(early) > 50 and checked["counts_skipped"] == len(early)
    assert checked["before"]["points"] == checked["before"]["alarms"]["points"] == checked["counts_used"]
    assert checked["before"]["alarms"]["false_critical"] == 0
