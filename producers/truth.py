"""Ground truth of a simulation, per area and minute (bucket):

- people truly present, the operator's devices truly present, and devices of all operators
  present (at the end of the minute: the instant a window `as_of` that minute refers to);
- the exact number of distinct devices (phones: M2M is not counted, as in the pipeline) that
  generated an event in each sliding window ending
  with that minute, with the pipeline's window definition (event time [as_of - W, as_of),
  buckets of `bucket_s`): what a perfect HyperLogLog would report.

`GroundTruth` computes distinct windows in O(events): per (area, device) the last bucket the
device was seen in, and per area a ring of "devices whose last sighting is bucket b"; a window
of n buckets is the sum of the ring's last n slots. `WindowTruth` is the slow, obvious
reference (a set of devices per area and bucket) that the tests check it against.
Pure: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.core.areas import AreaMap


@dataclass
class TruthTable:
    """The truth of a run: one row per minute (bucket) and area."""

    area_ids: list[str]
    windows_s: tuple[int, ...]
    as_of: np.ndarray  # (T,) epoch ms, end of each bucket
    people: np.ndarray  # (T, A)
    devices_present: np.ndarray  # (T, A) the operator's devices (phones and M2M)
    devices_present_all: np.ndarray  # (T, A) devices of all operators (people's SIMs + M2M)
    distinct: np.ndarray  # (T, A, W) exact distinct devices with an event in each window

    def rows(self) -> list[dict]:
        """JSON-ready rows, one per (minute, area)."""
        out = []
        for t, as_of in enumerate(self.as_of.tolist()):
            for a, area in enumerate(self.area_ids):
                out.append({
                    "as_of": as_of,
                    "area": area,
                    "people": int(self.people[t, a]),
                    "devices_present": int(self.devices_present[t, a]),
                    "devices_present_all": int(self.devices_present_all[t, a]),
                    "distinct_devices": {str(w): int(self.distinct[t, a, i]) for i, w in enumerate(self.windows_s)},
                })
        return out


class GroundTruth:
    """Accumulates the truth bucket by bucket while a simulation runs."""

    def __init__(self, areas: AreaMap, n_devices: int, bucket_s: int, windows_s: tuple[int, ...], start_ms: int,
                 counted: np.ndarray | None = None) -> None:
        self.areas = areas
        #: Which devices the windows count (by device index): the pipeline counts phones only.
        self.counted = counted
        self.bucket_ms = bucket_s * 1000
        self.windows_s = tuple(windows_s)
        self.window_buckets = [w // bucket_s for w in self.windows_s]
        if any(w % bucket_s for w in self.windows_s):
            raise ValueError("every window must be a whole number of buckets")
        self.ring = max(self.window_buckets) + 1
        n_areas = len(areas.area_ids)
        self.last_seen = np.full((n_areas, n_devices), np.iinfo(np.int64).min // 2, dtype=np.int64)
        self.hist = np.zeros((n_areas, self.ring), dtype=np.int64)
        self.bucket = start_ms // self.bucket_ms  # the open bucket: events arrive for it
        self._as_of: list[int] = []
        self._presence: list[np.ndarray] = []
        self._distinct: list[np.ndarray] = []

    def add(self, device: np.ndarray, ts: np.ndarray, cell_index: np.ndarray) -> None:
        """Events (device index, event time, cell index) of the open bucket."""
        if self.counted is not None:
            keep = self.counted[device]
            device, ts, cell_index = device[keep], ts[keep], cell_index[keep]
        if not len(device):
            return
        bucket = ts // self.bucket_ms
        if bucket.min() < self.bucket or bucket.max() > self.bucket:
            raise ValueError("events must belong to the open bucket (steps must divide buckets)")
        pos, area = self.areas.expand_to_areas(cell_index)
        n = self.last_seen.shape[1]
        pair = np.unique(area * n + device[pos])
        a, d = pair // n, pair % n
        old = self.last_seen[a, d]
        new = old != self.bucket
        a, d, old = a[new], d[new], old[new]
        in_ring = old > self.bucket - self.ring
        flat = self.hist.reshape(-1)
        size = flat.size
        flat -= np.bincount(a[in_ring] * self.ring + old[in_ring] % self.ring, minlength=size)
        flat += np.bincount(a * self.ring + self.bucket % self.ring, minlength=size)
        self.last_seen[a, d] = self.bucket

    def close(self, presence_by_area: np.ndarray) -> None:
        """The open bucket is complete: record its windows and the presence at its end."""
        b = self.bucket
        counts = np.empty((self.hist.shape[0], len(self.windows_s)), dtype=np.int64)
        for i, n in enumerate(self.window_buckets):
            slots = np.arange(b - n + 1, b + 1) % self.ring
            counts[:, i] = self.hist[:, slots].sum(axis=1)
        self._as_of.append((b + 1) * self.bucket_ms)
        self._presence.append(np.asarray(presence_by_area, dtype=np.int64).copy())
        self._distinct.append(counts)
        self.bucket = b + 1
        # The slot the new bucket takes over held bucket b + 1 - ring, which no window reaches.
        self.hist[:, self.bucket % self.ring] = 0

    def table(self) -> TruthTable:
        n_areas = len(self.areas.area_ids)
        presence = np.array(self._presence).reshape(-1, n_areas, 3)
        return TruthTable(
            area_ids=list(self.areas.area_ids),
            windows_s=self.windows_s,
            as_of=np.array(self._as_of, dtype=np.int64),
            people=presence[:, :, 0],
            devices_present=presence[:, :, 1],
            devices_present_all=presence[:, :, 2],
            distinct=np.array(self._distinct).reshape(-1, n_areas, len(self.windows_s)),
        )

    def pop_rows(self) -> list[dict]:
        """Rows of the buckets closed since the last call (for streaming a truth file)."""
        table = self.table()
        rows = table.rows()
        self._as_of, self._presence, self._distinct = [], [], []
        return rows


class WindowTruth:
    """Exact distinct devices per (area, window) for every bucket end, by brute force: keeps
    each (area, bucket)'s device set (pseudonyms as uint64) as a sorted array. The reference
    GroundTruth is checked against."""

    def __init__(self, areas: AreaMap, bucket_s: int, windows_s: tuple[int, ...]) -> None:
        self.areas = areas
        self.bucket_ms = bucket_s * 1000
        self.bucket_s = bucket_s
        self.windows_s = windows_s
        self.sets: dict[tuple[int, int], np.ndarray] = {}

    def add(self, events: np.ndarray) -> None:
        events = events[events["device_class"] == 0]  # phones only, as the pipeline counts
        if not len(events):
            return
        cell_index, _ = self.areas.cell_index(events["cell"])
        pos, area = self.areas.expand_to_areas(cell_index)
        bucket = events["ts"][pos] // self.bucket_ms
        device = events["device"].view("<u8")[pos]
        for a in np.unique(area):
            mine = area == a
            for bk in np.unique(bucket[mine]):
                sel = device[mine & (bucket == bk)]
                key = (int(a), int(bk))
                old = self.sets.get(key)
                self.sets[key] = np.unique(sel if old is None else np.concatenate([old, sel]))

    def distinct(self, area: str, newest_bucket: int, window_s: int) -> np.ndarray:
        """The exact device set (uint64) of one area's window ending with `newest_bucket`."""
        a = self.areas.area_ids.index(area)
        n = window_s // self.bucket_s
        parts = [self.sets.get((a, b)) for b in range(newest_bucket - n + 1, newest_bucket + 1)]
        present = [p for p in parts if p is not None]
        return np.unique(np.concatenate(present)) if present else np.zeros(0, dtype=np.uint64)

    def rows(self, newest_bucket: int) -> list[dict]:
        """Truth rows for one window end (as_of = end of the newest bucket)."""
        as_of = (newest_bucket + 1) * self.bucket_ms
        return [
            {"as_of": as_of, "area": area, "window_s": w, "devices": int(len(self.distinct(area, newest_bucket, w)))}
            for area in self.areas.area_ids
            for w in self.windows_s
        ]
