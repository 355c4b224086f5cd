"""Which counts may be published: the minimum-count rule and its closure against differencing.

Pure (no I/O). The estimator applies `suppressed_items` to every window point before anything
is published, so every channel (Kafka, HTTP, SSE, dashboard, Prometheus) carries the same
decision. See docs/privacy.md.

The rule. A published item is an (area, window) count at one window end. Item X *contains*
item Y when Y's cells are a subset of X's cells and Y's window is no longer than X's: then
every device counted in Y is counted in X, and count(X) - count(Y) is the number of devices seen
in X but not in Y, a group of its own. So:

1. an item whose count is below k is suppressed;
2. for every containing pair (X, Y) where both are still published, if |count(X) - count(Y)|
   < k, the smaller of the two is suppressed as well (ties: the inner one); repeat until no
   such pair is left. Withholding a value can never make a new difference computable, so the
   loop ends with a set in which no published pair differs by fewer than k devices.

The absolute value matters: two HyperLogLog estimates of nested sets can differ by a few in
either direction, and a difference near zero still says the outer group is tiny.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

Item = tuple[str, int]  # (area id, window seconds)


def containment_pairs(area_cells: Mapping[str, Iterable[int]], windows_s: Sequence[int]) -> list[tuple[Item, Item]]:
    """Every (outer, inner) pair of items where the inner one's devices are all in the outer one.

    Computed once per areas file: areas by cell-set inclusion, windows by length, and both
    together (a short window of an inner area is inside a long window of an outer one).
    """
    cells = {area: frozenset(c) for area, c in area_cells.items()}
    pairs: list[tuple[Item, Item]] = []
    for outer, outer_cells in cells.items():
        for inner, inner_cells in cells.items():
            if not inner_cells <= outer_cells:
                continue
            for w_out in windows_s:
                for w_in in windows_s:
                    if w_in <= w_out and (outer, w_out) != (inner, w_in):
                        pairs.append(((outer, w_out), (inner, w_in)))
    return pairs


def suppressed_items(counts: Mapping[Hashable, int], pairs: Sequence[tuple[Hashable, Hashable]], k: int) -> set:
    """The items that must not be published (rule above). `counts` holds one window end."""
    suppressed = {item for item, count in counts.items() if count < k}
    changed = True
    while changed:
        changed = False
        for outer, inner in pairs:
            if outer in suppressed or inner in suppressed or outer not in counts or inner not in counts:
                continue
            if abs(counts[outer] - counts[inner]) < k:
                suppressed.add(outer if counts[outer] < counts[inner] else inner)
                changed = True
    return suppressed
