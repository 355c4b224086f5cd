"""The before/after report (streams/tools/report.py): report.html self-contained with its charts
embedded, a headline that states the change and its interval, daily.csv one row per day, and the
withheld days shown rather than silently dropped."""

from __future__ import annotations

import base64
import csv
import math
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from streams.core.errors import ConfigError
from streams.tools.report import DailyRow, Report, build_report, write_report

START = date(2026, 11, 2)  # a Monday
BEFORE = (START, START + timedelta(days=27))
AFTER = (START + timedelta(days=28), START + timedelta(days=55))
WEEK = (0.9, 0.85, 0.9, 1.0, 1.15, 1.6, 1.2)
WITHHELD = {3: "below the privacy threshold", 10: "below the privacy threshold", 40: "below the privacy threshold"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def daily_rows(base: float, uplift: float, seed: int, withheld: dict[int, str] | None = None) -> list[DailyRow]:
    """Eight weeks of rows: a weekly pattern, 3% day-to-day noise, `uplift` from the after period."""
    rng = np.random.default_rng(seed)
    rows: list[DailyRow] = []
    for i in range(56):
        day = START + timedelta(days=i)
        if withheld and i in withheld:
            rows.append({"day": day.isoformat(), "visitors": None, "visitors_low": None, "visitors_high": None,
                         "people_mean": None, "people_peak": None, "dwell_min": None, "withheld": withheld[i]})
            continue
        visitors = base * WEEK[day.weekday()] * (1 + uplift if day >= AFTER[0] else 1.0) * math.exp(rng.normal(0, 0.03))
        rows.append({"day": day.isoformat(), "visitors": visitors, "visitors_low": 0.93 * visitors,
                     "visitors_high": 1.07 * visitors, "people_mean": visitors / 9, "people_peak": visitors / 4,
                     "dwell_min": 41.5, "withheld": None})
    return rows


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, list[Path]]:
    report = build_report("high-street", daily_rows(2000, 0.10, seed=1, withheld=WITHHELD), BEFORE, AFTER,
                          control="east-district", control_rows=daily_rows(5000, 0.0, seed=2))
    return report, write_report(report, tmp_path_factory.mktemp("report"))


def test_the_files_are_the_page_the_table_and_three_charts(written: tuple[Report, list[Path]]) -> None:
    _, paths = written
    assert [p.name for p in paths] == ["report.html", "daily.csv", "daily.png", "weekdays.png", "before_after.png"]
    for chart in paths[2:]:
        assert chart.read_bytes().startswith(PNG_SIGNATURE)


def test_the_page_embeds_its_charts_and_loads_nothing_from_outside(written: tuple[Report, list[Path]]) -> None:
    _, paths = written
    page = paths[0].read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 3
    assert base64.b64decode(embedded[0]) == paths[2].read_bytes()  # the same chart as daily.png
    assert "http://" not in page and "https://" not in page
    assert len(re.findall(r'src="', page)) == 3 and "<link" not in page and "<script" not in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_the_headline_states_the_change_and_its_interval(written: tuple[Report, list[Path]]) -> None:
    report, paths = written
    v = report.visitors
    assert report.headline == (f"Daily visitors to high-street rose by {100 * v.change:.1f}% (90% interval {100 * v.low:+.1f}% "
                               f"to {100 * v.high:+.1f}%) after 2026-11-30, against east-district")
    assert v.low < 0.10 < v.high and abs(v.change - 0.10) < 0.02
    page = paths[0].read_text()
    assert f'<p class="headline">{report.headline}.</p>' in page
    assert report.occupancy is not None and "Mean occupancy at high-street rose by" in page
    assert "distinct phone seen in the area during a day" in page and "counts twice" in page


def test_daily_csv_has_one_row_per_day_with_both_areas(written: tuple[Report, list[Path]]) -> None:
    _, paths = written
    with open(paths[1], newline="") as f:
        rows = list(csv.reader(f))
    fields = ["visitors", "visitors_low", "visitors_high", "people_mean", "people_peak", "dwell_min"]
    assert rows[0] == ["day", "weekday", "period", "area", *fields, "withheld", "control_area",
                       *(f"control_{field}" for field in fields), "control_withheld"]
    body = rows[1:]
    assert len(body) == 56
    assert [r[0] for r in body] == [(START + timedelta(days=i)).isoformat() for i in range(56)]
    assert body[0][:4] == ["2026-11-02", "Mon", "before", "high-street"] and body[28][2] == "after"
    assert body[0][9] == "41.5" and body[0][11] == "east-district"
    assert float(body[0][5]) == pytest.approx(0.93 * float(body[0][4]), abs=0.01)


def test_withheld_days_are_shown(written: tuple[Report, list[Path]]) -> None:
    report, paths = written
    with open(paths[1], newline="") as f:
        body = list(csv.reader(f))[1:]
    assert [(r[0], r[4], r[10]) for r in body if r[10]] == [
        ("2026-11-05", "", "below the privacy threshold"), ("2026-11-12", "", "below the privacy threshold"),
        ("2026-12-12", "", "below the privacy threshold")]
    listed = "3 days of high-street withheld (below the privacy threshold): 2026-11-05, 2026-11-12, 2026-12-12"
    assert listed in report.notes and listed in paths[0].read_text()
    assert (report.visitors.days_before, report.visitors.days_after) == (26, 27)


def test_without_a_control_the_report_says_so_and_a_fall_reads_as_one(tmp_path: Path) -> None:
    report = build_report("high-street", daily_rows(2000, -0.15, seed=3), BEFORE, AFTER)
    assert re.fullmatch(r"Daily visitors to high-street fell by 1\d\.\d% \(90% interval -\d+\.\d% to -\d+\.\d%\) after 2026-11-30",
                        report.headline), report.headline
    assert any("without a control area" in note for note in report.notes)
    write_report(report, tmp_path)
    with open(tmp_path / "daily.csv", newline="") as f:
        header = next(csv.reader(f))
    assert not any(name.startswith("control_") for name in header)


def test_rows_without_occupancy_leave_it_out_and_say_why() -> None:
    rows = daily_rows(2000, 0.10, seed=4)
    for row in rows:
        row["people_mean"] = None
    report = build_report("high-street", rows, BEFORE, AFTER)
    assert report.occupancy is None
    assert "mean occupancy is not compared: the rows carry no people_mean" in report.notes


def test_bad_rows_are_errors() -> None:
    rows = daily_rows(2000, 0.10, seed=5)
    with pytest.raises(ConfigError, match="two daily rows of high-street for 2026-11-02"):
        build_report("high-street", rows + rows[:1], BEFORE, AFTER)
    with pytest.raises(ConfigError, match="without a valid day"):
        build_report("high-street", [*rows, {"day": "02/11/2026"}], BEFORE, AFTER)
    with pytest.raises(ConfigError, match="a control area needs both its name and its daily rows"):
        build_report("high-street", rows, BEFORE, AFTER, control="east-district")
