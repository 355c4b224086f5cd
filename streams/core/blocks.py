"""Five-minute blocks: sealed buckets of an area merged once, so a window's PFCOUNT merges a
block key instead of five bucket keys. Pure bookkeeping.

A PFCOUNT over several keys merges their registers on the fly, at a cost per key: for a dense
HyperLogLog (an area with more than ~1,600 phones a minute) about 23 us, whatever its count. An
area's curve and segments merge some 560 bucket keys per window end (the hour, the hour's older
parts, four segments' windows), so a city's large areas cost Redis milliseconds each, every
minute. Once a block of BLOCK_BUCKETS buckets is sealed (estimator.sealed_through: no event can
enter it any more), the counter merges its dense bucket keys into one block key (PFMERGE), and
every later span that covers the whole block reads that key instead: the same registers, so the
same count to the last device, from about a third of the merges (docs/performance.md).

Only blocks whose bucket keys are all dense are merged: a merged key is dense (16 KB), and for
small areas the sparse bucket keys cost less to merge one by one than one dense key. Only the
keys of the feed's current pseudonyms are merged; a span that reads a rotation's shadow keys
reads them bucket by bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

#: Buckets per block (five one-minute buckets by default).
BLOCK_BUCKETS = 5


def block_of(bucket: int) -> int:
    return bucket // BLOCK_BUCKETS


def block_range(block: int) -> range:
    """The buckets of a block."""
    return range(block * BLOCK_BUCKETS, (block + 1) * BLOCK_BUCKETS)


def span_pieces(first: int, last: int, shadow: list[bool], blocks: Set[int]) -> list[tuple[bool, int]]:
    """The keys of buckets `first`..`last` (inclusive; `shadow[i]`: bucket first + i is read
    from its rotation shadow) as (is_block, index) pieces, oldest first: each whole block in
    `blocks` whose buckets are all read from their current keys as one block key, every other
    bucket as its own key."""
    out: list[tuple[bool, int]] = []
    bucket = first
    while bucket <= last:
        offset = bucket - first
        if (bucket % BLOCK_BUCKETS == 0 and bucket + BLOCK_BUCKETS - 1 <= last and block_of(bucket) in blocks
                and not any(shadow[offset : offset + BLOCK_BUCKETS])):
            out.append((True, block_of(bucket)))
            bucket += BLOCK_BUCKETS
        else:
            out.append((False, bucket))
            bucket += 1
    return out


class BlockBook:
    """Which blocks of which areas are merged in Redis, per segment ("" the total), and which
    sealed blocks are still to be looked at. A counter's own: the areas it counts."""

    def __init__(self, lookback_buckets: int) -> None:
        #: The longest span back from a window end (the hour): older blocks are of no use.
        self.lookback_buckets = lookback_buckets
        self.looked: dict[str, int] = {}  # area -> the newest block looked at
        self.merged: dict[str, dict[str, set[int]]] = {}  # area -> segment -> merged blocks

    def to_look_at(self, areas: Iterable[str], through: int | None, newest: int) -> list[tuple[str, int]]:
        """(area, block) of every sealed block (all its buckets at or before `through`) that a
        span ending at `newest` or later can read whole and that was not looked at yet."""
        if through is None:
            return []
        last = block_of(through + 1) - 1  # the newest block whose every bucket is sealed
        first = -(-(newest - self.lookback_buckets + 1) // BLOCK_BUCKETS)  # the oldest block inside the lookback
        out: list[tuple[str, int]] = []
        for area in areas:
            start = max(first, self.looked.get(area, first - 1) + 1)
            out.extend((area, block) for block in range(start, last + 1))
        return out

    def record(self, area: str, block: int, merged: Iterable[str]) -> None:
        """The block was looked at; `merged`: the segments whose block key was merged."""
        self.looked[area] = max(block, self.looked.get(area, block))
        for segment in merged:
            self.merged.setdefault(area, {}).setdefault(segment, set()).add(block)

    def usable(self, area: str) -> dict[str, frozenset[int]]:
        """Per segment, the blocks a span of the area can read."""
        return {segment: frozenset(blocks) for segment, blocks in self.merged.get(area, {}).items() if blocks}

    def forget_before(self, block: int) -> None:
        """Blocks older than `block` are read no more (their keys are dropped with their buckets)."""
        for segments in self.merged.values():
            for blocks in segments.values():
                blocks.difference_update([b for b in blocks if b < block])

    def keep_areas(self, keep: Iterable[str]) -> None:
        """Forget every area not in `keep` (given away to another counter)."""
        keep = set(keep)
        for book in (self.looked, self.merged):
            for area in [a for a in book if a not in keep]:
                del book[area]

    def invalidate(self, dirty: Iterable[tuple[str, int]]) -> int:
        """A block one of whose buckets received events after it was merged is read bucket by
        bucket again, and looked at again (merged anew) in a later pass. Only a rebuild from
        Kafka writes a sealed bucket (streams/pipeline/rebuild.py); a stream's events go to
        buckets not sealed yet, whose blocks were never looked at. Returns how many merged
        blocks were forgotten."""
        forgotten = 0
        for area, bucket in dirty:
            block = block_of(bucket)
            if area in self.looked and block <= self.looked[area]:
                self.looked[area] = block - 1
            for blocks in self.merged.get(area, {}).values():
                if block in blocks:
                    blocks.discard(block)
                    forgotten += 1
        return forgotten
