"""`crowdpulse calibrate --truth`: a deployment's own counts, matched to the window curves of
a recording of its events (streams/tools/calibrate_truth.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from producers.publisher import FileSink, Framer
from streams.cli import main
from streams.core.areas import load_areas
from streams.core.errors import ConfigError
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.core.wire import RECORD_DTYPE
from streams.estimate.estimator import PeopleModel
from streams.estimate.visibility import N60, RECENT_MIN, VisibilityModel
from streams.tools.calibrate_truth import (
    Count,
    alarms,
    check,
    choose_correction,
    curves_from_events,
    fit_and_check,
    load_counts,
    read_events,
    read_raw_events,
    truth_rows,
)

AREAS = load_areas(DEFAULT_AREAS)
T0 = 1_767_600_000_000  # a whole minute
MIN = 60_000


def _write_counts(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "counts.csv"
    path.write_text(text)
    return path


def test_counts_are_read_with_iso_or_epoch_times(tmp_path: Path) -> None:
    path = _write_counts(tmp_path, "area,time,people\nstadium,2026-01-05T08:00:00Z,1200\nstation,1767600000000,300\n")
    counts = load_counts(path, AREAS)
    assert counts == [Count("stadium", 1_767_600_000_000, 1200, 2), Count("station", 1_767_600_000_000, 300, 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("where,when,how many\n", "the header must name the columns area,time,people"),
        ("area,time,people\nmoon,2026-01-05T08:00:00Z,12\n", "counts.csv:2: unknown area 'moon'"),
        ("area,time,people\nstadium,yesterday,12\n", "counts.csv:2: time 'yesterday' is neither ISO 8601"),
        ("area,time,people\nstadium,2026-01-05T08:00:00Z,-3\n", "counts.csv:2: people must be a positive whole number"),
        ("area,time,people\n", "no counts"),
    ],
)
def test_a_bad_counts_file_says_which_line_and_why(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_counts(_write_counts(tmp_path, text), AREAS)


def _recording(tmp_path: Path, minutes: int = 90, phones: int = 3000, cells: tuple[int, ...] | None = None,
               ) -> tuple[Path, np.ndarray]:
    """Phones in the stadium's first cell (or shared out over `cells` in turn), each signalling
    every 30 minutes at its own phase; a tenth of them M2M (left out of every count)."""
    cells = cells or (AREAS.area_by_id["stadium"].cells[0],)
    rng = np.random.default_rng(3)
    phase = rng.integers(0, 30 * MIN, phones)
    rows = []
    for start in range(0, minutes * MIN, 30 * MIN):
        ts = T0 + start + phase
        keep = ts < T0 + minutes * MIN
        events = np.zeros(int(keep.sum()), dtype=RECORD_DTYPE)
        events["device"] = (np.arange(phones)[keep] + 10_000_000).astype("<u8").view("V8")
        events["ts"], events["cell"], events["type"] = ts[keep], np.array(cells)[np.arange(phones)[keep] % len(cells)], 4
        events["device_class"] = (np.arange(phones)[keep] % 10 == 0).astype(np.uint8)
        rows.append(events)
    events = np.concatenate(rows)
    path = tmp_path / "rec.frames"
    sink = FileSink(path)
    sink.send(Framer(1, 4, AREAS.cell_ids).frames(events))
    sink.close()
    return path, events


def test_the_recording_is_counted_like_redis_counts_it(tmp_path: Path) -> None:
    path, events = _recording(tmp_path)
    recorded = read_events(path)
    assert len(recorded) == int((events["device_class"] == 0).sum())  # M2M left out
    first, curves = curves_from_events(recorded, AREAS)
    assert first == T0 // MIN and len(curves) == 90
    stadium = AREAS.area_ids.index("stadium")
    phones = 3000 - 300
    # By minute 60 every phone has signalled twice: N(60) holds them all, N(15) about half.
    assert abs(curves[75, stadium, N60] / phones - 1) < 0.02
    assert abs(curves[75, stadium, RECENT_MIN.index(15)] / phones - 0.5) < 0.03


def _stadium_30_percent_over(tmp_path: Path, minutes: range) -> tuple[
        int, np.ndarray, Settings, VisibilityModel, Callable[[VisibilityModel, int], int], list[Count]]:
    """The recording's curves (first minute, curves), the settings, the shipped table, the
    stadium's estimate by a table at a minute, and a count of the stadium at each of `minutes`
    saying 30% more people than the shipped table estimates on average over them. The crowd is
    steady, and so are the counts; the table's readings of this one-cell network, far off its
    map, move by up to a third between minutes, and counts that followed them would be noise to
    fit, not a bias."""
    path, _ = _recording(tmp_path)
    first, curves = curves_from_events(read_events(path), AREAS)
    settings = Settings()
    model = VisibilityModel.load(settings.visibility_model_path)
    people = PeopleModel.for_areas(model, AREAS, settings.market_share, settings.sims_per_person)

    def estimate(m: VisibilityModel, minute: int) -> int:
        return replace(people, visibility=m).estimate({a: curves[minute, i] for i, a in enumerate(AREAS.area_ids)})["stadium"].people

    steady = round(1.3 * float(np.mean([estimate(model, minute) for minute in minutes])))
    counts = [Count("stadium", T0 + (minute + 1) * MIN, steady, i) for i, minute in enumerate(minutes)]
    return first, curves, settings, model, estimate, counts


def test_counts_correct_the_model_where_it_is_biased(tmp_path: Path) -> None:
    # The counts say 30% more people than the shipped model estimates (on average), every 5 minutes.
    first, curves, settings, model, estimate, counts = _stadium_30_percent_over(tmp_path, range(60, 90, 5))
    stadium = AREAS.area_ids.index("stadium")
    used, minute_curves = truth_rows(counts, first, curves, AREAS)
    assert len(used) == len(counts) and np.all(minute_curves[:, stadium, N60] == curves[60:90:5, stadium, N60])
    fitted, summary = fit_and_check(model, used, minute_curves, AREAS, settings)
    correction = summary["area_corrections"]["stadium"]
    # The added rows take part of the bias; the correction is what they leave (each count against
    # the table with the other five added), shrunk towards none by three pseudo-counts: at most
    # 6 / (6 + 3) of log(1.3), all of which a correction of the shipped table's residuals was.
    assert correction["kind"] == "shift" and correction["counts"] == 6 and 0 < correction["dz"] < 6 / 9 * math.log(1.3)
    assert len(fitted.z) == len(model.z) + 6
    assert summary["later_half"]["after"]["mape"] < summary["later_half"]["before"]["mape"]
    # Rows and correction together move the stadium's estimate up towards the counts, and not far
    # past them (counting the bias twice did: +24% over on the later counts).
    assert 1.15 * estimate(model, 89) < estimate(fitted, 89) < 1.15 * counts[0].people


def test_a_count_of_a_divided_area_is_scored_on_the_estimate_the_worker_publishes(tmp_path: Path) -> None:
    # Phones in the stadium and in both districts: the city's division into its districts moves
    # each district's own estimate.
    path, _ = _recording(tmp_path, cells=(AREAS.area_by_id["stadium"].cells[0], AREAS.area_by_id["west-district"].cells[0],
                                          AREAS.area_by_id["east-district"].cells[0]))
    first, curves = curves_from_events(read_events(path), AREAS)
    settings = Settings()
    model = VisibilityModel.load(settings.visibility_model_path)
    people = PeopleModel.for_areas(model, AREAS, settings.market_share, settings.sims_per_person)
    minutes = range(60, 90, 5)
    counts = [Count("west-district", T0 + (minute + 1) * MIN, 1000, i) for i, minute in enumerate(minutes)]
    used, minute_curves = truth_rows(counts, first, curves, AREAS)
    _, summary = fit_and_check(model, used, minute_curves, AREAS, settings)

    def mape(estimates: list[int]) -> float:
        return float(np.mean([abs(e - 1000) / 1000 for e in estimates]))

    published = [people.estimate(dict(zip(AREAS.area_ids, curves[m])), only={"west-district"})["west-district"].people
                 for m in minutes]
    own = [people._estimate(dict(zip(AREAS.area_ids, curves[m])), list(AREAS.area_ids))["west-district"].people for m in minutes]
    # The division does move the district (so the check below can fail): by up to several percent a minute.
    assert np.max(np.abs(np.array(published) / np.array(own) - 1)) > 0.03 and mape(published) != mape(own)
    assert summary["before"]["mape"] == pytest.approx(mape(published), abs=1e-12)


def test_raw_events_are_counted_as_their_frames_are(tmp_path: Path) -> None:
    # The recording above as an operator holds it: subscriber identifiers in clear, JSON lines,
    # the M2M devices flagged; and two lines no edge would take.
    path, events = _recording(tmp_path)
    raw = tmp_path / "events.jsonl"
    with open(raw, "w") as f:
        for e in events:
            subscriber = f"26201{int(e['device'].view('<u8')):010d}"
            f.write(json.dumps({"subscriber": subscriber, "cell": int(e["cell"]), "ts": int(e["ts"]), "type": "tau",
                                "m2m": bool(e["device_class"])}) + "\n")
        f.write('{"subscriber": "x", "cell": 1, "ts": 5, "type": "tau"}\nnot json\n')
    recorded, refused = read_raw_events(raw, AREAS)
    assert refused == {"ts must be ISO 8601 or epoch milliseconds, between 2000 and 2100": 1, "not a JSON object": 1}
    assert len(recorded) == int((events["device_class"] == 0).sum())  # M2M left out
    # No identifier is kept: each phone is a pseudonym, none of them the identifier's bytes.
    assert recorded["device"].dtype == np.dtype("V8") and len(np.unique(recorded["device"])) == 2700
    assert not np.isin(recorded["device"], events["device"]).any()
    assert np.array_equal(curves_from_events(recorded, AREAS)[1] > 0, curves_from_events(read_events(path), AREAS)[1] > 0)
    exact = curves_from_events(read_events(path), AREAS)[1].astype(float)
    # Other pseudonyms hash to other HyperLogLog registers: the counts agree within its error.
    assert np.allclose(curves_from_events(recorded, AREAS)[1], exact, rtol=0.03, atol=2)


def test_levels_are_scored_against_the_counts_like_the_matrix_scores_them() -> None:
    capacity = AREAS.area_by_id["stadium"].capacity
    counts = [Count("stadium", T0, int(share * capacity), i) for i, share in enumerate([0.5, 0.97, 0.97, 0.6, 0.78])]
    # Critical at half full (false), ok while full (missed), critical while full (right),
    # uncertain, and critical at 78% (false: under the warn line).
    called = ["critical", "ok", "critical", "uncertain", "critical"]
    assert alarms(counts, called, AREAS) == {
        "points": 5, "truly_critical": 2, "false_critical": 2, "missed_critical": 1, "uncertain": 1}


def test_check_scores_every_count_without_fitting(tmp_path: Path) -> None:
    path, _ = _recording(tmp_path)
    first, curves = curves_from_events(read_events(path), AREAS)
    model = VisibilityModel.load(Settings().visibility_model_path)
    counts = [Count("stadium", T0 + (minute + 1) * MIN, 2000, i) for i, minute in enumerate(range(60, 90, 5))]
    used, minute_curves = truth_rows(counts, first, curves, AREAS)
    checked = check(model, used, minute_curves, AREAS, Settings())
    fitted = fit_and_check(model, used, minute_curves, AREAS, Settings())[1]["before"]
    assert checked == fitted and checked["points"] == 6 and set(checked["by_area"]) == {"stadium"}
    assert checked["alarms"]["points"] == 6
    # Beside it, each fixed window's count scaled by share and SIMs, on the same counts.
    settings, stadium = Settings(), AREAS.area_ids.index("stadium")
    naive = curves[range(60, 90, 5), stadium, N60] / (settings.market_share * settings.sims_per_person)
    assert checked["naive_mape"]["60min"] == pytest.approx(float(np.mean(np.abs(naive - 2000) / 2000)))
    assert checked["by_area"]["stadium"]["naive_mape"] == checked["naive_mape"]


def test_the_command_checks_raw_events_against_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, events = _recording(tmp_path)
    raw = tmp_path / "events.csv"
    lines = ["subscriber,cell,ts,type,m2m"] + [
        f"{int(e['device'].view('<u8'))},{int(e['cell'])},{int(e['ts'])},tau,{str(bool(e['device_class'])).lower()}"
        for e in events]
    raw.write_text("\n".join(lines) + "\n")
    counts = _write_counts(tmp_path, "area,time,people\n" + "".join(
        f"stadium,{T0 + minute * MIN},{people}\n" for minute, people in ((70, 150), (75, 9000), (80, 9000))))
    assert main(["calibrate", "--truth", str(counts), "--events", str(raw), "--check", "--min-people", "200", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts_used"] == 2 and summary["events"] == int((events["device_class"] == 0).sum())
    assert summary["before"]["points"] == 2 and summary["refused_lines"] == {}
    assert "area_corrections" not in summary  # nothing fitted
    assert main(["calibrate", "--truth", str(counts), "--events", str(raw), "--frames", str(path)]) == 2
    assert main(["calibrate", "--truth", str(counts), "--events", str(raw), "--check", "--out", str(tmp_path / "t.npz")]) == 2
    assert main(["calibrate", "--check"]) == 2
    assert "--truth goes with one of --frames or --events" in capsys.readouterr().err
    assert main(["calibrate", "--truth", str(counts), "--events", str(raw), "--check", "--blend"]) == 2
    assert "chooses no correction" in capsys.readouterr().err
    assert main(["calibrate", "--blend"]) == 2
    assert "--blend go with --truth" in capsys.readouterr().err


def _quarter_hours(n: int) -> np.ndarray:
    return T0 + np.arange(n) * 15 * MIN


def test_counts_that_follow_the_recent_count_choose_the_blend() -> None:
    # The model's error wanders (a network unlike any calibrated one), while the people counted
    # are always twice what the 5-minute count says: log(people) - the model's = log 2 + the
    # recent count's distance from the model's.
    rng = np.random.default_rng(7)
    towards_recent = rng.normal(0.0, 0.4, 24)
    residual = np.log(2.0) + towards_recent + rng.normal(0.0, 0.03, 24)
    c = choose_correction(residual, towards_recent, _quarter_hours(24), blend=True)
    assert c["kind"] == "blend" and c["window_min"] == 5 and c["counts"] == 24
    assert abs(c["weight"] - 1.0) < 0.05 and abs(c["dz"] - np.log(2.0)) < 0.05
    assert c["cv_mape_blend"] < 0.05 < c["cv_mape_shift"] and c["cv_mape_blend"] < c["cv_mape_none"]
    assert 0 < c["half"] < 0.1  # its error on the counts it was not fitted on
    # Unless asked to choose (calibrate --truth --blend), the counts give the shift, shrunk.
    without = choose_correction(residual, towards_recent, _quarter_hours(24))
    assert without == {"kind": "shift", "dz": pytest.approx(residual.sum() / (24 + 3)), "counts": 24,
                       "se": pytest.approx(np.std(residual, ddof=1) / np.sqrt(24))}


def test_counts_with_a_steady_bias_choose_the_shift() -> None:
    rng = np.random.default_rng(8)
    towards_recent = rng.normal(0.0, 0.4, 24)  # the recent count says nothing the model does not
    residual = 0.3 + rng.normal(0.0, 0.03, 24)
    c = choose_correction(residual, towards_recent, _quarter_hours(24), blend=True)
    assert c["kind"] == "shift" and "weight" not in c
    assert c["dz"] == pytest.approx(np.mean(residual))  # the choice is the check: not shrunk
    assert c["se"] == pytest.approx(np.std(residual, ddof=1) / np.sqrt(24))


def test_a_bias_that_changes_over_the_period_is_not_corrected() -> None:
    # +20% in the first half of the period, -20% in the second: a correction fitted on either
    # half makes the other worse.
    rng = np.random.default_rng(9)
    residual = np.where(np.arange(16) < 8, 0.2, -0.2) + rng.normal(0.0, 0.02, 16)
    c = choose_correction(residual, rng.normal(0.0, 0.4, 16), _quarter_hours(16), blend=True)
    assert c["kind"] == "none" and c["dz"] == 0.0 and c["se"] == 0.0
    assert c["cv_mape_none"] < min(c["cv_mape_shift"], c["cv_mape_blend"])


def test_too_few_counts_to_choose_take_the_shift() -> None:
    residual = np.array([0.1, 0.3, 0.2, 0.2, 0.3, 0.1, 0.2])  # seven: fewer than four in each half
    c = choose_correction(residual, np.zeros(7), _quarter_hours(7), blend=True)
    assert c == {"kind": "shift", "dz": pytest.approx(1.4 / 10), "counts": 7,
                 "se": pytest.approx(np.std(residual, ddof=1) / np.sqrt(7))}


def test_with_blend_the_counts_choice_is_written_into_the_table(tmp_path: Path) -> None:
    # A count of the stadium every minute of the recording's second half hour, 30% over the model.
    first, curves, settings, model, _, counts = _stadium_30_percent_over(tmp_path, range(60, 90))
    used, minute_curves = truth_rows(counts, first, curves, AREAS)
    fitted, summary = fit_and_check(model, used, minute_curves, AREAS, settings, blend=True)
    chosen = summary["area_corrections"]["stadium"]
    # Thirty counts: enough to choose, each choice scored on the other half of the half hour.
    assert chosen["counts"] == 30 and {"cv_mape_none", "cv_mape_shift", "cv_mape_blend"} <= chosen.keys()
    # The simplest choice within a point of the best (a KeyError if the choice is none of them).
    assert chosen[f"cv_mape_{chosen['kind']}"] <= min(chosen[k] for k in ("cv_mape_none", "cv_mape_shift", "cv_mape_blend")) + 0.01
    fitted.save(tmp_path / "fitted.npz")
    assert VisibilityModel.load(tmp_path / "fitted.npz").meta["area_corrections"] == summary["area_corrections"]
