"""The demo's terminal table reads in one unit per column: phones counted, people estimated,
the people range, the estimate's share of capacity, and the level the estimate decides."""

from __future__ import annotations

from streams.tools.demo import table_lines

AS_OF = 1_767_636_000_000  # 2026-01-05 18:00 UTC


def estimate(**fields: object) -> dict:
    base = {"area": "stadium", "window_s": 900, "as_of": AS_OF, "devices": 4_000, "people": 9_260, "people_low": 8_100,
            "people_high": 10_900, "capacity": 40_000, "level": "ok", "suppressed": False, "suppressed_reason": None,
            "warming_up": False}
    return {**base, **fields}


def test_people_and_their_range_sit_beside_the_phones_and_the_share_is_the_estimates() -> None:
    lines = table_lines([estimate()])
    assert lines[0] == "stream time: windows ending 2026-01-05 18:00 UTC"
    assert lines[1].split() == ["area", "window", "phones", "people", "people,", "90%", "range", "of", "cap.", "level"]
    assert lines[2].split() == ["stadium", "15m", "4,000", "9,260", "8,100-10,900", "23%", "ok"]


def test_withheld_rows_say_why_and_warming_up_is_marked() -> None:
    lines = table_lines([
        estimate(area="centre", suppressed=True, suppressed_reason="differencing", devices=None, people=None, level=None),
        estimate(area="arena", suppressed=True, suppressed_reason="below_min_count", devices=None, people=None, level=None),
        estimate(area="city", warming_up=True, level="uncertain", level_reason="the 90% range spans under 80% to over 95%"),
    ])
    assert "withheld: diff." in lines[2] and "withheld: < k" in lines[3]
    assert lines[2].split()[-1] == "-"  # no level for a number not shown
    assert lines[4].split()[-1] == "uncertain*"
    assert lines[-2].startswith("* warming up")
    assert lines[-1] == "uncertain city: the 90% range spans under 80% to over 95%"  # the level's reason, once per area
