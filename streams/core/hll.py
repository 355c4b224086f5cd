"""HyperLogLog as Redis computes it, in numpy: where a member lands (register and rank, as
redis-server hashes it), the count of a set of registers (PFCOUNT), and the dense string Redis
stores (Redis >= 5: 16,384 six-bit registers, MurmurHash64A seed 0xadc83b19, Ertl's improved
estimator). Members are the devices' 8-byte pseudonyms viewed as little-endian uint64, as the
ingest holds them.

Two users:
- `crowdpulse calibrate` reads its simulated curves through this (streams/tools/curves.py), so the
  visibility table learns what the estimator will read from Redis, HyperLogLog's error included
  (and its correlation between nested windows, which share registers), not exact counts.
- The ingest's register path (streams/pipeline/hll_store.py): a key that gets thousands of members
  in one batch is sent as its registers, one dense string that Redis merges with PFMERGE,
  instead of member by member. PFADD costs Redis 60-110 ns of its one core per member, nearly
  all of it reading the member as an argument; the per-member work moves to the workers, which
  scale out, and the key ends with the same registers to the bit.

Redis (src/hyperloglog.c): a member's hash's low 14 bits choose the register; the rank is one
plus the number of trailing zero bits of the other 50 (51 if all are zero); a register keeps the
highest rank it has seen. The dense encoding packs the registers 6 bits each, least significant
bit first. tests/integration/pipeline/test_hll_store.py checks all of it against a real Redis.

Pure: numpy only.
"""

from __future__ import annotations

import numpy as np

P = 14
REGISTERS = 1 << P
Q = 64 - P
_M = np.uint64(0xC6A4A7935BD1E995)
_R = np.uint64(47)
# h = seed ^ (len * m) for an 8-byte member, modulo 2**64; the seed is 0xadc83b19.
_H0 = np.uint64(0xADC83B19 ^ ((8 * 0xC6A4A7935BD1E995) & 0xFFFF_FFFF_FFFF_FFFF))
#: The dense header: "HYLL", encoding 0 (dense), 3 unused bytes, an 8-byte cached cardinality
#: marked invalid (the top bit of its last byte), so Redis recounts it when asked.
DENSE_HEADER = b"HYLL" + bytes(4) + bytes(7) + b"\x80"
DENSE_BYTES = len(DENSE_HEADER) + REGISTERS * 6 // 8  # 12,304
_ALPHA_INF = 0.721347520444481703680


def murmur64a(members: np.ndarray) -> np.ndarray:
    """MurmurHash64A of each 8-byte member with Redis' seed (uint64 in, uint64 out).

    numpy's uint64 products wrap modulo 2**64, as C's do. In place on one copy, with one scratch
    array: about 4 ns a member here, against 20-30 with a temporary per step."""
    k = np.array(members, dtype=np.uint64)  # a copy: hashed in place
    scratch = np.empty_like(k)

    def mix() -> None:  # k ^= k >> r
        np.right_shift(k, _R, out=scratch)
        np.bitwise_xor(k, scratch, out=k)

    np.multiply(k, _M, out=k)
    mix()
    np.multiply(k, _M, out=k)
    np.bitwise_xor(k, _H0, out=k)  # h = (h0 ^ k) * m
    np.multiply(k, _M, out=k)
    mix()
    np.multiply(k, _M, out=k)
    mix()
    return k


def register_and_rank(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each member's register (uint16, 0-16,383) and rank (uint8, 1-51), as Redis computes them."""
    h = murmur64a(members)
    index = (h & np.uint64(REGISTERS - 1)).astype(np.uint16)
    rest = h
    np.right_shift(h, np.uint64(P), out=rest)
    np.bitwise_or(rest, np.uint64(1 << Q), out=rest)
    # x ^ (x - 1) sets the lowest set bit and every bit below it: their number is the rank.
    rank = np.bitwise_count(rest ^ (rest - np.uint64(1)))
    return index, rank


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


def registers_of(index: np.ndarray, rank: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """The registers of `n_groups` HyperLogLogs (one row each, uint8) from their members'
    positions: member i belongs to row groups[i]."""
    registers = np.zeros(n_groups * REGISTERS, dtype=np.uint8)
    np.maximum.at(registers, groups.astype(np.int64) * REGISTERS + index, rank)
    return registers.reshape(n_groups, REGISTERS)


def dense_strings(registers: np.ndarray) -> list[bytes]:
    """One Redis dense HyperLogLog string (12,304 bytes) per row of registers (values < 64)."""
    rows = np.asarray(registers, dtype=np.uint8).reshape(-1, REGISTERS // 4, 4)
    r0, r1, r2, r3 = rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3]
    packed = np.empty(rows.shape[:2] + (3,), dtype=np.uint8)
    packed[..., 0] = r0 | (r1 << 6)
    packed[..., 1] = (r1 >> 2) | (r2 << 4)
    packed[..., 2] = (r2 >> 4) | (r3 << 2)
    flat = packed.reshape(len(packed), -1)
    return [DENSE_HEADER + row.tobytes() for row in flat]


def registers_from_dense(value: bytes) -> np.ndarray:
    """The 16,384 registers of a dense HyperLogLog string (the inverse of dense_strings; tests)."""
    if len(value) != DENSE_BYTES or value[:4] != b"HYLL" or value[4] != 0:
        raise ValueError("not a dense HyperLogLog")
    packed = np.frombuffer(value, dtype=np.uint8, offset=len(DENSE_HEADER)).reshape(-1, 3).astype(np.uint16)
    b0, b1, b2 = packed[:, 0], packed[:, 1], packed[:, 2]
    out = np.empty((len(packed), 4), dtype=np.uint8)
    out[:, 0] = b0 & 0x3F
    out[:, 1] = ((b0 >> 6) | (b1 << 2)) & 0x3F
    out[:, 2] = ((b1 >> 4) | (b2 << 4)) & 0x3F
    out[:, 3] = b2 >> 2
    return out.reshape(-1)
