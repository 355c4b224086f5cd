"""Keyed pseudonyms at the producer edge, with key rotation. Nothing here ever leaves the edge
except the 8-byte pseudonyms themselves (docs/privacy.md).

pseudonym = HMAC-SHA256(epoch key, raw identifier) truncated to 8 bytes. The epoch key is
derived from the edge's master secret and the epoch number, so every producer instance of one
operator agrees on it without exchanging keys. (An operator that must be able to forget old
keys, so that even the edge cannot link days afterwards, keeps random per-epoch keys in a vault
and implements `key` by looking them up: the rest of the protocol is unchanged.)
"""

from __future__ import annotations

import hashlib
import hmac
import threading

import numpy as np

from streams.core.errors import ConfigError
from streams.core.rotation import Rotation


class KeySchedule:
    def __init__(self, master_secret: bytes, rotation: Rotation) -> None:
        if len(master_secret) < 16:
            raise ConfigError("the pseudonymisation secret must be at least 16 bytes")
        self._master = master_secret
        self.rotation = rotation
        self._cache: dict[int, bytes] = {}

    def key(self, epoch: int) -> bytes:
        if epoch not in self._cache:
            self._cache[epoch] = hmac.new(self._master, f"crowdpulse/pseudonym-key/{epoch}".encode(), hashlib.sha256).digest()
        return self._cache[epoch]


def pseudonymise(identities: np.ndarray, key: bytes) -> np.ndarray:
    """HMAC-SHA256(key, identity)[:8] per identity, as numpy 'V8' (one HMAC per device, not per event)."""
    out = bytearray()
    for identity in identities.tolist():
        out += hmac.new(key, str(identity).encode(), hashlib.sha256).digest()[:8]
    return np.frombuffer(bytes(out), dtype="V8")


class Pseudonymiser:
    """Pseudonyms of a fixed population for any epoch, computed once per epoch and kept for two."""

    def __init__(self, identities: np.ndarray, schedule: KeySchedule) -> None:
        self.identities = identities
        self.schedule = schedule
        self._by_epoch: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # a sharded Simulation labels in several threads

    def for_epoch(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._by_epoch:
                self._by_epoch[epoch] = pseudonymise(self.identities, self.schedule.key(epoch))
                for old in [e for e in self._by_epoch if e < epoch - 1]:
                    del self._by_epoch[old]
            return self._by_epoch[epoch]

    def label(self, who: np.ndarray, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pseudonyms for events (device index `who`, time `ts_ms`) in their epoch, and the shadow
        copies due before a rotation: returns (pseudonyms, shadow positions, shadow pseudonyms)."""
        rotation = self.schedule.rotation
        epochs = np.asarray(rotation.epoch(ts_ms))
        if len(epochs) and epochs.min() == epochs.max():
            # The usual case (a step's events lie in one epoch): one gather, no masks.
            devices = self.for_epoch(int(epochs[0]))[who]
        else:
            devices = np.empty(len(who), dtype="V8")
            for epoch in np.unique(epochs).tolist():
                mine = epochs == epoch
                devices[mine] = self.for_epoch(int(epoch))[who[mine]]
        shadow_pos = np.flatnonzero(rotation.in_overlap(ts_ms))
        shadow = np.empty(len(shadow_pos), dtype="V8")
        for epoch in np.unique(epochs[shadow_pos]).tolist():
            mine = epochs[shadow_pos] == epoch
            shadow[mine] = self.for_epoch(int(epoch) + 1)[who[shadow_pos][mine]]
        return devices, shadow_pos, shadow
