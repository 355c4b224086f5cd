"""Pseudonym-key rotation: the schedule, the pseudonyms, the keys a window reads, and the
simulator rotating by default on the workers' schedule, shadows included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from producers import pseudonyms
from producers.pseudonyms import KeySchedule, Pseudonymiser
from producers.pseudonyms import pseudonymise as real_pseudonymise
from producers.publisher import read_frames_file
from producers.scenarios import configure
from producers.simulator import Simulation
from streams.cli import main
from streams.core.areas import load_areas
from streams.core.keys import KeyLayout
from streams.core.rotation import Rotation
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.core.wire import decode

DAY = 86_400_000
ROT = Rotation(period_s=86_400, offset_s=4 * 3600, overlap_s=3600)
BOUNDARY = ROT.boundary_ms(20_458)  # some 04:00 UTC


def test_epochs_change_at_the_quiet_hour_and_the_overlap_precedes_it() -> None:
    ts = np.array([BOUNDARY - 3_600_001, BOUNDARY - 3_600_000, BOUNDARY - 1, BOUNDARY])
    assert ROT.epoch(ts).tolist() == [20_457, 20_457, 20_457, 20_458]
    assert ROT.in_overlap(ts).tolist() == [False, True, True, False]
    assert BOUNDARY % DAY == 4 * 3_600_000


def test_a_window_reads_everything_under_the_epoch_of_its_newest_bucket() -> None:
    keys = KeyLayout("cp", 60, ROT)
    newest = BOUNDARY // 60_000 + 2  # three minutes after the rotation
    window = keys.area_window("stadium", newest, 300)
    assert window == [
        keys.area_bucket("stadium", newest - 4, shadow=True),
        keys.area_bucket("stadium", newest - 3, shadow=True),
        keys.area_bucket("stadium", newest - 2),
        keys.area_bucket("stadium", newest - 1),
        keys.area_bucket("stadium", newest),
    ]
    before = keys.area_window("stadium", BOUNDARY // 60_000 - 1, 300)
    assert not any(k.endswith(":next") for k in before)
    assert all(k.startswith("cp:{a:stadium}:") for k in window)  # one Redis Cluster slot


def test_without_rotation_no_shadow_keys_are_read() -> None:
    keys = KeyLayout("cp", 60)
    assert not any(k.endswith(":next") for k in keys.area_window("a", BOUNDARY // 60_000 + 2, 3600))


def test_pseudonyms_change_per_epoch_and_shadows_cover_the_overlap() -> None:
    schedule = KeySchedule(b"0123456789abcdef-master", ROT)
    people = Pseudonymiser(np.arange(1000, 1010), schedule)
    who = np.array([0, 1, 0, 0])
    ts = np.array([BOUNDARY - 7_200_000, BOUNDARY - 60_000, BOUNDARY - 30_000, BOUNDARY + 1])
    devices, shadow_pos, shadow = people.label(who, ts)
    today, tomorrow = people.for_epoch(20_457).tolist(), people.for_epoch(20_458).tolist()
    assert devices.tolist() == [today[0], today[1], today[0], tomorrow[0]]
    assert shadow_pos.tolist() == [1, 2] and shadow.tolist() == [tomorrow[1], tomorrow[0]]
    assert today[0] != tomorrow[0]  # unlinkable across days without the key
    assert KeySchedule(b"another-master-secret", ROT).key(20_457) != schedule.key(20_457)


@pytest.mark.parametrize(
    "rotation, message",
    [
        (Rotation(86_400, 4 * 3600 + 30, 3600), "whole buckets"),
        (Rotation(86_400, 4 * 3600, 1800), "cover the longest window"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused(rotation: Rotation, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rotation.check(60, 3600)


# --- the simulator rotates by default, consistently with the worker's settings ---------------

def test_workers_and_simulator_rotate_daily_at_four_by_default() -> None:
    assert Settings.from_env({}).rotation == ROT == Rotation()
    assert not Settings.from_env({"CROWDPULSE_ROTATION_PERIOD_S": "0"}).rotation.enabled
    moved = Settings.from_env({"CROWDPULSE_ROTATION_OFFSET_S": str(15 * 3600)}).rotation
    assert moved.boundary_ms(20_458) % DAY == 15 * 3_600_000


def test_simulated_events_change_pseudonym_at_the_rotation_and_are_shadowed_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyed: list[int] = []  # one HMAC pass over the devices per epoch, not per step or event
    monkeypatch.setattr(pseudonyms, "pseudonymise", lambda ids, key: keyed.append(len(ids)) or real_pseudonymise(ids, key))
    start = BOUNDARY - 80 * 60_000  # 02:40 -> 04:20 UTC
    sim = Simulation(load_areas(DEFAULT_AREAS), 400, seed=3, start_ms=start, config=configure("steady"))
    assert sim.rotation == ROT
    today = set(sim.pseudonyms.for_epoch(20_457).view("<u8").tolist())
    tomorrow = set(sim.pseudonyms.for_epoch(20_458).view("<u8").tolist())
    assert len(today) == len(tomorrow) == sim.population.n_visible and not today & tomorrow
    events, shadows = [], []
    while sim.now_ms < BOUNDARY + 20 * 60_000:
        step_events, step_shadows = sim.step_with_shadows(BOUNDARY + 20 * 60_000)
        events.append(step_events)
        shadows.append(step_shadows)
    ev, sh = np.concatenate(events), np.concatenate(shadows)
    devices = ev["device"].view("<u8")
    before = ev["ts"] < BOUNDARY
    assert set(devices[before].tolist()) <= today and set(devices[~before].tolist()) <= tomorrow
    # Exactly the events of the overlap hour come again, field for field, under tomorrow's key.
    overlap = ev[(ev["ts"] >= BOUNDARY - 3_600_000) & before]
    assert len(sh) == len(overlap) > 100
    for name in ("ts", "cell", "type", "device_class", "segment"):
        assert sh[name].tolist() == overlap[name].tolist()
    assert set(sh["device"].view("<u8").tolist()) <= tomorrow
    assert keyed == [sim.population.n_visible] * 2  # today's and tomorrow's, over 600 steps


def test_simulate_out_writes_shadow_frames_in_the_overlap_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def shadow_counts(path: Path) -> tuple[int, int]:
        decoded = [decode(frame, 10**7) for _, frame in read_frames_file(path)]
        shadow = sum(int(d.shadow_mask().sum()) for d in decoded)
        return sum(len(d.records) for d in decoded) - shadow, shadow

    args = ["simulate", "--devices", "300", "--duration", "1200", "--start"]
    assert main([*args, "2026-01-05T03:50:00Z", "--out", str(tmp_path / "across.frames")]) == 0
    assert main([*args, "2026-01-05T06:00:00Z", "--out", str(tmp_path / "day.frames")]) == 0
    monkeypatch.setenv("CROWDPULSE_ROTATION_PERIOD_S", "0")
    assert main([*args, "2026-01-05T03:50:00Z", "--out", str(tmp_path / "stable.frames")]) == 0
    primary, shadow = shadow_counts(tmp_path / "across.frames")
    assert 0 < shadow < primary  # 03:50-04:00 shadowed, 04:00-04:10 not
    assert shadow_counts(tmp_path / "day.frames")[1] == 0
    assert shadow_counts(tmp_path / "stable.frames") == (primary, 0)
