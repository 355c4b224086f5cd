"""The history endpoint's query rules and CSV, and the usual level beside live estimates."""

from __future__ import annotations

import pytest

from streams.ops.history_api import HistoryQueryError, UsualLevels, parse_query, to_csv

NOW = 1_793_577_600_000  # 2026-11-02T00:00:00Z


def test_defaults_cover_the_last_two_days_by_hour() -> None:
    q = parse_query({}, "", NOW)
    assert (q.step, q.csv, q.end_ms, q.start_ms) == ("hour", False, NOW, NOW - 2 * 86_400_000)
    assert parse_query({"step": "day"}, "", NOW).start_ms == NOW - 7 * 86_400_000


def test_dates_and_csv_are_read_from_the_query_or_the_accept_header() -> None:
    q = parse_query({"from": "2026-10-01", "to": "2026-10-02T12:00:00Z", "step": "day"}, "text/csv", NOW)
    assert q.start_ms == 1_790_812_800_000 and q.end_ms == 1_790_812_800_000 + 36 * 3_600_000 and q.csv
    assert parse_query({"format": "csv"}, "application/json", NOW).csv
    assert not parse_query({"format": "json"}, "text/csv", NOW).csv


@pytest.mark.parametrize("query, message", [
    ({"step": "week"}, "use step=hour or step=day"),
    ({"from": "last tuesday"}, "is not an ISO date"),
    ({"from": "2026-11-03", "to": "2026-11-02"}, "'from' must be before 'to'"),
    ({"from": "2026-01-01", "to": "2026-11-01", "step": "hour"}, "at most 92 days"),
    ({"format": "xml"}, "use format=json or format=csv"),
])
def test_bad_queries_get_a_clear_message(query: dict, message: str) -> None:
    with pytest.raises(HistoryQueryError, match=message):
        parse_query(query, "", NOW)


def test_csv_has_a_header_and_empty_cells_for_nulls() -> None:
    text = to_csv([{"area": "a", "start": "s", "visitors": None, "extra": 1}], ["area", "start", "visitors"])
    assert text == "area,start,visitors\na,s,\n"


class FakeHistory:
    """Only what UsualLevels reads: the same hour of the week on earlier weeks."""

    def __init__(self) -> None:
        self.calls = 0

    async def same_hour_before(self, hour: int, weeks: int) -> dict[str, list[float]]:
        self.calls += 1
        return {"stadium": [100.0, 110.0, 120.0], "arena": [50.0]}


async def test_the_usual_level_is_added_to_the_history_window_only() -> None:
    history = FakeHistory()
    levels = UsualLevels(history, 900)  # type: ignore[arg-type]
    estimates = [{"area": a, "window_s": w, "as_of": NOW} for a in ("stadium", "arena") for w in (300, 900)]
    out = await levels.annotate(estimates)  # type: ignore[arg-type]
    by_key = {(e["area"], e["window_s"]): e for e in out}
    assert by_key[("stadium", 900)]["usual"] == {"people": 110.0, "low": 102.0, "high": 118.0, "weeks": 3}
    assert by_key[("arena", 900)]["usual"] is None  # one week is not "usual" yet
    assert "usual" not in by_key[("stadium", 300)]
    await levels.annotate(estimates)  # type: ignore[arg-type]
    assert history.calls == 1  # read once per hour, then from memory
