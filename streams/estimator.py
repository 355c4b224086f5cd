"""From window distinct counts to published estimates: the range, privacy suppression and the
capacity level. Pure: the Faust timer in streams/app.py does the I/O.

In this first model people = devices (one visible device per person); the estimation issue
replaces it with a visibility- and market-share-corrected model. The range is HyperLogLog's
alone: Redis uses 2^14 registers, a standard error of 1.04 / sqrt(16384) = 0.81%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .areas import Area, AreaMap
from .privacy import DiscreteLaplace, Item, containment_pairs, noisy_release, suppressed_items

HLL_STANDARD_ERROR = 1.04 / math.sqrt(16384)
DAY_MS = 86_400_000
# Two-sided 90% range of a normal error: +-1.645 standard errors.
Z_90 = 1.6449
WARN_SHARE = 0.80
CRITICAL_SHARE = 0.95


@dataclass(frozen=True)
class EstimateRange:
    people: int
    low: int
    high: int


def hll_range(devices: int, z: float = Z_90) -> EstimateRange:
    """The 90% range of a HyperLogLog count (relative error ~ N(0, 0.81%))."""
    spread = z * HLL_STANDARD_ERROR * devices
    return EstimateRange(devices, max(0, math.floor(devices - spread)), math.ceil(devices + spread))


def level(people_high: int, capacity: int) -> str:
    """Capacity level from the range's upper bound: for safety, the conservative side decides."""
    share = people_high / capacity
    if share >= CRITICAL_SHARE:
        return "critical"
    if share >= WARN_SHARE:
        return "warn"
    return "ok"


def points_to_refresh(
    area_ids: list[str],
    dirty: set[tuple[str, int]],
    published_through: int | None,
    newest: int,
    window_buckets: int,
    max_catchup: int,
) -> tuple[list[tuple[str, int]], int]:
    """Which (area, newest bucket) window points to (re)compute, and how many were skipped.

    - Every bucket that stream time entered since the last pass gets a point for every area,
      so an accelerated replay yields the same per-minute series as a live run (at most
      `max_catchup` buckets back; older ones are skipped and counted).
    - A bucket that received events (dirty) changes every window that contains it: the points
      from that bucket up to `window_buckets - 1` later, as far as stream time has reached.
      That is how late events within grace republish the windows they belong to.
    """
    oldest_allowed = newest - max_catchup + 1
    first_new = newest if published_through is None else published_through + 1
    skipped = max(0, oldest_allowed - first_new)
    points = {(a, b) for b in range(max(first_new, oldest_allowed), newest + 1) for a in area_ids}
    for area, bucket in dirty:
        last = min(newest, bucket + window_buckets - 1)
        points.update((area, b) for b in range(max(bucket, oldest_allowed), last + 1))
    return sorted(points, key=lambda p: (p[1], p[0])), skipped


def build_estimate(
    area: Area, window_s: int, as_of_ms: int, devices: int, min_count: int, suppressed: bool = False
) -> dict:
    """The published JSON estimate (CONTRACT.md shape). Below min_count, or when the privacy
    rule withholds it (streams/privacy.py), every count is null."""
    if suppressed or devices < min_count:
        return {
            "area": area.id,
            "window_s": window_s,
            "as_of": as_of_ms,
            "devices": None,
            "people": None,
            "people_low": None,
            "people_high": None,
            "suppressed": True,
            "capacity": area.capacity,
            "level": "ok",
        }
    estimate = hll_range(devices)
    return {
        "area": area.id,
        "window_s": window_s,
        "as_of": as_of_ms,
        "devices": devices,
        "people": estimate.people,
        "people_low": estimate.low,
        "people_high": estimate.high,
        "suppressed": False,
        "capacity": area.capacity,
        "level": level(estimate.high, area.capacity),
    }


class WindowBook:
    """The raw counts and published estimates of recent window ends.

    A pass recomputes only the points that changed, yet the privacy rule must see every area of
    a window end at once (a neighbour's change can withhold or release an unchanged area). The
    book keeps each recent window end's counts, applies the rule over all of them, and returns
    only the estimates whose published form changed. It forgets window ends older than
    `keep_buckets`; a point that comes back later makes it count every area of that end again.
    """

    def __init__(self, areas: AreaMap, windows_s: tuple[int, ...], min_count: int, bucket_ms: int, keep_buckets: int) -> None:
        self.areas = areas
        self.windows_s = windows_s
        self.min_count = min_count
        self.bucket_ms = bucket_ms
        self.keep_buckets = keep_buckets
        self.pairs = containment_pairs({a.id: a.cells for a in areas.areas}, windows_s)
        self.counts: dict[int, dict[Item, int]] = {}
        self.published: dict[int, dict[Item, dict]] = {}

    def needed(self, points: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The points to count: the given ones, plus every area of a window end not in the book."""
        out: list[tuple[str, int]] = []
        by_bucket: dict[int, list[str]] = {}
        for area, bucket in points:
            by_bucket.setdefault(bucket, []).append(area)
        for bucket in sorted(by_bucket):
            areas = self.areas.area_ids if bucket not in self.counts else by_bucket[bucket]
            out.extend((area, bucket) for area in areas)
        return out

    def update(self, counts: dict[tuple[str, int, int], int], newest: int) -> list[dict]:
        """Merge new counts; return the estimates to publish (new or changed), oldest first."""
        touched: set[int] = set()
        for (area, bucket, window), devices in counts.items():
            self.counts.setdefault(bucket, {})[(area, window)] = devices
            touched.add(bucket)
        changed: list[dict] = []
        for bucket in sorted(touched):
            book = self.counts[bucket]
            withheld = suppressed_items(book, self.pairs, self.min_count)
            before = self.published.setdefault(bucket, {})
            as_of = (bucket + 1) * self.bucket_ms
            for (area, window), devices in sorted(book.items()):
                estimate = build_estimate(
                    self.areas.area_by_id[area], window, as_of, devices, self.min_count, (area, window) in withheld
                )
                if before.get((area, window)) != estimate:
                    before[(area, window)] = estimate
                    changed.append(estimate)
        for bucket in [b for b in self.counts if b <= newest - self.keep_buckets]:
            del self.counts[bucket]
            self.published.pop(bucket, None)
        return changed


def private_releases(
    estimates: list[dict],
    mechanism: DiscreteLaplace,
    spent: dict[tuple[str, int], float],
    daily_budget: float,
) -> tuple[list[dict], dict[tuple[str, int], float]]:
    """Differential privacy at publication, with a per-area daily epsilon budget.

    Each release of a (changed) point costs `mechanism.epsilon` from its area's budget for the
    stream-time day of its window end; `spent` is what was already spent. A release that would
    overspend is withheld instead (suppressed, reason privacy_budget). Returns the releases and
    the new charges to record.
    """
    charges: dict[tuple[str, int], float] = {}
    out: list[dict] = []
    for estimate in estimates:
        if estimate["suppressed"]:
            out.append(estimate)
            continue
        key = (estimate["area"], estimate["as_of"] // DAY_MS)
        total = spent.get(key, 0.0) + charges.get(key, 0.0)
        if total + mechanism.epsilon > daily_budget + 1e-9:
            withheld = {**estimate, "devices": None, "people": None, "people_low": None, "people_high": None}
            withheld.update(suppressed=True, level="ok", suppressed_reason="privacy_budget")
            out.append(withheld)
            continue
        charges[key] = charges.get(key, 0.0) + mechanism.epsilon
        noisy = noisy_release(estimate, mechanism)
        noisy["level"] = level(noisy["people_high"], estimate["capacity"])
        out.append(noisy)
    return out, charges
