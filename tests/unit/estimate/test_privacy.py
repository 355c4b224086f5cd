"""The minimum-count rule and its closure against differencing (streams/estimate/privacy.py), and the
estimator's book that applies it to every area of a window end."""

from __future__ import annotations

import itertools

import numpy as np

from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.core.windows import Span
from streams.estimate.estimator import WindowBook
from streams.estimate.privacy import containment_pairs, suppressed_items

K = 15
CITY = load_areas(DEFAULT_AREAS)
WINDOWS = (300, 900, 3600)


def test_containment_follows_cells_and_window_length() -> None:
    pairs = set(containment_pairs({"big": [1, 2, 3], "small": [2], "other": [3, 4]}, (300, 900)))
    assert (("big", 900), ("small", 300)) in pairs  # inner area, shorter window
    assert (("big", 900), ("big", 300)) in pairs  # same area, shorter window
    assert (("big", 300), ("small", 300)) in pairs
    assert (("big", 300), ("small", 900)) not in pairs  # a longer window is not inside a shorter one
    assert not any("other" in (o[0], i[0]) and o[0] != i[0] for o, i in pairs)  # overlap is not nesting
    assert (("big", 300), ("big", 300)) not in pairs


def test_small_counts_are_withheld() -> None:
    assert suppressed_items({"a": 14, "b": 15, "c": 0}, [], K) == {"a", "c"}


def test_a_small_difference_between_nested_counts_is_not_recoverable() -> None:
    counts = {("east", 900): 50, ("stadium", 900): 45}
    withheld = suppressed_items(counts, [(("east", 900), ("stadium", 900))], K)
    assert withheld == {("stadium", 900)}  # 50 - 45 = 5 people outside the stadium: one side goes
    # A large difference is fine, and so is a small one whose inner side is already withheld.
    assert suppressed_items({"o": 500, "i": 45}, [("o", "i")], K) == set()
    assert suppressed_items({"o": 20, "i": 10}, [("o", "i")], K) == {"i"}


def test_noise_around_zero_counts_as_a_small_difference() -> None:
    assert suppressed_items({"o": 1000, "i": 1003}, [("o", "i")], K) == {"o"}


def test_withholding_cascades_until_no_published_pair_is_close() -> None:
    counts = {"city": 100, "district": 90, "venue": 80, "gate": 70}
    pairs = [(a, b) for a, b in itertools.combinations(["city", "district", "venue", "gate"], 2)]
    withheld = suppressed_items(counts, pairs, K)
    published = [i for i in counts if i not in withheld]
    for outer, inner in pairs:
        if outer in published and inner in published:
            assert abs(counts[outer] - counts[inner]) >= K
    assert published  # the largest count survives


def test_no_published_pair_differs_by_less_than_k_on_random_city_counts() -> None:
    """Property check over the example city: whatever the counts, what survives is safe."""
    pairs = containment_pairs({a.id: a.cells for a in CITY.areas}, WINDOWS)
    rng = np.random.default_rng(5)
    for _ in range(200):
        counts = {(a, w): int(rng.integers(0, 120)) for a in CITY.area_ids for w in WINDOWS}
        withheld = suppressed_items(counts, pairs, K)
        for outer, inner in pairs:
            if outer not in withheld and inner not in withheld:
                assert abs(counts[outer] - counts[inner]) >= K
        assert all(counts[i] >= K for i in counts if i not in withheld)


def test_window_book_republishes_an_unchanged_area_when_a_neighbour_withholds_it() -> None:
    book = WindowBook(CITY, WINDOWS, K, 60_000, keep_buckets=5)
    assert len(book.needed([("stadium", 10)])) == len(CITY.area_ids)  # a new window end: all areas
    counts = {(a, 10, Span(0, w)): 10_000 + 1000 * i + w for i, a in enumerate(CITY.area_ids) for w in WINDOWS}
    first = book.update(counts, newest=10)
    assert len(first) == len(CITY.area_ids) * len(WINDOWS) and not any(e["suppressed"] for e in first)
    assert book.needed([("stadium", 10)]) == [("stadium", 10)]
    # The stadium now holds all but 5 of the east district's devices in the 60-minute window.
    east = counts[("east-district", 10, Span(0, 3600))]
    second = book.update({("stadium", 10, Span(0, 3600)): east - 5}, newest=10)
    changed = {(e["area"], e["window_s"]): e for e in second}
    assert changed[("stadium", 3600)]["suppressed"] is True and changed[("stadium", 3600)]["devices"] is None
    assert changed[("stadium", 3600)]["suppressed_reason"] == "differencing"  # its own count is well over k
    assert book.update({("stadium", 10, Span(0, 3600)): east - 5}, newest=10) == []  # nothing new to say
    book.update({}, newest=20)
    assert book.counts == {}  # old window ends are forgotten


def test_discrete_laplace_has_the_promised_spread_and_interval() -> None:
    import math

    from streams.estimate.privacy import DiscreteLaplace

    mechanism = DiscreteLaplace(epsilon=0.5, sensitivity=1, secret=b"test")
    z = np.array([mechanism.noise(f"point-{i}") for i in range(40_000)])
    alpha = math.exp(-0.5)
    assert abs(z.mean()) < 0.1
    assert abs(z.var() / (2 * alpha / (1 - alpha) ** 2) - 1) < 0.05
    h = mechanism.quantile(0.90)
    assert (np.abs(z) <= h).mean() >= 0.89 and (np.abs(z) <= h - 1).mean() < 0.90
    assert mechanism.noise("same") == mechanism.noise("same")  # a repeated release repeats its value
    assert DiscreteLaplace(0.5, 2, b"test").quantile() > h  # two SIMs per person: more noise


def test_private_releases_spend_and_enforce_the_daily_budget() -> None:
    from streams.estimate.estimator import DAY_MS, build_estimate, private_releases
    from streams.estimate.privacy import DiscreteLaplace

    mechanism = DiscreteLaplace(epsilon=1.0, sensitivity=1, secret=b"k")
    stadium = CITY.area_by_id["stadium"]
    day = 20_000
    estimates = [build_estimate(stadium, 300, day * DAY_MS + m * 60_000, 5000, K) for m in range(1, 5)]
    released, charges = private_releases(estimates, mechanism, {("stadium", day): 1.0}, daily_budget=3.0)
    assert charges == {("stadium", day): 2.0}
    assert [e["suppressed"] for e in released] == [False, False, True, True]
    assert released[2]["suppressed_reason"] == "privacy_budget" and released[2]["people"] is None
    for raw, noisy in zip(estimates[:2], released[:2]):
        assert noisy["people_low"] <= noisy["people"] <= noisy["people_high"]
        assert noisy["people_high"] - noisy["people_low"] > raw["people_high"] - raw["people_low"]
    suppressed = build_estimate(stadium, 300, day * DAY_MS, 3, K)
    assert private_releases([suppressed], mechanism, {}, 3.0) == ([suppressed], {})  # nothing to spend on
