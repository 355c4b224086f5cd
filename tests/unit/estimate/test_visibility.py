"""The visibility model's maths: curve features, the nearest-neighbour table, its calibrated
ranges, the scaling from phones to people, and the exact curve tracker used to calibrate it."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streams.core import hll
from streams.core.areas import AreaMap, load_areas
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.core.windows import Span
from streams.estimate.estimator import HLL_STANDARD_ERROR, Z_90, PeopleModel, PointBook, WindowBook, venue_network
from streams.estimate.visibility import (
    CURVE_LENGTH,
    CURVE_SPANS_S,
    FEATURE_NAMES,
    N60,
    NEAR_POWER,
    NEAR_SHARE,
    SEARCH_EPS,
    SIZE_EDGES,
    TABLE_GRID,
    VENUE,
    VisibilityModel,
    _to_planes,
    count_bounds,
    curve_features,
    local_linear,
    log_half_width,
    own_reference,
    people_from,
)
from streams.tools.curves import CurveTracker

AREAS = load_areas(DEFAULT_AREAS)


def test_curve_spans_are_the_recent_windows_then_the_older_parts_of_the_hour_then_the_quarter_before() -> None:
    assert CURVE_SPANS_S == (
        Span(0, 60), Span(0, 300), Span(0, 900), Span(0, 1800), Span(0, 3600), Span(300, 3300), Span(900, 2700), Span(1800, 1800),
        Span(900, 900),
    )


def test_curve_features_by_hand() -> None:
    # N(1, 5, 15, 30, 60), the older spans O(5), O(15), O(30) and the quarter before, P(15).
    curve = np.array([10, 40, 100, 160, 200, 180, 150, 90, 49])
    reference = np.array([100, 400, 800, 1200, 2000, 1900, 1600, 1200, 800])
    f = curve_features(curve, reference)[0]
    assert f.shape == (len(FEATURE_NAMES),)
    np.testing.assert_allclose(f[:4], [0.05, 0.2, 0.5, 0.8])  # N(W) / N(60)
    np.testing.assert_allclose(f[4:8], [0.05 / 0.05, 0.2 / 0.2, 0.5 / 0.4, 0.8 / 0.6])  # relative to the reference
    # Seen again: N(s) + O(s) - N(60) = 40+180-200, 100+150-200, 160+90-200.
    np.testing.assert_allclose(f[8:11], [20 / 200, 50 / 200, 50 / 200])
    ref_again = np.array([400 + 1900 - 2000, 800 + 1600 - 2000, 1200 + 1200 - 2000]) / 2000
    np.testing.assert_allclose(f[11:14], np.array([0.1, 0.25, 0.25]) / ref_again)
    assert f[14] == pytest.approx(0.4)
    assert f[15] == 0.0  # not the network's own curve
    # Growth: the area doubled its quarter hour, log(101 / 50); the reference stayed (801 / 801).
    assert f[16] == pytest.approx(np.log(101 / 50))
    assert f[17] == pytest.approx(np.log(101 / 50) - 0.0)
    assert f[18] == 0.0  # not a venue
    both = curve_features(np.vstack([curve, reference]), reference, np.array([False, True]))
    assert both[:, 15].tolist() == [0.0, 1.0]
    assert both[1, 16:].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(both[0], f)
    venue = curve_features(np.vstack([curve, curve]), reference, False, np.array([True, False]))
    assert venue[:, 18].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(venue[:, :18], np.vstack([f[:18], f[:18]]))


def test_curve_features_survive_empty_areas() -> None:
    f = curve_features(np.zeros((3, CURVE_LENGTH)), np.zeros(CURVE_LENGTH))
    assert np.isfinite(f).all() and (f == 0).all()


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (16 features: a table written before the growth features) whose z is a smooth
    function of two features, plus noise that is larger for small areas (N(60) below 300) than
    for large ones."""
    features = rng.random((n, 16))
    n60 = rng.choice([150, 5000], n)
    z = 0.8 * features[:, 2] - 0.5 * features[:, 9] + rng.normal(0, np.where(n60 < 300, 0.15, 0.03))
    return features, z, n60


def test_the_table_recovers_a_smooth_visibility_and_its_ranges_hold_ninety_percent() -> None:
    rng = np.random.default_rng(3)
    features, z, _ = _synthetic(rng, 6000)
    model = VisibilityModel.fit(features, z, k=10, meta={})
    model = model.with_coverage(*_synthetic(rng, 4000))
    test_f, test_z, test_n60 = _synthetic(rng, 4000)
    z_hat, half = model.predict(test_f, test_n60)
    # Fifteen features, two of them informative, 6,000 rows: the neighbours are not very near,
    # so the error is several times the noise, but far below the spread of z itself (~0.25).
    assert np.mean(np.abs(z_hat - test_z)) < 0.15
    # The ranges hold 90% in each size class, not just overall: wider for the small areas.
    for small in (True, False):
        mine = (test_n60 < 300) == small
        coverage = np.mean(np.abs(z_hat - test_z)[mine] <= half[mine])
        assert 0.86 <= coverage <= 0.94, (small, coverage)
    assert np.median(half[test_n60 < 300]) > np.median(half[test_n60 >= 300])


def test_with_runs_the_ranges_hold_ninety_percent_for_nine_runs_in_ten_not_the_pool() -> None:
    rng = np.random.default_rng(13)
    features, z, _ = _synthetic(rng, 6000)
    model = VisibilityModel.fit(features, z, k=10, meta={})
    held_f, held_z, _ = _synthetic(rng, 6600)
    held_n60 = np.full(6600, 5000)
    runs = np.repeat(np.arange(11), 600)
    held_z = held_z + np.where(runs == 10, rng.normal(0, 1.5, 6600), 0.0)  # run 10: a much harder story
    test_f, test_z, _ = _synthetic(rng, 4000)
    test_n60 = np.full(4000, 5000)

    def coverage(m: VisibilityModel) -> float:
        z_hat, half = m.predict(test_f, test_n60)
        return float(np.mean(np.abs(z_hat - test_z) <= half))

    pooled, typical = model.with_coverage(held_f, held_z, held_n60), model.with_coverage(held_f, held_z, held_n60, runs=runs)
    assert coverage(pooled) > 0.97  # the hard run widened everyone's ranges
    assert 0.86 <= coverage(typical) <= 0.94


def test_a_model_round_trips_through_its_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    features, z, _ = _synthetic(rng, 500)
    model = VisibilityModel.fit(features, z, k=5, meta={"runs": ["x"]}).with_coverage(*_synthetic(rng, 200))
    model.save(tmp_path / "m.npz")
    again = VisibilityModel.load(tmp_path / "m.npz")
    probe, n60 = rng.random((7, len(FEATURE_NAMES))), np.full(7, 500)
    # The table is kept on a grid of 1/TABLE_GRID standard deviation and z to 1e-3: equal to a few thousandths.
    assert np.abs(again.table - model.table).max() <= 0.5 / TABLE_GRID + 1e-6
    np.testing.assert_allclose(again.predict(probe, n60)[0], model.predict(probe, n60)[0], atol=2e-3)
    assert again.meta == {"runs": ["x"]} and again.k == 5
    np.testing.assert_allclose(again.spread_90, model.spread_90)


