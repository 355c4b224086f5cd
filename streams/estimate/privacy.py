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

import hashlib
import hmac
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from streams.core.settings import Settings

K = TypeVar("K", bound=Hashable)

Item = tuple[str, int]  # (area id, window seconds)
SegmentItem = tuple[str, int, str]  # (area id, window seconds, segment)
AnyItem = Item | SegmentItem


def _nested(area_cells: Mapping[str, Iterable[int]], windows_s: Sequence[int]) -> Iterator[tuple[str, int, str, int]]:
    """Every (outer area, outer window, inner area, inner window) with the inner area's cells
    inside the outer's and the inner window no longer (the pair itself included)."""
    cells = {area: frozenset(c) for area, c in area_cells.items()}
    for outer, outer_cells in cells.items():
        for inner, inner_cells in cells.items():
            if inner_cells <= outer_cells:
                for w_out in windows_s:
                    for w_in in windows_s:
                        if w_in <= w_out:
                            yield outer, w_out, inner, w_in


def containment_pairs(area_cells: Mapping[str, Iterable[int]], windows_s: Sequence[int]) -> list[tuple[Item, Item]]:
    """Every (outer, inner) pair of items where the inner one's devices are all in the outer one.

    Computed once per areas file: areas by cell-set inclusion, windows by length, and both
    together (a short window of an inner area is inside a long window of an outer one).
    """
    return [((o, wo), (i, wi)) for o, wo, i, wi in _nested(area_cells, windows_s) if (o, wo) != (i, wi)]


def segment_pairs(area_cells: Mapping[str, Iterable[int]], windows_s: Sequence[int],
                  segments: Sequence[str], nested: Sequence[str]) -> list[tuple[AnyItem, AnyItem]]:
    """Containment pairs of segment items (area, window, segment), streams/core/segments.py:

    - every segment of an item is inside that item's total, and inside every total that
      contains the item (a larger area, a longer window);
    - a `nested` segment (residents, an age band) of an inner item is inside the same segment
      of an outer item; visitors are not nested across areas (a visitor of the stadium may be a
      resident of the city), only across windows of the same area.

    Segments partition a total (residents + visitors; the bands and the unknown band), so these
    pairs also close the complements: total - residents = visitors is itself an item.
    """
    pairs: list[tuple[AnyItem, AnyItem]] = []
    for outer, w_out, inner, w_in in _nested(area_cells, windows_s):
        for segment in segments:
            pairs.append(((outer, w_out), (inner, w_in, segment)))
            if (segment in nested or outer == inner) and (outer, w_out) != (inner, w_in):
                pairs.append(((outer, w_out, segment), (inner, w_in, segment)))
    return pairs


def suppressed_items(counts: Mapping[K, int], pairs: Sequence[tuple[K, K]], k: int) -> set[K]:
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


class DiscreteLaplace:
    """Optional differential privacy at publication: two-sided geometric noise.

    P(noise = z) is proportional to exp(-epsilon * |z| / sensitivity). `sensitivity` is how many
    devices one person can add to a count (SIMs per person); epsilon is spent per release.

    The noise of a release is a pseudo-random function of (secret, item, window end, raw count):
    republishing an unchanged point repeats the identical value (nothing new is learned, nothing
    is spent), while a changed count gets fresh noise (and is charged as a new release, because
    two noisy values of related counts are two observations).
    """

    def __init__(self, epsilon: float, sensitivity: int, secret: bytes) -> None:
        if epsilon <= 0 or sensitivity < 1:
            raise ValueError("epsilon must be > 0 and sensitivity >= 1")
        self.epsilon = epsilon
        self.sensitivity = sensitivity
        self.secret = secret
        self.alpha = math.exp(-epsilon / sensitivity)

    def noise(self, label: str) -> int:
        digest = hmac.new(self.secret, label.encode(), hashlib.sha256).digest()
        u1, u2 = (((int.from_bytes(digest[i : i + 8], "big") >> 11) + 0.5) / 2**53 for i in (0, 8))
        # Difference of two geometric variables (inverse CDF) is discrete Laplace.
        return self._geometric(u1) - self._geometric(u2)

    def _geometric(self, u: float) -> int:
        return int(math.floor(math.log(u) / math.log(self.alpha)))

    def quantile(self, level: float = 0.90) -> int:
        """Half-width h with P(|noise| <= h) >= level: how far the range must widen."""
        a = self.alpha
        # P(|Z| <= h) = 1 - 2 a^(h+1) / (1 + a)
        h = math.log((1 - level) * (1 + a) / 2) / math.log(a) - 1
        return max(0, math.ceil(h))


def mechanism_for(settings: Settings) -> DiscreteLaplace | None:
    """The configured differential-privacy mechanism (CROWDPULSE_DP_*), None when it is off."""
    if settings.dp_epsilon is None or not settings.dp_secret:
        return None
    return DiscreteLaplace(settings.dp_epsilon, settings.dp_sensitivity, settings.dp_secret.encode())


def noisy_release(estimate: Mapping[str, Any], mechanism: DiscreteLaplace) -> dict[str, Any]:
    """The estimate with noise on its counts and its range widened by the noise's 90% interval
    (the capacity level is left to the caller, which recomputes it from the noisy range)."""
    label = f"{estimate['area']}|{estimate['window_s']}|{estimate['as_of']}|{estimate['devices']}"
    z = mechanism.noise(label)
    widen = mechanism.quantile(0.90)
    out = dict(estimate)
    out["devices"] = max(0, estimate["devices"] + z)
    out["people"] = max(0, estimate["people"] + z)
    out["people_low"] = max(0, estimate["people_low"] + z - widen)
    out["people_high"] = max(out["people"], estimate["people_high"] + z + widen)
    out["noise"] = "discrete-laplace"
    return out
