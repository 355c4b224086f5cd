"""Window curves as Redis counts them, minute by minute, from a stream of events: the tracker
behind `crowdpulse calibrate` (simulator runs) and `calibrate --truth` (a deployment's
recording). Pure: numpy and streams/core/hll.py."""

from __future__ import annotations

import numpy as np

from streams.core import hll
from streams.core.areas import AreaMap
from streams.estimate.visibility import CURVE_LENGTH, GROWTH_MIN, HOUR_MIN, P15, RECENT_MIN, SPLIT_MIN

BUCKET_MS = 60_000
#: Minutes of one-minute HyperLogLogs the tracker keeps per area (the hour, and late events).
RING_MIN = 64


class CurveTracker:
    """Stands in for the simulation's ground truth: receives every event (device index, time,
    cell index) and, at each closed minute, records every area's curve and people present.

    Each curve is recorded twice: exactly (per area and device, a 64-bit mask of the minutes it
    was seen in, bit 0 = the newest, shifted once a minute) and as Redis would count it
    (`hll_curves`: per area a ring of 64 one-minute HyperLogLogs, streams/core/hll.py, fed with
    each device's 8-byte member, the spans merged and counted like PFCOUNT over bucket keys).
    """

    def __init__(self, areas: AreaMap, phone: np.ndarray, start_ms: int, members: np.ndarray | None = None) -> None:
        self.areas = areas
        self.phone = phone
        self.n_areas = len(areas.area_ids)
        self.membership = np.zeros((len(areas.cell_ids), self.n_areas), dtype=bool)
        for a, area in enumerate(areas.areas):
            self.membership[np.searchsorted(areas.cell_ids, area.cells), a] = True
        self.masks = np.zeros((self.n_areas, len(phone)), dtype=np.uint64)
        if members is None:
            members = np.arange(len(phone), dtype=np.uint64)
        self.register, self.rank = hll.register_and_rank(members)
        self.registers = np.zeros((self.n_areas, RING_MIN, hll.REGISTERS), dtype=np.uint8)
        self.current = start_ms // BUCKET_MS
        self.curves: list[np.ndarray] = []
        self.hll_curves: list[np.ndarray] = []
        self.people: list[np.ndarray] = []

    def add(self, device: np.ndarray, ts: np.ndarray, cell_index: np.ndarray) -> None:
        keep = self.phone[device]
        device, ts, cell_index = device[keep], ts[keep], cell_index[keep]
        minute = ts // BUCKET_MS
        age = self.current - minute
        ok = (age >= 0) & (age < RING_MIN)
        device, minute, cell_index, age = device[ok], minute[ok], cell_index[ok], age[ok]
        bits = np.left_shift(np.uint64(1), age.astype(np.uint64))
        slot = minute % RING_MIN
        for a in range(self.n_areas):
            here = self.membership[cell_index, a]
            np.bitwise_or.at(self.masks[a], device[here], bits[here])
            np.maximum.at(self.registers[a], (slot[here], self.register[device[here]]), self.rank[device[here]])

    def close(self, presence_by_area: np.ndarray) -> None:
        """The minute `current` is over: record its curves and people; shift the masks."""
        curve = np.zeros((self.n_areas, CURVE_LENGTH), dtype=np.int64)
        for a in range(self.n_areas):
            live = self.masks[a][self.masks[a] != 0]
            for i, minutes in enumerate(RECENT_MIN):
                curve[a, i] = np.count_nonzero(live & _bits(0, minutes))
            for j, split in enumerate(SPLIT_MIN):
                curve[a, len(RECENT_MIN) + j] = np.count_nonzero(live & _bits(split, 60))
            curve[a, P15] = np.count_nonzero(live & _bits(GROWTH_MIN, 2 * GROWTH_MIN))
        self.curves.append(curve)
        self.hll_curves.append(self._hll_curve())
        self.people.append(np.asarray(presence_by_area)[:, 0].copy())
        self.masks <<= np.uint64(1)
        self.current += 1
        self.registers[:, self.current % RING_MIN] = 0  # the ring slot of the new minute

    def _hll_curve(self) -> np.ndarray:
        """The curve as PFCOUNTs. The hour's minutes fall into five pieces by age (0, 1-4,
        5-14, 15-29, 30-59 minutes ago); each piece's registers are merged once, and every span
        is a union of neighbouring pieces: N(m) from the newest, O(s) from the oldest, P(15) the
        piece of 15-29 minutes."""
        def piece(first_age: int, last_age: int) -> np.ndarray:
            return self.registers[:, (self.current - np.arange(first_age, last_age)) % RING_MIN].max(axis=1)

        p0, p1, p2, p3, p4 = (piece(a, b) for a, b in ((0, 1), (1, 5), (5, 15), (15, 30), (30, HOUR_MIN)))
        n5 = np.maximum(p0, p1)
        n15 = np.maximum(n5, p2)
        n30 = np.maximum(n15, p3)
        o15 = np.maximum(p3, p4)
        spans = [p0, n5, n15, n30, np.maximum(n30, p4), np.maximum(p2, o15), o15, p4, p3]  # CURVE_SPANS_S' order
        return hll.count(np.stack(spans, axis=1))


def _bits(first: int, last: int) -> np.uint64:
    """A mask of bits first..last-1 (minutes ago)."""
    return np.uint64(((1 << last) - 1) ^ ((1 << first) - 1))
