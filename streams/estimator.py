"""From window distinct counts to published estimates: the range, privacy suppression and the
capacity level. Pure: the Faust timer in streams/app.py does the I/O.

In this first model people = devices (one visible device per person); the estimation issue
replaces it with a visibility- and market-share-corrected model. The range is HyperLogLog's
alone: Redis uses 2^14 registers, a standard error of 1.04 / sqrt(16384) = 0.81%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .areas import Area

HLL_STANDARD_ERROR = 1.04 / math.sqrt(16384)
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


def build_estimate(area: Area, window_s: int, as_of_ms: int, devices: int, min_count: int) -> dict:
    """The published JSON estimate (CONTRACT.md shape). Below min_count every count is null."""
    if devices < min_count:
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
