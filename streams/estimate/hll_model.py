"""HyperLogLog as Redis counts, in numpy: the same registers and the same estimate as PFADD and
PFCOUNT (Redis >= 5: 16,384 six-bit registers, MurmurHash64A, Ertl's improved estimator).

`crowdpulse calibrate` reads its simulated curves through this, so the visibility table learns
what the estimator will read from Redis, HyperLogLog's error included (and its correlation
between nested windows, which share registers), not exact counts it never sees. Members are the
8-byte little-endian values the ingest writes (streams/hll_store.pack_hll_adds).

Pure: numpy only. tests/integration/pipeline/test_hll_store.py checks it against a real Redis.
"""

from __future__ import annotations

import numpy as np

P = 14
REGISTERS = 1 << P
Q = 64 - P
_SEED = np.uint64(0xADC83B19)
_M = np.uint64(0xC6A4A7935BD1E995)
_R = np.uint64(47)
_ALPHA_INF = 0.721347520444481703680


def murmur64a(members: np.ndarray) -> np.ndarray:
    """Redis' MurmurHash64A (seed 0xadc83b19) of each member's 8 little-endian bytes."""
    k = np.asarray(members, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _SEED ^ (np.uint64(8) * _M)
        k = k * _M
        k ^= k >> _R
        k = k * _M
        h = (h ^ k) * _M
        h ^= h >> _R
        h = h * _M
        h ^= h >> _R
    return h


def register_and_rank(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each member's register (low 14 bits of the hash) and rank: 1 + the number of trailing
    zeros of the remaining 50 bits (51 if they are all zero), as Redis' hllPatLen."""
    h = murmur64a(members)
    index = (h & np.uint64(REGISTERS - 1)).astype(np.int64)
    rest = (h >> np.uint64(P)) | (np.uint64(1) << np.uint64(Q))
    lowest = rest & (~rest + np.uint64(1))  # the lowest set bit alone
    rank = np.log2(lowest.astype(np.float64)).astype(np.int64) + 1
    return index, rank.astype(np.uint8)


def add(registers: np.ndarray, index: np.ndarray, rank: np.ndarray) -> None:
    """PFADD: registers (16,384,) uint8 keep the largest rank seen per register."""
    np.maximum.at(registers, index, rank)


def _sigma(x: float) -> float:
    if x == 1.0:
        return float("inf")
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = np.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


def count(registers: np.ndarray) -> np.ndarray:
    """PFCOUNT of each row of registers (..., 16,384): Redis' hllCount (Ertl's estimator)."""
    registers = np.asarray(registers)
    flat = registers.reshape(-1, REGISTERS)
    rows = len(flat)
    # One histogram of register values per row, all rows at once.
    histogram = np.bincount(
        (np.arange(rows, dtype=np.int64)[:, None] * (Q + 2) + flat).reshape(-1), minlength=rows * (Q + 2)
    ).reshape(rows, Q + 2).astype(np.float64)
    m = float(REGISTERS)
    z = m * np.array([_tau((m - h) / m) for h in histogram[:, Q + 1]])
    for j in range(Q, 0, -1):
        z = (z + histogram[:, j]) * 0.5
    z = z + m * np.array([_sigma(h / m) for h in histogram[:, 0]])
    with np.errstate(divide="ignore"):
        estimate = np.rint(_ALPHA_INF * m * m / z)
    return estimate.astype(np.int64).reshape(registers.shape[:-1])