def test_the_local_fit_answers_for_the_query_where_the_neighbours_lie_to_one_side() -> None:
    """z linear in the features; every neighbour lies on one side of the query (its edge of the
    map): their mean answers for where they are, the local fit for where the query is."""
    rng = np.random.default_rng(21)
    table = rng.normal(0.0, 1.0, (400, 3))
    z = 0.5 + 0.3 * table[:, 0] - 0.2 * table[:, 2]
    query = np.array([[-2.5, 0.0, 0.0]])
    nearest = np.argsort(np.linalg.norm(table - query, axis=1))[:40][None, :]
    truth = 0.5 + 0.3 * -2.5
    mean = z[nearest].mean()
    fitted = local_linear(table, z, query, nearest, ridge=0.01)[0]
    assert abs(mean - truth) > 0.2  # the plain mean is off by the neighbours' offset
    assert fitted == pytest.approx(truth, abs=0.02)


def test_the_local_fit_stays_within_its_neighbours_and_a_ridge_of_zero_is_their_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(22)
    features, z, n60 = _synthetic(rng, 3000)
    far = rng.random((50, 16)) * 6.0 - 2.0  # off the map: a slope would extrapolate
    plain = VisibilityModel.fit(features, z, k=20, meta={})
    fitted = VisibilityModel.fit(features, z, k=20, meta={}, ridge=1.0)
    x = (far - fitted.mean) / fitted.scale
    _, nearest = fitted._tree.query(x, k=20, eps=SEARCH_EPS)  # the rows the estimator's own search finds
    z_hat, _ = fitted.predict(far, np.full(50, 5000))
    assert (z_hat >= fitted.z[nearest].min(axis=1) - 1e-12).all() and (z_hat <= fitted.z[nearest].max(axis=1) + 1e-12).all()
    np.testing.assert_allclose(plain.predict(far, np.full(50, 5000))[0], fitted.z[nearest].mean(axis=1))
    # Near the table the fit is closer to the smooth truth than the mean (the synthetic z is linear).
    test_f, _, test_n60 = _synthetic(rng, 2000)
    smooth = 0.8 * test_f[:, 2] - 0.5 * test_f[:, 9]  # _synthetic's z without its noise
    error = {m.ridge: np.mean(np.abs(m.predict(test_f, test_n60)[0] - smooth)) for m in (plain, fitted)}
    assert error[1.0] < 0.8 * error[0.0], error
    fitted.save(tmp_path / "m.npz")
    assert VisibilityModel.load(tmp_path / "m.npz").ridge == 1.0


def test_the_neighbour_search_finds_the_exact_nearest_rows_near_and_far_from_the_table() -> None:
    """The tree (its leaf size and split rule chosen for speed off the map) must find what a
    brute-force search finds: the shipped table, probes on its rows and far from them. (The
    estimator's own search may stop within SEARCH_EPS: the next test.)"""
    model = VisibilityModel.load(Settings.from_env({}).visibility_model_path)
    table = model.table.astype(np.float64)
    rng = np.random.default_rng(7)
    rows = table[rng.integers(0, len(table), 60)]
    squared = np.einsum("ij,ij->i", table, table)
    for noise in (0.05, 1.5, 4.0):
        probes = rows + rng.normal(0.0, noise, rows.shape)
        found, _ = model._tree.query(probes, k=model.k)
        # Distances, not row numbers: the table has rows at equal distances (ties).
        brute = squared[None, :] - 2.0 * probes @ table.T + np.einsum("ij,ij->i", probes, probes)[:, None]
        nearest = np.sqrt(np.maximum(np.sort(np.partition(brute, model.k - 1, axis=1)[:, : model.k], axis=1), 0.0))
        np.testing.assert_allclose(found, nearest, rtol=1e-9, atol=1e-6, err_msg=f"noise {noise}")


