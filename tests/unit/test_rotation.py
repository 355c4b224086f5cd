"""Pseudonym-key rotation: the schedule, the pseudonyms, and the keys a window reads."""

from __future__ import annotations

import numpy as np
import pytest

from producers.pseudonyms import KeySchedule, Pseudonymiser
from streams.keys import KeyLayout, Rotation

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
