"""Redis' HyperLogLog in numpy (streams/core/hll.py) against a plain-Python transcription of
redis-server's MurmurHash64A and hllPatLen, and the dense encoding's bit layout. The integration
tests (tests/integration/pipeline/test_hll_store.py) compare the same with a real redis-server."""

from __future__ import annotations

import numpy as np

from streams.core import hll

MASK = (1 << 64) - 1


def murmur_reference(member: int) -> int:
    """MurmurHash64A of one 8-byte little-endian member, seed 0xadc83b19, in Python ints."""
    m, r = 0xC6A4A7935BD1E995, 47
    h = 0xADC83B19 ^ ((8 * m) & MASK)
    k = (member * m) & MASK
    k ^= k >> r
    k = (k * m) & MASK
    h = ((h ^ k) * m) & MASK
    h ^= h >> r
    h = (h * m) & MASK
    h ^= h >> r
    return h


def position_reference(member: int) -> tuple[int, int]:
    """hllPatLen: register = low 14 bits; rank = 1 + trailing zeros of the other 50 (bit 50 set)."""
    h = murmur_reference(member)
    rest = (h >> 14) | (1 << 50)
    rank = 1
    while not rest & 1:
        rest >>= 1
        rank += 1
    return h & 16383, rank


def test_the_hash_register_and_rank_are_redis_own() -> None:
    rng = np.random.default_rng(7)
    members = np.concatenate([
        rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True),
        np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64),
    ])
    before = members.copy()
    assert hll.murmur64a(members).tolist() == [murmur_reference(int(x)) for x in members]
    index, rank = hll.register_and_rank(members)
    assert list(zip(index.tolist(), rank.tolist(), strict=True)) == [position_reference(int(x)) for x in members]
    assert np.array_equal(members, before)  # hashed in place on a copy, never on the caller's array


def test_a_rank_can_reach_51_when_the_50_high_bits_are_zero() -> None:
    # The rank's largest value: 50 trailing zeros, then the stop bit Redis sets. Found by search
    # would take 2**50 tries; check the bit arithmetic on a crafted hash instead.
    rest = np.array([0, 1 << 49, 1, 6], dtype=np.uint64) | np.uint64(1 << 50)
    assert np.bitwise_count(rest ^ (rest - np.uint64(1))).tolist() == [51, 50, 1, 2]


def test_registers_keep_the_highest_rank_per_group() -> None:
    index = np.array([5, 5, 7, 5, 7], dtype=np.uint16)
    rank = np.array([3, 9, 2, 4, 1], dtype=np.uint8)
    groups = np.array([0, 0, 0, 1, 1])
    registers = hll.registers_of(index, rank, groups, 2)
    assert registers.shape == (2, hll.REGISTERS)
    assert (registers[0, 5], registers[0, 7], registers[1, 5], registers[1, 7]) == (9, 2, 4, 1)
    assert int(registers.sum()) == 9 + 2 + 4 + 1


def test_the_dense_string_packs_six_bits_per_register_least_significant_first() -> None:
    registers = np.zeros((1, hll.REGISTERS), dtype=np.uint8)
    registers[0, 1] = 0b110101  # bits 6-11: byte 0 bits 6-7 get 01, byte 1 bits 0-3 get 1101
    registers[0, 3] = 63  # bits 18-23: byte 2 bits 2-7
    (blob,) = hll.dense_strings(registers)
    assert len(blob) == hll.DENSE_BYTES == 12_304
    assert blob[:16] == b"HYLL" + bytes(11) + b"\x80"
    body = blob[16:]
    assert body[0] == 0b01000000 and body[1] == 0b00001101 and body[2] == 0b11111100
    assert not any(body[3:])
    rng = np.random.default_rng(3)
    many = rng.integers(0, 52, (3, hll.REGISTERS), dtype=np.uint8)
    assert all(np.array_equal(hll.registers_from_dense(b), row) for b, row in zip(hll.dense_strings(many), many, strict=True))
