"""The pseudonym-key rotation schedule in event time: which epoch an event belongs to, and when
producers must also send shadow events. Shared by the producers' edge and the worker. Pure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.core.errors import ConfigError


@dataclass(frozen=True)
class Rotation:
    """The pseudonym-key rotation schedule, in event time (docs/privacy.md).

    Epoch e runs from e * period + offset (epoch ms). During the `overlap` before each boundary
    producers send every event twice: with the current epoch's pseudonym, and in a shadow frame
    with the next epoch's. A window is counted in the epoch of its newest bucket, reading the
    shadow HyperLogLogs for its buckets from before the boundary, so a window spanning a
    rotation sees every device under one key: no double count. period 0 means no rotation.
    """

    period_s: int = 86_400
    offset_s: int = 4 * 3600  # 04:00 UTC, the quietest hour in most cities
    overlap_s: int = 3600  # at least the longest window

    def __post_init__(self) -> None:
        if self.period_s and not self.overlap_s < self.period_s:
            raise ConfigError("rotation overlap must be shorter than the rotation period")

    @property
    def enabled(self) -> bool:
        return self.period_s > 0

    def epoch(self, ts_ms: np.ndarray | int) -> np.ndarray | int:
        if not self.enabled:
            return ts_ms * 0
        return (ts_ms - self.offset_s * 1000) // (self.period_s * 1000)

    def boundary_ms(self, epoch: int) -> int:
        """Start of `epoch` (epoch ms)."""
        return epoch * self.period_s * 1000 + self.offset_s * 1000

    def in_overlap(self, ts_ms: np.ndarray) -> np.ndarray:
        """Events that must also be sent as shadows: within `overlap` before the next boundary."""
        if not self.enabled:
            return np.zeros(np.shape(ts_ms), dtype=bool)
        next_start = (np.asarray(self.epoch(ts_ms)) + 1) * self.period_s * 1000 + self.offset_s * 1000
        return np.asarray(ts_ms) >= next_start - self.overlap_s * 1000

    def check(self, bucket_s: int, longest_window_s: int) -> None:
        if not self.enabled:
            return
        if self.period_s % bucket_s or self.offset_s % bucket_s:
            raise ConfigError("rotation period and offset must be whole buckets")
        if self.overlap_s < longest_window_s:
            raise ConfigError("rotation overlap must cover the longest window")


NO_ROTATION = Rotation(period_s=0, offset_s=0, overlap_s=0)
