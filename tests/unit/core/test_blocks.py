"""Five-minute blocks: how a span is cut into block and bucket keys, and what the book merges,
reads and forgets (streams/core/blocks.py)."""

from __future__ import annotations

from streams.core.blocks import BLOCK_BUCKETS, BlockBook, span_pieces
from streams.core.keys import KeyLayout


def keys_of(pieces: list[tuple[bool, int]]) -> list[int]:
    """The buckets the pieces cover, in order (a block stands for its five)."""
    out: list[int] = []
    for is_block, index in pieces:
        out += list(range(index * BLOCK_BUCKETS, (index + 1) * BLOCK_BUCKETS)) if is_block else [index]
    return out


def test_a_span_reads_each_whole_merged_block_as_one_key() -> None:
    # Buckets 103..131: blocks 21-25 lie whole inside (105-129); 21, 22 and 24 are merged.
    pieces = span_pieces(103, 131, [False] * 29, {20, 21, 22, 24, 26})
    assert pieces == [(False, 103), (False, 104), (True, 21), (True, 22), *[(False, b) for b in range(115, 120)],
                      (True, 24), *[(False, b) for b in range(125, 132)]]
    assert keys_of(pieces) == list(range(103, 132))  # every bucket once, in order


def test_a_block_with_a_bucket_read_from_its_rotation_shadow_is_read_bucket_by_bucket() -> None:
    # An epoch began at bucket 112: buckets before it are read from their shadow keys, which
    # no block merges; block 22 (110-114) straddles the start.
    shadow = [b < 112 for b in range(100, 120)]
    pieces = span_pieces(100, 119, shadow, {20, 21, 22, 23})
    assert pieces == [*[(False, b) for b in range(100, 115)], (True, 23)]


def test_nothing_merged_reads_every_bucket() -> None:
    assert span_pieces(100, 104, [False] * 5, set()) == [(False, b) for b in range(100, 105)]


def test_the_book_looks_at_sealed_blocks_inside_the_lookback_once() -> None:
    book = BlockBook(lookback_buckets=60)
    # Window end 200: its hour is buckets 141-200; sealed through 196: blocks 29-38 (145-194).
    assert book.to_look_at(["a"], 196, 200) == [("a", b) for b in range(29, 39)]
    assert book.to_look_at(["a"], None, 200) == []  # nothing sealed
    for block in range(29, 39):
        book.record("a", block, [""] if block % 2 else [])
    assert book.to_look_at(["a"], 196, 200) == []
    assert book.to_look_at(["a"], 199, 201) == [("a", 39)]  # 195-199 sealed now
    assert book.usable("a") == {"": frozenset({29, 31, 33, 35, 37})}


def test_a_rebuilt_bucket_unmerges_its_block_and_it_is_looked_at_again() -> None:
    book = BlockBook(lookback_buckets=60)
    for block in range(29, 39):
        book.record("a", block, ["", "res"])
    forgotten = book.invalidate([("a", 171), ("a", 199), ("b", 171)])  # 171: block 34; 199: not merged
    assert forgotten == 2  # block 34's total and residents
    assert 34 not in book.usable("a")[""] and 33 in book.usable("a")[""]
    assert book.to_look_at(["a"], 196, 200) == [("a", b) for b in range(34, 39)]


def test_old_blocks_and_given_away_areas_are_forgotten() -> None:
    book = BlockBook(lookback_buckets=60)
    for area in ("a", "b"):
        for block in range(29, 39):
            book.record(area, block, [""])
    book.forget_before(35)
    assert book.usable("a") == {"": frozenset(range(35, 39))}
    book.keep_areas(["b"])
    assert book.usable("a") == {} and book.to_look_at(["a"], 196, 200) == [("a", b) for b in range(29, 39)]


def test_a_blocks_keys_are_dropped_with_its_last_bucket() -> None:
    keys = KeyLayout("cp", 60)
    assert keys.area_block("a", 39) not in keys.bucket_keys(["a"], [], 198, ["res"])
    last = keys.bucket_keys(["a"], [], 199, ["res"])
    assert keys.area_block("a", 39) in last and keys.area_block("a", 39, "res") in last
    assert keys.area_block("a", 39).startswith("cp:{a:a}:")  # the area's slot