def test_a_table_written_in_float16_before_the_grid_still_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    model = VisibilityModel.fit(*_synthetic(rng, 300)[:2], k=5, meta={}).with_coverage(*_synthetic(rng, 100))
    model.save(tmp_path / "grid.npz")
    with np.load(tmp_path / "grid.npz") as f:
        arrays = {name: f[name] for name in f.files if name not in ("table_grid", "grid")}
    arrays["table"] = _to_planes(np.ascontiguousarray(model.table.astype(np.float16).T))
    with zipfile.ZipFile(tmp_path / "old.npz", "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    old = VisibilityModel.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(old.table, model.table.astype(np.float16).astype(np.float32))


def test_people_from_phones_by_share_and_sims() -> None:
    # 1,000 phones in the hour, visibility e^z = 0.8 -> 800 phones present -> / (0.32 * 1.35).
    people, low, high = people_from(np.array([1000]), np.log([0.8]), np.array([0.1]), np.array([0.32]), 1.35)
    assert people[0] == round(800 / 0.432)
    assert low[0] == math.floor(800 * math.exp(-0.1) / 0.432) and high[0] == math.ceil(800 * math.exp(0.1) / 0.432)


def test_half_widths_add_in_quadrature() -> None:
    half = log_half_width(np.array([0.3]), 0.4 / Z_90, 0.0, Z_90)
    assert half[0] == pytest.approx(0.5)


def _flat_model(z: float) -> VisibilityModel:
    """A table that answers z for everything (all rows equal), with a known spread."""
    rng = np.random.default_rng(5)
    features = rng.random((50, len(FEATURE_NAMES)))
    return VisibilityModel(
        table=features.astype(np.float32), z=np.full(50, z), mean=np.zeros(len(FEATURE_NAMES)),
        scale=np.ones(len(FEATURE_NAMES)), k=5, spread_90=np.ones(len(SIZE_EDGES) + 1), spread_floor=0.05, meta={},
    )


def test_people_model_scales_by_each_areas_share_and_needs_the_reference() -> None:
    people = PeopleModel.for_areas(_flat_model(math.log(0.5)), AREAS, default_share=0.32, sims=1.35)
    assert people.reference == "city" == AREAS.reference
    assert people.share["east-district"] == 0.36 and people.share["stadium"] == 0.32
    curve = np.array([100, 300, 600, 800, 1000, 900, 700, 500, 400])
    assert people.estimate({"stadium": curve}) == {}  # no reference, nothing to say
    out = people.estimate({"city": curve * 10, "stadium": curve, "east-district": curve})
    assert out["stadium"].people == round(500 / (0.32 * 1.35))
    assert out["east-district"].people == round(500 / (0.36 * 1.35))
    half = math.sqrt(0.05**2 + (Z_90 * HLL_STANDARD_ERROR) ** 2)
    assert out["stadium"].high == math.ceil(500 * math.exp(half) / (0.32 * 1.35))


def test_only_a_reference_covering_every_cell_is_estimated_as_the_network() -> None:
    """A table whose answer depends on the network flag alone: z 0 for the network's own curve,
    log(0.5) for anything else. The city (covering every cell) is the network; the stadium as the
    only area of a deployment (its own reference, no network around it) is not."""
    rng = np.random.default_rng(6)
    features = rng.random((60, len(FEATURE_NAMES))) * 0.01
    features[:, 15] = np.repeat([0.0, 1.0], 30)  # the network flag
    model = VisibilityModel(
        table=features.astype(np.float32), z=np.where(features[:, 15] > 0, 0.0, math.log(0.5)),
        mean=np.zeros(len(FEATURE_NAMES)), scale=np.ones(len(FEATURE_NAMES)), k=5,
        spread_90=np.ones(len(SIZE_EDGES) + 1), spread_floor=0.05, meta={"counts": "hll"},
    )
    curve = np.array([100, 300, 600, 800, 1000, 900, 700, 500, 400])
    city = PeopleModel.for_areas(model, AREAS, default_share=0.5, sims=1.0)
    out = city.estimate({"city": curve, "stadium": curve})
    assert (out["city"].people, out["stadium"].people) == (2000, 1000)
    stadium = AREAS.area_by_id["stadium"]
    alone = PeopleModel.for_areas(model, AreaMap(AREAS.name, list(AREAS.cells), [stadium]), default_share=0.5, sims=1.0)
    assert alone.reference == "stadium" and alone.network_area is None
    assert alone.estimate({"stadium": curve})["stadium"].people == 1000


def test_each_estimate_carries_its_two_estimators_readings() -> None:
    # A fit that answers z 0 and a companion that answers log(0.5), equally well known.
    fit = replace(_flat_model(0.0), row_error=np.full(50, 0.1, dtype=np.float32))
    companion = replace(_flat_model(math.log(0.5)), row_error=np.full(50, 0.1, dtype=np.float32))
    curve = np.array([100, 300, 600, 800, 1000, 900, 700, 500, 400])
    out = PeopleModel.for_areas(replace(fit, companion=companion), AREAS, default_share=0.5, sims=1.0).estimate(
        {"city": curve * 10, "stadium": curve})
    # N(60) 1,000 phones at share 0.5: 2,000 people by the fit, 1,000 by the companion, and the
    # estimate weighs them equally (in log space).
    assert out["stadium"].readings == (2000, 1000)
    assert out["stadium"].people == round(2000 * math.sqrt(0.5))
    # Without a companion both readings are the fit's.
    alone = PeopleModel.for_areas(fit, AREAS, default_share=0.5, sims=1.0).estimate({"city": curve * 10, "stadium": curve})
    assert alone["stadium"].readings == (2000, 2000) and alone["stadium"].people == 2000
    # An area read against itself (no network around it) is the fit's alone, twice.
    stadium = AREAS.area_by_id["stadium"]
    venue = PeopleModel.for_areas(replace(fit, companion=companion), AreaMap(AREAS.name, list(AREAS.cells), [stadium]), 0.5, 1.0)
    assert venue.estimate({"stadium": curve})["stadium"].readings == (2000, 2000)


def test_a_venue_is_read_against_venues_by_the_fit_and_by_its_companion(tmp_path: Path) -> None:
    """A table whose answer depends on the venue flag alone: z 0 for a venue, log(0.5) for any
    other area. The stadium and the arena (kind `venue` in the areas file) and a district with the
    same curve get different people; the station (kind `station`) is no venue. The companion
    reads the flag too, through its named columns, and keeps them through its file."""
    assert AREAS.venues == {"stadium", "arena"}
    rng = np.random.default_rng(7)
    curve = np.array([100, 300, 600, 800, 1000, 900, 700, 500, 400])
    features = np.repeat(curve_features(curve, curve * 10), 60, axis=0)
    features[:, 0] *= 1 + 0.01 * np.tile(rng.random(30), 2)  # each row has a twin but for the flag
    features[:, VENUE] = np.repeat([0.0, 1.0], 30)
    z = np.where(features[:, VENUE] > 0, 0.0, math.log(0.5))
    fit = VisibilityModel.fit(features, z, k=5, meta={"counts": "hll"}, groups=np.arange(60), ridge=0.3)
    columns = (*range(15), VENUE)
    companion = replace(VisibilityModel.fit(features[:, list(columns)], z, k=5, meta={}, groups=np.arange(60)), columns=columns)
    for model in (fit, replace(fit, companion=companion)):
        model.save(tmp_path / "venue.npz")
        for m in (model, VisibilityModel.load(tmp_path / "venue.npz")):
            people = PeopleModel.for_areas(m, AREAS, default_share=0.5, sims=1.0)
            out = people.estimate({"city": curve * 10, "stadium": curve, "arena": curve, "station": curve, "centre": curve})
            assert (out["stadium"].people, out["arena"].people) == (2000, 2000)
            assert (out["station"].people, out["centre"].people) == (1000, 1000)
    again = VisibilityModel.load(tmp_path / "venue.npz")
    assert again.companion is not None and again.companion.columns == columns
    # The companion alone, on probes that differ only by the flag.
    probe = np.vstack([curve_features(curve, curve * 10, venue=True), curve_features(curve, curve * 10)])
    np.testing.assert_allclose(again.companion.predict(probe, np.full(2, 5000))[0], [0.0, math.log(0.5)], atol=2e-3)


def test_a_venue_that_covers_the_whole_network_is_read_as_the_network() -> None:
    """A festival site with nothing around it, of kind venue: no calibrated network is a venue,
    so the model reads it as the network (its flag only); a venue inside it keeps its kind."""
    stadium, city = AREAS.area_by_id["stadium"], AREAS.area_by_id["city"]
    site = replace(city, kind="venue")
    areas = AreaMap(AREAS.name, list(AREAS.cells), [site, stadium])
    assert venue_network(areas) == "city"
    people = PeopleModel.for_areas(_flat_model(0.0), areas, default_share=0.5, sims=1.0)
    assert people.network_area == "city" and people.venues == {"stadium"}
    plain = PeopleModel.for_areas(_flat_model(0.0), AreaMap(AREAS.name, list(AREAS.cells), [city, stadium]), 0.5, 1.0)
    assert people.venues == plain.venues and people.network_area == plain.network_area
    # A venue that is its own reference but does not cover every cell is no network: it keeps its kind.
    assert venue_network(AreaMap(AREAS.name, list(AREAS.cells), [stadium])) is None
    assert venue_network(AREAS) is None


def test_window_book_publishes_the_models_people_on_every_window_and_withholds_with_the_count() -> None:
    people = PeopleModel.for_areas(_flat_model(0.0), AREAS, default_share=0.5, sims=1.0)
    book = WindowBook(AREAS, (300, 900, 3600), 15, 60_000, keep_buckets=5, people=people)
    assert set(book.spans) == {Span(0, 300), Span(0, 900), Span(0, 3600), *CURVE_SPANS_S}
    counts = {}
    for i, area in enumerate(AREAS.area_ids):
        scale = i + 1 if area != "arena" else 0.01  # the arena: 1 to 10 phones, below k
        counts.update({(area, 7, span): round(n * scale) for span, n in zip(CURVE_SPANS_S, [100, 300, 600, 800, 1000, 900, 700, 500, 400])})
    published = {(e["area"], e["window_s"]): e for e in book.update(counts, newest=7)}
    for area in ("stadium", "centre"):
        shown = [published[(area, w)] for w in (300, 900, 3600) if not published[(area, w)]["suppressed"]]
        assert len(shown) >= 2
        # One estimate of people present, whatever the window: phones present = N(60) * e^0.
        n60 = counts[(area, 7, Span(0, 3600))]
        assert {e["people"] for e in shown} == {round(n60 / 0.5)}
    assert published[("arena", 900)]["suppressed"] and published[("arena", 900)]["people"] is None


def test_the_book_asks_for_the_reference_area_when_it_lacks_its_curve() -> None:
    people = PeopleModel.for_areas(_flat_model(0.0), AREAS, default_share=0.5, sims=1.0)
    book = WindowBook(AREAS, (300, 900, 3600), 15, 60_000, keep_buckets=5, people=people)
    assert ("city", 3) in book.needed([("stadium", 3)])



def _curve_counts(bucket: int, scale: int = 1) -> dict:
    return {
        (area, bucket, span): n * (i + 1) * scale
        for i, area in enumerate(AREAS.area_ids)
        for span, n in zip(CURVE_SPANS_S, [100, 300, 600, 800, 1000, 900, 700, 500, 400])
    }


def test_estimates_warm_up_until_the_stream_behind_them_covers_what_they_need() -> None:
    # The model reads the last hour for every window: until the whole network has an hour of
    # data behind a window end, all its windows are warming up. The naive model needs only the
    # window itself: the 5-minute window is done warming long before the hour.
    people = PeopleModel.for_areas(_flat_model(0.0), AREAS, default_share=0.5, sims=1.0)
    model = WindowBook(AREAS, (300, 900, 3600), 0, 60_000, keep_buckets=5, people=people)
    naive = WindowBook(AREAS, (300, 900, 3600), 0, 60_000, keep_buckets=5)
    assert model.history_area == naive.history_area == "city" and (model.history_s, naive.history_s) == (3600, 3600)

    def warming(book: WindowBook, bucket: int, data_from: int | None) -> dict[int, bool]:
        out = book.update(_curve_counts(bucket), newest=bucket, data_from={bucket: data_from})
        return {e["window_s"]: e["warming_up"] for e in out if e["area"] == "stadium"}

    # Ten minutes of stream (buckets 91..100).
    assert warming(model, 100, 91) == {300: True, 900: True, 3600: True}
    assert warming(naive, 100, 91) == {300: False, 900: True, 3600: True}
    # 59 minutes, then a full hour (the oldest bucket of the hour, 141, has data).
    assert warming(model, 200, 142) == {300: True, 900: True, 3600: True}
    assert warming(model, 201, 142) == {300: False, 900: False, 3600: False}
    assert warming(naive, 201, 142) == {300: False, 900: False, 3600: False}
    # No data at all in the hour behind it (a silence): warming up again.
    assert warming(naive, 300, None) == {300: True, 900: True, 3600: True}
    # A caller that does not say (no data_from for the bucket): not marked.
    assert all(not e["warming_up"] for e in naive.update(_curve_counts(400), newest=400))


def test_curve_tracker_matches_plain_sets() -> None:
    rng = np.random.default_rng(6)
    n_devices, start = 300, 1_000 * 60_000
    phone = rng.random(n_devices) < 0.9
    tracker = CurveTracker(AREAS, phone, start)
    seen: list[tuple[int, int, int]] = []  # (minute, device, cell index)
    for minute in range(70):
        device = rng.integers(0, n_devices, 120)
        ts = start + minute * 60_000 + rng.integers(0, 60_000, 120)
        cell = rng.integers(0, len(AREAS.cell_ids), 120)
        tracker.add(device, ts, cell)
        seen += [(minute, int(d), int(c)) for d, c in zip(device, cell) if phone[d]]
        tracker.close(np.zeros((len(AREAS.area_ids), 3)))
    stadium = AREAS.area_ids.index("stadium")
    cells = {int(np.searchsorted(AREAS.cell_ids, c)) for c in AREAS.area_by_id["stadium"].cells}
    now = 69

    def distinct(first_age: int, last_age: int) -> int:
        return len({d for m, d, c in seen if c in cells and first_age <= now - m < last_age})

    expected = [distinct(0, w) for w in (1, 5, 15, 30, 60)] + [distinct(s, 60) for s in (5, 15, 30)] + [distinct(15, 30)]
    assert tracker.curves[-1][stadium].tolist() == expected


def test_curve_tracker_counts_each_span_as_one_hyperloglog_of_its_members() -> None:
    rng = np.random.default_rng(7)
    n_devices, start = 20_000, 1_000 * 60_000
    members = rng.integers(0, 2**64 - 1, n_devices, dtype=np.uint64, endpoint=True)
    tracker = CurveTracker(AREAS, np.ones(n_devices, dtype=bool), start, members=members)
    seen: list[tuple[int, np.ndarray]] = []  # (minute, devices in the city)
    for minute in range(66):
        device = rng.integers(0, n_devices, 1_500)
        ts = start + minute * 60_000 + rng.integers(0, 60_000, 1_500)
        tracker.add(device, ts, rng.integers(0, len(AREAS.cell_ids), 1_500))  # every cell is in the city
        seen.append((minute, device))
        tracker.close(np.zeros((len(AREAS.area_ids), 3)))
    city = AREAS.area_ids.index("city")

    def pfcount(first_age: int, last_age: int) -> int:
        devices = np.unique(np.concatenate([d for m, d in seen if first_age <= 65 - m < last_age]))
        registers = np.zeros(hll.REGISTERS, dtype=np.uint8)
        hll.add(registers, *hll.register_and_rank(members[devices]))
        return int(hll.count(registers))

    expected = [pfcount(0, w) for w in (1, 5, 15, 30, 60)] + [pfcount(s, 60) for s in (5, 15, 30)] + [pfcount(15, 30)]
    assert tracker.hll_curves[-1][city].tolist() == expected
    exact = tracker.curves[-1][city]
    assert exact[N60] > 15_000 and np.all(np.abs(tracker.hll_curves[-1][city] / exact - 1) < 5 * HLL_STANDARD_ERROR)


def test_a_table_calibrated_on_hyperloglog_counts_adds_no_second_hyperloglog_term() -> None:
    flat = _flat_model(0.0)
    exact_table = PeopleModel.for_areas(flat, AREAS, default_share=0.5, sims=1.0)
    hll_table = PeopleModel.for_areas(replace(flat, meta={"counts": "hll"}), AREAS, default_share=0.5, sims=1.0)
    curves = {"city": np.full(CURVE_LENGTH, 10_000), "stadium": np.full(CURVE_LENGTH, 1_000)}
    assert exact_table.estimate(curves)["stadium"].high == math.ceil(2_000 * math.exp(math.hypot(0.05, Z_90 * HLL_STANDARD_ERROR)))
    assert hll_table.estimate(curves)["stadium"].high == math.ceil(2_000 * math.exp(0.05))


def test_row_errors_leave_the_rows_own_group_out() -> None:
    # Three groups (runs x areas), close in feature space, each tight: within a group the
    # neighbours would agree perfectly (even hours apart); each row must be predicted by the
    # other groups only.
    rng = np.random.default_rng(9)
    features = np.repeat(rng.random((1, len(FEATURE_NAMES))), 60, axis=0) + rng.normal(0, 1e-3, (60, len(FEATURE_NAMES)))
    features[20:40] += 0.01
    features[40:] += 0.02
    z = np.r_[np.zeros(20), np.ones(20), np.full(20, 2.0)]
    groups = np.repeat([0, 1, 2], 20)
    model = VisibilityModel.fit(features, z, k=5, meta={}, groups=groups)
    assert model.row_error is not None
    # Group 0's nearest others are group 1 (z 1), group 2's are group 1 (z 1), group 1's are
    # groups 0 and 2 (z 0 and 2, mean about 1).
    np.testing.assert_allclose(model.row_error[:20], 1.0)
    np.testing.assert_allclose(model.row_error[40:], 1.0)
    assert np.all(model.row_error[20:40] <= 1.0)
    without = VisibilityModel.fit(features, z, k=5, meta={})  # no groups: no row errors
    assert without.row_error is None


def test_off_the_tables_map_the_range_widens_with_the_distance_to_the_neighbours(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    features, z, n60 = _synthetic(rng, 3000)
    model = VisibilityModel.fit(features, z, k=10, meta={}, groups=np.arange(3000) % 30)
    assert model.neighbour_distance > 0
    on_map = features[:50] + rng.normal(0, 0.01, (50, features.shape[1]))
    off_map = on_map + 3 * features.std(axis=0)  # three standard deviations away in every feature
    n = np.full(50, 5000)
    near_half, far_half = model.predict(on_map, n)[1], model.predict(off_map, n)[1]
    blind = replace(model, neighbour_distance=0.0)  # the same table without the widening
    assert np.median(far_half / blind.predict(off_map, n)[1]) > 2  # far: several times wider
    assert np.mean(near_half == blind.predict(on_map, n)[1]) >= 0.9  # on the map: (nearly all) unchanged
    model.save(tmp_path / "m.npz")
    assert VisibilityModel.load(tmp_path / "m.npz").neighbour_distance == pytest.approx(model.neighbour_distance)


def test_on_the_map_nearer_neighbours_give_a_narrower_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    spread, z_spread, _ = _synthetic(rng, 2000)
    # One situation the calibration saw many times (20 runs of it, each its own group) beside
    # situations seen once each: its rows are far nearer to each other than the others are.
    twins = spread[:1] + rng.normal(0, 0.005, (400, spread.shape[1]))
    features = np.concatenate([spread, twins])
    z = np.concatenate([z_spread, np.full(400, z_spread[0]) + rng.normal(0, 0.03, 400)])
    groups = np.concatenate([np.arange(2000) % 30, 30 + np.arange(400) % 20])
    model = VisibilityModel.fit(features, z, k=10, meta={}, groups=groups)
    assert model.near_distance == pytest.approx(NEAR_SHARE * model.neighbour_distance)
    plain = replace(model, near_distance=0.0)  # the same table without the narrowing
    n = np.full(50, 5000)
    well_known = spread[:1] + rng.normal(0, 0.005, (50, spread.shape[1]))
    distance = plain._tree.query(plain.standardised(well_known), k=model.k, eps=SEARCH_EPS)[0].mean(axis=1)
    expected = np.minimum(distance / model.near_distance, 1.0) ** NEAR_POWER
    assert np.all(expected < 0.5)  # among its twins: far nearer than half the map's edge
    np.testing.assert_allclose(model.predict(well_known, n)[1], plain.predict(well_known, n)[1] * expected, rtol=1e-6)
    # Seen once (its neighbours at the table's usual distances), and off the map, nothing changes.
    seen_once = spread[1000:1050] + rng.normal(0, 0.005, (50, spread.shape[1]))
    np.testing.assert_allclose(model.predict(seen_once, n)[1], plain.predict(seen_once, n)[1])
    off_map = seen_once + 3 * spread.std(axis=0)
    np.testing.assert_allclose(model.predict(off_map, n)[1], plain.predict(off_map, n)[1])
    model.save(tmp_path / "m.npz")
    assert VisibilityModel.load(tmp_path / "m.npz").near_distance == pytest.approx(model.near_distance)
    # A table written before the narrowing loads without it.
    plain.save(tmp_path / "plain.npz")
    assert VisibilityModel.load(tmp_path / "plain.npz").near_distance == 0.0



def test_repeated_curves_get_the_same_prediction_as_when_predicted_alone() -> None:
    # predict searches each distinct row once and hands the result to its copies: the answer
    # for every row, on the map and off it, must be the one it gets on its own.
    rng = np.random.default_rng(21)
    features, z, n60 = _synthetic(rng, 2000)
    model = VisibilityModel.fit(features, z, k=10, meta={}, groups=np.arange(2000) % 20)
    rows = np.concatenate([features[:5], features[:5] + 4 * features.std(axis=0)])  # on and off the map
    batch = rows[rng.integers(0, len(rows), 40)]  # 40 rows, only 10 distinct
    sizes = rng.choice([150, 5000], len(batch))
    z_hat, half = model.predict(batch, sizes)
    for i in range(len(batch)):
        alone_z, alone_half = model.predict(batch[i:i + 1], sizes[i:i + 1])
        assert (z_hat[i], half[i]) == (alone_z[0], alone_half[0])
    assert len(np.unique(half)) > 2  # not a degenerate table: the rows' answers differ

def test_calibrate_quick_writes_a_usable_table(tmp_path: Path) -> None:
    from streams.core.settings import Settings
    from streams.tools.calibrate import QUICK_HELD_OUT_RUNS, QUICK_TABLE_RUNS, calibrate, left_out_scores

    model, summary = calibrate(QUICK_TABLE_RUNS, QUICK_HELD_OUT_RUNS, Settings(), workers=1, cache=tmp_path / "curves")
    model.save(tmp_path / "quick.npz")
    again = VisibilityModel.load(tmp_path / "quick.npz")
    assert summary["rows"] == len(again.z) > 500 and again.row_error is not None
    assert summary["held_out_rows"] > 200 and 0.85 <= summary["held_out_coverage_90"] <= 0.95
    assert again.meta["table_runs"] == [r.describe() for r in QUICK_TABLE_RUNS]
    # `calibrate --without`'s check of a story left out scores rows as calibrate scores its
    # held-out ones: the same runs give the same figures.
    left_out = left_out_scores({"quick": model}, QUICK_HELD_OUT_RUNS, Settings(), 1, tmp_path / "curves")["quick"]
    assert (left_out["rows"], left_out["mape"], left_out["coverage_90"]) == (
        summary["held_out_rows"], summary["held_out_mape"], summary["held_out_coverage_90"])
    assert list(left_out["by_run"]) == [r.label() for r in QUICK_HELD_OUT_RUNS]
    assert np.all(np.asarray(again.spread_90) > 0) and np.isfinite(again.z).all()
    # The shipped kind: a linear fit over 40 rows, with a penalty, on every feature: the
    # network flag (the city's rows), the growth and the venue flag (the stadium's and arena's).
    assert (again.k, again.ridge, again.table.shape[1]) == (40, 0.3, len(FEATURE_NAMES))
    assert again.table[:, 15].std() > 0 and again.table[:, 16].std() > 0 and again.table[:, 18].std() > 0
    # ... with the mean of the 10 nearest on the first 15 and the venue flag as its companion,
    # on the same rows, its columns named in the file.
    assert again.companion is not None and (again.companion.k, again.companion.columns) == (10, (*range(15), 18))
    np.testing.assert_array_equal(again.companion.table, again.table[:, again.companion.columns])
    assert again.companion.row_error is not None and len(again.companion.z) == len(again.z)
    # --nearest-mean (the same runs' curves, from the cache): the mean of 10 on the first 15 features.
    mean, mean_summary = calibrate(QUICK_TABLE_RUNS, QUICK_HELD_OUT_RUNS, Settings(), workers=1, cache=tmp_path / "curves",
                                   nearest_mean=True)
    assert (mean.k, mean.ridge, mean.table.shape[1], mean.companion) == (10, 0.0, 15, None)
    assert mean_summary["rows"] == summary["rows"] and 0 < mean_summary["held_out_mape"] < 1
    # Either kind reads the worker's features.
    features = curve_features(np.array([[10, 40, 100, 160, 200, 180, 150, 90, 50]]),
                              np.array([100, 400, 800, 1200, 2000, 1900, 1600, 1200, 800]))
    for m in (again, mean):
        z, half = m.predict(features, np.array([200]))
        assert np.isfinite(z).all() and (half > 0).all()


def test_calibrate_without_a_story_scores_that_story_beside_the_table_that_has_seen_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from streams.tools.calibrate import QUICK_HELD_OUT_RUNS, run

    monkeypatch.delenv("CROWDPULSE_VISIBILITY_MODEL", raising=False)
    args = argparse.Namespace(truth=None, frames=None, events=None, check=False, min_people=0, blend=False, quick=True, without="steady",
                              out=str(tmp_path / "no-steady.npz"), workers=1, cache=tmp_path / "curves", nearest_mean=False,
                              json=True)
    assert run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    steady = [r.label() for r in QUICK_HELD_OUT_RUNS if r.scenario == "steady"]
    # The table was built without the steady story and held out without it...
    assert not any("steady" in r for r in summary["table_runs"] + summary["held_out_runs"])
    # ... and scored on the steady story's held-out run, beside the shipped table, which has seen it.
    without, shipped = summary["left_out"]["without"], summary["left_out"]["with"]
    assert list(without["by_run"]) == list(shipped["by_run"]) == steady
    assert without["rows"] == shipped["rows"] > 100
    # Two tables, two answers (which is better on this half hour of a small run says nothing).
    assert 0 < shipped["mape"] < 1 and 0 < without["mape"] < 1 and shipped["mape"] != without["mape"]


# --- deterministic and complete: an estimate is a function of the counts it reads -----------


def _varied_model() -> VisibilityModel:
    """A table whose answer depends on the features (so on the reference's curve too)."""
    rng = np.random.default_rng(11)
    features = rng.random((400, len(FEATURE_NAMES)))
    return VisibilityModel(
        table=features.astype(np.float32), z=features[:, -1] - 0.5, mean=np.zeros(len(FEATURE_NAMES)),
        scale=np.ones(len(FEATURE_NAMES)), k=5, spread_90=np.ones(len(SIZE_EDGES) + 1), spread_floor=0.05, meta={},
    )


def _final_people(batches: list[dict], newest: int) -> dict:
    people = PeopleModel.for_areas(_varied_model(), AREAS, default_share=0.5, sims=1.0)
    book = WindowBook(AREAS, (300, 900, 3600), 0, 60_000, keep_buckets=5, people=people)
    for batch in batches:
        book.update(batch, newest=newest)
    return {(a, w): (e["people"], e["people_low"], e["people_high"]) for (a, w), e in book.published[7].items()}


def test_the_same_counts_give_the_same_estimates_whatever_order_they_came_in() -> None:
    complete = _curve_counts(7)
    # The reference (city) first counted while still filling, then complete; the other areas
    # only once, in between: each must end estimated against the complete reference.
    partial_city = {k: (v // 4 if k[2].length_s <= 300 else v) for k, v in complete.items() if k[0] == "city"}
    others = {k: v for k, v in complete.items() if k[0] != "city"}
    city = {k: v for k, v in complete.items() if k[0] == "city"}
    at_once = _final_people([complete], newest=8)
    in_two_orders = _final_people([partial_city, others, city], newest=8)
    assert at_once == in_two_orders
    assert _final_people([city, others], newest=8) == at_once


def test_a_divided_areas_estimates_are_reconciled_whichever_of_them_is_asked_for() -> None:
    people = PeopleModel.for_areas(_varied_model(), AREAS, default_share=0.5, sims=1.0)
    assert people.divisions == (("city", ("east-district", "west-district")),)
    curves = {a: np.array([n * (i + 1) for n in [100, 300, 600, 800, 1000, 900, 700, 500, 400]])
              for i, a in enumerate(AREAS.area_ids)}
    everyone = people.estimate(curves)
    alone = people.estimate({a: c for a, c in curves.items() if a != "east-district"})  # the division is not whole
    assert people.estimate(curves, {"west-district"}) == {"west-district": everyone["west-district"]}
    assert everyone["west-district"] != alone["west-district"]  # reconciled with the city and the east district
    assert everyone["stadium"] == alone["stadium"]  # in no division: as before
    whole, parts = everyone["city"], [everyone["east-district"], everyone["west-district"]]
    own = alone["west-district"]
    assert (own.low, own.high) == (parts[1].low, parts[1].high)  # the range is its own counts'
    assert whole.people < own.people  # here the city holds fewer than the district alone reads:
    assert parts[1].people < own.people  # the district comes down, as far as its range allows


def test_a_divisions_estimates_are_the_same_whatever_order_its_counts_came_in() -> None:
    complete = _curve_counts(7)
    # The west district first counted while still filling, then complete; the rest of the
    # division (the city, the east district) in between.
    partial_west = {k: (v // 4 if k[2].length_s <= 300 else v) for k, v in complete.items() if k[0] == "west-district"}
    west = {k: v for k, v in complete.items() if k[0] == "west-district"}
    others = {k: v for k, v in complete.items() if k[0] != "west-district"}
    at_once = _final_people([complete], newest=8)
    assert _final_people([partial_west, others, west], newest=8) == at_once
    assert _final_people([others, west], newest=8) == at_once


def test_a_worker_that_owns_one_part_counts_the_rest_of_its_division() -> None:
    people = PeopleModel.for_areas(_varied_model(), AREAS, default_share=0.5, sims=1.0)
    book = PointBook(AREAS, (300, 900, 3600), keep_buckets=5, people=people)
    needed = book.needed([("west-district", 7)], owned=["west-district"])
    assert needed == [("city", 7), ("east-district", 7), ("west-district", 7)]
    assert book.needed([("stadium", 7)], owned=["stadium"]) == [("city", 7), ("stadium", 7)]  # the reference only
    complete = _curve_counts(7)
    book.update({k: v for k, v in complete.items() if k[0] in {"city", "east-district", "west-district"}}, newest=8, filling=None)
    book.forget_areas(["west-district"])  # the curves of its division stay
    assert set(book.curves[7]) == {"city", "east-district", "west-district"}


def test_the_newest_minute_still_filling_keeps_the_previous_window_ends_people() -> None:
    people = PeopleModel.for_areas(_varied_model(), AREAS, default_share=0.5, sims=1.0)
    book = WindowBook(AREAS, (300, 900, 3600), 0, 60_000, keep_buckets=5, people=people)
    book.update(_curve_counts(6), newest=6)
    settled = {e["area"]: e["people"] for e in book.published[6].values()}
    # Minute 7 has just begun: its curve's newest minute is nearly empty.
    filling = {k: (v // 20 if k[2].skip_s == 0 and k[2].length_s == 60 else v) for k, v in _curve_counts(7).items()}
    live = {e["area"]: e["people"] for e in book.update(filling, newest=7) if e["window_s"] == 900}
    assert live == settled
    # Once stream time has moved on, minute 7's own (complete) counts decide.
    book.update(_curve_counts(7), newest=8)
    assert {e["area"]: e["people"] for e in book.published[7].values()} == {
        a: people.estimate({x: np.array([n * (i + 1) for n in [100, 300, 600, 800, 1000, 900, 700, 500, 400]])
                            for i, x in enumerate(AREAS.area_ids)})[a].people for a in AREAS.area_ids
    }


def test_a_minute_estimated_while_filling_is_estimated_again_once_over_whether_or_not_counts_come_in() -> None:
    """A feed that delivers each minute whole (an accelerated replay) sends nothing more for a
    minute once stream time is in it: minute 7's counts come in once, complete, while it is
    filling, and never again. When stream time moves on, minute 7 is estimated from its own
    curve all the same, and minute 8, filling, takes minute 7's own people (not the copy of
    minute 6's). Without it, every later minute copied minute 6 for good."""
    people = PeopleModel.for_areas(_varied_model(), AREAS, default_share=0.5, sims=1.0)
    book = WindowBook(AREAS, (300, 900, 3600), 0, 60_000, keep_buckets=5, people=people)
    book.update(_curve_counts(6), newest=6)
    settled = {e["area"]: e["people"] for e in book.published[6].values()}
    book.update(_curve_counts(7, scale=3), newest=7)
    assert {e["area"]: e["people"] for e in book.published[7].values()} == settled  # held while filling

    def own(scale: int) -> dict[str, int]:
        curves = {x: np.array([n * (i + 1) * scale for n in [100, 300, 600, 800, 1000, 900, 700, 500, 400]])
                  for i, x in enumerate(AREAS.area_ids)}
        return {a: e.people for a, e in people.estimate(curves).items()}

    assert own(3) != settled  # minute 7's own curve says otherwise (so the checks below can fail)
    changed = book.update(_curve_counts(8, scale=5), newest=8)  # nothing more of minute 7
    assert {e["area"]: e["people"] for e in book.published[7].values()} == own(3)
    assert {e["area"] for e in changed if e["as_of"] == 8 * 60_000} == set(AREAS.area_ids)  # republished
    assert {e["area"]: e["people"] for e in book.published[8].values()} == own(3)  # filling: minute 7's own
    book.update({}, newest=9)
    assert {e["area"]: e["people"] for e in book.published[8].values()} == own(5)
    assert book.points.held == {}  # nothing is held once no window end is filling with a copy


# --- ranges that respect the counts -----------------------------------------------------------


def test_a_range_never_leaves_what_the_counts_allow() -> None:
    # N(1) = 400 phones were seen in the last minute; N(60) = 1,000 in the hour: at least 400 and at
    # most 1,000 / 0.2, each widened by HyperLogLog's 90% error (1.3%).
    curve = np.array([[400, 600, 800, 900, 1000, 700, 500, 300, 200]])
    low, high = count_bounds(curve, HLL_STANDARD_ERROR, Z_90)
    assert 390 < low[0] < 400 and 5000 < high[0] < 5070
    # A model that says 5% of that (z = log 0.05) with a wide range is cut at the floor and the ceiling.
    people, lo, hi = people_from(curve[:, 4], np.array([math.log(0.05)]), np.array([3.0]), np.array([1.0]), 1.0,
                                 (low, high))
    assert lo[0] == math.floor(low[0]) and people[0] == round(low[0]) and hi[0] >= lo[0]
    people, lo, hi = people_from(curve[:, 4], np.array([math.log(50.0)]), np.array([3.0]), np.array([1.0]), 1.0,
                                 (low, high))
    assert hi[0] == math.ceil(high[0]) and people[0] == round(high[0])
    # A sound range inside the bounds is left as it was.
    people, lo, hi = people_from(curve[:, 4], np.array([0.0]), np.array([0.1]), np.array([1.0]), 1.0, (low, high))
    assert (people[0], lo[0], hi[0]) == (1000, math.floor(1000 * math.exp(-0.1)), math.ceil(1000 * math.exp(0.1)))


# --- two estimators on one table: each estimate weighed by their neighbours' own errors ----------


def _pair(main_error: float, companion_error: float) -> VisibilityModel:
    """A local fit over every feature and a mean of 10 on the first 15, on the same rows, with
    the row errors given."""
    rng = np.random.default_rng(31)
    features = rng.random((600, len(FEATURE_NAMES)))
    z = 0.8 * features[:, 2] - 0.5 * features[:, 16] + rng.normal(0, 0.02, 600)
    main = VisibilityModel.fit(features, z, k=40, meta={}, ridge=0.3)
    companion = VisibilityModel.fit(features[:, :15], z, k=10, meta={})
    main = replace(main, row_error=np.full(600, main_error, dtype=np.float32))
    companion = replace(companion, row_error=np.full(600, companion_error, dtype=np.float32))
    return replace(main, companion=companion)


def test_each_estimate_leans_on_the_estimator_whose_neighbours_it_knows_better() -> None:
    probe = np.random.default_rng(32).random((20, len(FEATURE_NAMES)))
    n60 = np.full(20, 5000)
    fit_alone = replace(_pair(0.1, 0.1), companion=None)
    mean_alone = _pair(0.1, 0.1).companion
    assert mean_alone is not None
    fit_z, mean_z = fit_alone.predict(probe, n60)[0], mean_alone.predict(probe, n60)[0]
    assert np.abs(fit_z - mean_z).mean() > 0.02  # the two answer differently
    # Errors 0.1 and 0.01: weights 1/0.01 and 1/0.0001, the companion's 100/101.
    np.testing.assert_allclose(_pair(0.1, 0.01).predict(probe, n60)[0], (fit_z + 100 * mean_z) / 101, atol=1e-9)
    np.testing.assert_allclose(_pair(0.01, 0.1).predict(probe, n60)[0], (100 * fit_z + mean_z) / 101, atol=1e-9)
    # Equal errors: halfway, and a range of that error.
    z, half = _pair(0.1, 0.1).predict(probe, n60)
    np.testing.assert_allclose(z, (fit_z + mean_z) / 2, atol=1e-9)
    np.testing.assert_allclose(half, 0.1)


def test_a_table_with_a_companion_round_trips_through_its_file(tmp_path: Path) -> None:
    model = _pair(0.2, 0.05)
    model.save(tmp_path / "pair.npz")
    again = VisibilityModel.load(tmp_path / "pair.npz")
    assert again.companion is not None and (again.companion.k, again.companion.table.shape[1]) == (10, 15)
    probe = np.random.default_rng(33).random((30, len(FEATURE_NAMES)))
    n60 = np.full(30, 5000)
    # The stored grid and z to 1e-3: the same estimates to that resolution, but where the
    # rounding flips a near tie between two neighbours (one probe in 30 here on a grid of 1/64).
    differ = np.abs(again.predict(probe, n60)[0] - model.predict(probe, n60)[0])
    assert np.count_nonzero(differ > 0.01) <= 2 and np.median(differ) < 0.002
    # What was stored is stored exactly: a second round trip changes nothing.
    again.save(tmp_path / "twice.npz")
    twice = VisibilityModel.load(tmp_path / "twice.npz")
    np.testing.assert_array_equal(twice.predict(probe, n60)[0], again.predict(probe, n60)[0])
    with pytest.raises(ValueError, match="companion"):
        replace(model, companion=replace(model.companion, row_error=None))  # type: ignore[arg-type]


def test_an_area_as_its_own_reference_is_answered_by_the_local_fit_alone() -> None:
    rng = np.random.default_rng(34)
    curves = np.sort(rng.integers(50, 5000, (12, CURVE_LENGTH)), axis=1).astype(float)
    curves[0, 0] = 0.0  # no phone in the last minute: its relative feature is 0, not 1
    alone = np.concatenate([curve_features(c, c) for c in curves])
    network = np.concatenate([curve_features(c, c, network=True) for c in curves])
    in_city = curve_features(curves, curves[5] * 1.3)
    assert own_reference(alone).all() and not own_reference(network).any()
    assert not own_reference(np.delete(in_city, 5, axis=0)).any()
    assert not own_reference(alone[:, :15]).any()  # a table without the flag cannot tell
    n60 = curves[:, N60]
    pair = _pair(0.1, 0.01)  # the companion's errors are 10x smaller: it carries 100/101 elsewhere
    fit_alone = replace(pair, companion=None)
    np.testing.assert_allclose(pair.predict(alone, n60)[0], fit_alone.predict(alone, n60)[0], atol=1e-12)
    weighed = pair.predict(network, n60)[0]
    assert np.abs(weighed - fit_alone.predict(network, n60)[0]).max() > 0.01


def test_the_estimators_search_stays_within_its_tolerance_of_the_exact_neighbours() -> None:
    model = VisibilityModel.load(Settings.from_env({}).visibility_model_path)
    rng = np.random.default_rng(8)
    rows = model.table.astype(np.float64)[rng.integers(0, len(model.table), 200)]
    for noise in (0.05, 1.5):
        probes = rows + rng.normal(0.0, noise, rows.shape)
        exact, exact_rows = model._tree.query(probes, k=model.k)
        found, found_rows = model._tree.query(probes, k=model.k, eps=SEARCH_EPS)
        # Never nearer than the true neighbours, never farther than the tolerance from the k-th.
        assert np.all(found >= exact - 1e-9)
        assert np.all(found[:, -1] <= (1 + SEARCH_EPS) * exact[:, -1] + 1e-9)
        shared = np.mean([len(set(a) & set(b)) for a, b in zip(exact_rows, found_rows)]) / model.k
        assert shared > (0.98 if noise < 1 else 0.8), (noise, shared)


def test_where_the_neighbours_disagree_the_range_widens_and_the_estimate_stays(tmp_path: Path) -> None:
    # Two situations side by side, each seen in ten runs and well known (each row predicted
    # from the other runs of its situation: small row errors), with different z: a stadium in
    # play (z 0) and one emptying (z -0.6), say.
    rng = np.random.default_rng(14)
    background, z_background, _ = _synthetic(rng, 2000)  # other situations, all over the map
    centre = rng.random(16)
    step = np.zeros(16)
    step[0] = 0.05
    in_play = centre + rng.normal(0, 0.005, (200, 16))
    emptying = centre + step + rng.normal(0, 0.005, (200, 16))
    features = np.concatenate([background, in_play, emptying])
    z = np.concatenate([z_background, np.r_[np.zeros(200), np.full(200, -0.6)] + rng.normal(0, 0.01, 400)])
    groups = np.concatenate([np.arange(2000) % 30, 30 + np.arange(200) % 10, 40 + np.arange(200) % 10])
    # Without the narrowing of near neighbours, which scales the whole error, disagreement included.
    plain = replace(VisibilityModel.fit(features, z, k=10, meta={}, groups=groups), near_distance=0.0)
    model = replace(plain, disagreement=True)
    n = np.full(20, 5000)
    between = np.repeat([centre + step / 2], 20, axis=0)  # half way: neighbours of both
    inside = centre + rng.normal(0, 0.002, (20, 16))  # among the ones in play
    # Each neighbour well known: a range far narrower than the gap between the two situations.
    assert np.all(plain.predict(between, n)[1] < 0.2)
    # With their disagreement, about half the gap either side of the estimate between them.
    assert np.all(model.predict(between, n)[1] > 0.25)
    assert np.all(model.predict(between, n)[1] > 1.5 * plain.predict(between, n)[1])
    assert np.all(model.predict(inside, n)[1] < 1.5 * plain.predict(inside, n)[1])
    for probe in (between, inside):  # the estimate is the same: only its range says more
        np.testing.assert_array_equal(model.predict(probe, n)[0], plain.predict(probe, n)[0])
    model.save(tmp_path / "m.npz")
    assert VisibilityModel.load(tmp_path / "m.npz").disagreement
    plain.save(tmp_path / "plain.npz")  # a table written before: its factors were fitted without it
    assert not VisibilityModel.load(tmp_path / "plain.npz").disagreement


def test_the_worker_publishes_an_areas_blend_from_its_5_minute_count() -> None:
    settings = Settings()
    areas = load_areas(DEFAULT_AREAS)
    table = VisibilityModel.load(settings.visibility_model_path)
    corrections = {"stadium": {"kind": "blend", "dz": math.log(2.0), "weight": 1.0, "half": 0.1}}
    model = PeopleModel.for_areas(replace(table, meta={**table.meta, "area_corrections": corrections}), areas,
                                  settings.market_share, settings.sims_per_person)
    plain = PeopleModel.for_areas(table, areas, settings.market_share, settings.sims_per_person)
    # N(1), N(5), N(15), N(30), N(60), O(5), O(15), O(30), P(15): the same curve everywhere.
    curve = np.array([100, 400, 900, 1400, 2000, 1900, 1500, 1000, 800], dtype=np.float64)
    curves = {a: curve for a in areas.area_ids}
    stadium = model.estimate(curves)["stadium"]
    per_person = settings.market_share * settings.sims_per_person
    # All the weight on the 5-minute count: twice its 400 phones, as people; range +-0.1 in log.
    assert stadium.people == round(2 * 400 / per_person)
    assert stadium.low == math.floor(800 * math.exp(-0.1) / per_person)
    assert stadium.high == math.ceil(800 * math.exp(0.1) / per_person)
    # Every other area is estimated as before.
    assert {a: e for a, e in model.estimate(curves).items() if a != "stadium"} == \
        {a: e for a, e in plain.estimate(curves).items() if a != "stadium"}
