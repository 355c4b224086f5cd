"""How many of the operator's phones are in an area now, from the shape of its window curve.

A window of W minutes sees only the phones that signalled in it: an idle phone reports every
54 minutes (T3412), an active one more often, a phone that walked in while connected or from
another tracking area at once. So the distinct count N(W) grows with W, and how it grows tells
who is there: a settled crowd is seen slowly but completely by 54 minutes; people passing
through are seen at once and are gone an hour later. See docs/estimation.md.

The model reads, per area and window end, nine HyperLogLog counts (the *curve*):
- N(1), N(5), N(15), N(30), N(60): distinct phones in the last 1, 5, 15, 30, 60 minutes;
- O(5), O(15), O(30): distinct phones in the hour's older part, minutes 60..5, 60..15, 60..30;
- P(15): distinct phones in the quarter hour before the last, minutes 30..15.
N(s) + O(s) - N(60) is then how many were seen both before and after s minutes ago (seen
again: settled people are, passers-by are not); N(15) / P(15) is how the area is changing (a
crowd arriving or leaving, or a steady stream).

From them it forms scale-free features (fractions of N(60), the same fractions relative to a
reference area that covers the whole network, which carries the hour's general level of
activity, whether the curve is the network's own, the growth over the last two quarter hours,
and whether the area is a venue), and estimates z = log(phones present / N(60)) by the nearest
calibrated situations: a linear fit over the k most similar rows (local_linear), weighed per
estimate against the mean z of the 10 nearest on the first 15 features and the venue flag (the
companion; a table written with `calibrate --nearest-mean`, or before, answers that mean alone;
it has no network flag, so an area that is its own reference is answered by the fit alone), of
a table computed from simulator runs with known truth (`crowdpulse calibrate`,
streams/tools/calibrate.py). The uncertainty is local: each table row knows its own error when
predicted from other situations, and an estimate's error is that of its neighbours, scaled with
their distance (narrower where they are nearer than half the table's rows are from each other,
wider off the table's map), widened where the neighbours disagree about z (each may be well
known, yet they are different situations: the query lies between them), and per size class so
that 90% of held-out calibration points fall inside.

Pure: numpy, and scipy's k-d tree for the neighbour search at run time.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from streams.core.windows import Span

#: Recent windows (minutes) and the older spans' splits (minutes) of the curve.
RECENT_MIN = (1, 5, 15, 30, 60)
SPLIT_MIN = (5, 15, 30)
HOUR_MIN = 60
#: The quarter hour before the last (minutes): P(15), the count N(15) had 15 minutes ago.
GROWTH_MIN = 15
#: The curve as Redis spans (skip, length) in seconds: the span ends `skip` before the window end.
CURVE_SPANS_S: tuple[Span, ...] = tuple(Span(0, m * 60) for m in RECENT_MIN) + tuple(
    Span(s * 60, (HOUR_MIN - s) * 60) for s in SPLIT_MIN
) + (Span(GROWTH_MIN * 60, GROWTH_MIN * 60),)
CURVE_LENGTH = len(CURVE_SPANS_S)
N60 = RECENT_MIN.index(HOUR_MIN)
N15 = RECENT_MIN.index(GROWTH_MIN)
N5 = RECENT_MIN.index(5)
P15 = CURVE_LENGTH - 1
FEATURE_NAMES = (
    [f"n{m}/n60" for m in RECENT_MIN[:-1]]
    + [f"n{m}/n60 rel" for m in RECENT_MIN[:-1]]
    + [f"seen again {s}/n60" for s in SPLIT_MIN]
    + [f"seen again {s}/n60 rel" for s in SPLIT_MIN]
    + ["reference n15/n60", "the network itself", "growth n15/p15", "growth n15/p15 rel", "a venue"]
)
#: Feature columns a table may hold: the first 15 (tables written before the network flag), 16
#: (before the growth features), 18 (before the venue flag) or all of them. A table reads the
#: first ones it holds, unless it names its columns (VisibilityModel.columns).
TABLE_COLUMNS = (15, 16, 18, len(FEATURE_NAMES))
_FLOOR = 1e-3
#: Feature columns: each shape feature and its relative twin, the network flag, the relative growth.
_BASE_COLUMNS = [FEATURE_NAMES.index(n[: -len(" rel")]) for n in FEATURE_NAMES if n.endswith(" rel") and "growth" not in n]
_RELATIVE_COLUMNS = [i for i, n in enumerate(FEATURE_NAMES) if n.endswith(" rel") and "growth" not in n]
_NETWORK = FEATURE_NAMES.index("the network itself")
_GROWTH_RELATIVE = FEATURE_NAMES.index("growth n15/p15 rel")
VENUE = FEATURE_NAMES.index("a venue")
#: Rows per leaf of the neighbour-search tree (VisibilityModel._tree).
TREE_LEAF_ROWS = 256
#: The neighbour search's tolerance: each neighbour found is within 1 + SEARCH_EPS of the
#: distance of the true k-th nearest row (scipy's approximate k-d tree search). Off the table's
#: map the exact search visits most of the tree, and the local fit's 40 neighbours and the
#: companion's 10 made the estimator 4-5 times dearer than the mean of 10 alone there. With 0.5,
#: on 2,000 held-out rows: 99.7% of the neighbours the same on the map, 95.0% far off it (noise
#: of 1.5 standard deviations) at a mean distance 0.1% longer; the search 1.5-2.2x faster; every
#: cell of the robustness matrix within 0.1 point of the exact search's MAPE, with the same false
#: `critical` counts but one (docs/performance.md).
SEARCH_EPS = 0.5
#: Size classes (phones seen in the hour) whose ranges are calibrated separately: a small area's
#: counts are noisier than a large one's, and one factor for all would be too wide for one and
#: too narrow for the other.
SIZE_EDGES = (100, 300, 1000, 3000, 10_000, 30_000)
_MIN_CLASS_ROWS = 50
#: The smallest error an estimator's weight is computed from (VisibilityModel.predict).
_MIN_ERROR = 1e-3
#: Within the table's map, an estimate's error scales with the square root of its neighbours'
#: distance up to this share of the map's edge (the 95th percentile: neighbour_distance), and
#: stays flat from there to the edge. A network unlike the calibration's lies farther from the
#: table as a whole, and its errors are larger than its neighbours' own say. Chosen on
#: calibrate's held-out runs (the lowest run's coverage and the spread between runs, of powers
#: 0.25-0.75 and shares 0.3-1), never on the robustness matrix
#: (docs/estimation-history.md, "Ranges by distance").
NEAR_SHARE = 0.5
NEAR_POWER = 0.5


def size_class(n60: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(SIZE_EDGES), np.asarray(n60), side="right")


def curve_features(curves: np.ndarray, reference: np.ndarray, network: bool | np.ndarray = False,
                   venue: bool | np.ndarray = False) -> np.ndarray:
    """Features of curves (n, 9) against the reference area's curve (9,) at the same window end.

    `network` (one flag, or one per curve): the curve is the whole network's own, the reference
    covering every cell. Its relative features are all 1, as are those of a venue that is its
    own reference (a deployment with no network around it), but the two are different
    situations: nobody passes through the whole network in an hour, while a venue's hour holds
    everyone who crossed it. Without the flag, a quiet network's city was estimated 25-36% low
    from venues' rows as their own references (docs/estimation.md).

    The growth, log((N(15) + 1) / (P(15) + 1)), and the same less the reference's: the hour's
    shape alone does not tell a crowd arriving in a quiet network (seen once, not yet again)
    from a steady stream of passers-by; the last two quarter hours do (docs/estimation.md).

    `venue` (one flag, or one per curve): the area is a venue (its `kind` in the areas file,
    AreaMap.venues), where a crowd comes for an event and stays through it. Its counts can read
    like a district's as the crowd walks home through it: a settled crowd seen about once per
    periodic update and a stream of passers-by each seen once as they pass both give N(W) / N(60)
    near W / 60, and only how many of the hour's phones are still there differs
    (docs/estimation-history.md, "Venues and the rest")."""
    curves = np.asarray(curves, dtype=np.float64).reshape(-1, CURVE_LENGTH)
    reference = np.asarray(reference, dtype=np.float64).reshape(CURVE_LENGTH)

    def shape(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n60 = np.maximum(c[..., N60], 1.0)
        recent = c[..., : N60] / n60[..., None]
        again = np.stack([
            np.maximum(c[..., RECENT_MIN.index(s)] + c[..., len(RECENT_MIN) + j] - c[..., N60], 0.0)
            for j, s in enumerate(SPLIT_MIN)
        ], axis=-1) / n60[..., None]
        return recent, again

    def growth(c: np.ndarray) -> np.ndarray:
        return np.log((c[..., N15] + 1.0) / (c[..., P15] + 1.0))

    recent, again = shape(curves)
    ref_recent, ref_again = shape(reference)
    grows = growth(curves)
    return np.concatenate([
        recent,
        recent / np.maximum(ref_recent, _FLOOR),
        again,
        again / np.maximum(ref_again, _FLOOR),
        np.full((len(curves), 1), ref_recent[RECENT_MIN.index(15)]),
        np.broadcast_to(np.asarray(network, dtype=np.float64), (len(curves),))[:, None],
        grows[:, None],
        (grows - growth(reference))[:, None],
        np.broadcast_to(np.asarray(venue, dtype=np.float64), (len(curves),))[:, None],
    ], axis=1)


@dataclass(frozen=True)
class VisibilityModel:
    """Nearest-neighbour calibration table: standardised features and their known z."""

    table: np.ndarray  # (rows, features) float32, standardised
    z: np.ndarray  # (rows,) log(phones present / N(60))
    mean: np.ndarray  # (features,) standardisation
    scale: np.ndarray
    k: int
    #: Per size class (SIZE_EDGES), the multiplier of the local error that held 90% of the
    #: held-out points of that class (calibrated).
    spread_90: np.ndarray
    #: Added (in quadrature) to the local error, so that agreeing neighbours still give a
    #: range: the table's own resolution.
    spread_floor: float
    meta: dict
    #: Each row's own error when the table predicts it from *other* situations (its own area
    #: in its own run left out): how well situations like it are known. The local
    #: error of a prediction is the root mean square of its neighbours' errors.
    row_error: np.ndarray | None = None
    #: How far the table's rows are from their k nearest other situations (mean distance to
    #: them, their own group left out as for row_error): the 95th percentile over rows. A
    #: prediction whose neighbours are farther than that is off the table's map, where the
    #: neighbours' agreement says little: its error is widened by the ratio. 0: no widening.
    neighbour_distance: float = 0.0
    #: Nearer than this (NEAR_SHARE of neighbour_distance), the error narrows with the square
    #: root of the distance (NEAR_POWER). 0: no narrowing (the tables written before).
    near_distance: float = 0.0
    #: The ridge penalty of the local linear fit over the k neighbours (local_linear); 0: their
    #: plain mean z (the tables written before it).
    ridge: float = 0.0
    #: A second estimator on the same rows (the mean z of the nearest rows on the first
    #: features, with its own row errors), or None. Each estimate weighs the two by the inverse
    #: square of their neighbours' own errors: a dense, well-known situation (a stadium in play)
    #: is answered by its exact analogues, one off the map by the fit (docs/estimation.md).
    companion: VisibilityModel | None = None
    #: The feature columns the table holds, in order; () for the first table.shape[1] of them.
    columns: tuple[int, ...] = ()
    #: Whether an estimate's error also holds its neighbours' disagreement: the root mean square
    #: of their z around the estimate (`_local`). Each neighbour's own error says how well its
    #: situation is known; when the neighbours are two situations with different z (a stadium in
    #: play and one emptying), each is well known and the answer between them is not. The size
    #: classes' factors are fitted with it (with_coverage). False: the tables written before
    #: (their factors were fitted without it).
    disagreement: bool = False

    def __post_init__(self) -> None:
        if self.columns and (self.table.ndim != 2 or len(self.columns) != self.table.shape[1]):
            raise ValueError("a calibration table's named columns must be its columns")
        if not self.columns and (self.table.ndim != 2 or self.table.shape[1] not in TABLE_COLUMNS):
            raise ValueError(f"the calibration table must have {len(FEATURE_NAMES)} feature columns "
                             f"(or, written before, {', '.join(map(str, TABLE_COLUMNS[:-1]))})")
        if len(self.z) != len(self.table) or len(self.table) < self.k or self.k < 2:
            raise ValueError("the calibration table needs at least k >= 2 rows with a z each")
        if self.companion is not None and (len(self.companion.z) != len(self.z) or self.companion.row_error is None):
            raise ValueError("the companion estimator must have the table's rows, each with its error")
        if np.shape(self.spread_90) != (len(SIZE_EDGES) + 1,):
            raise ValueError(f"the calibration table needs {len(SIZE_EDGES) + 1} range factors (one per size class): "
                             "run crowdpulse calibrate")

    @cached_property
    def _tree(self) -> cKDTree:
        """The table as a k-d tree: the k nearest rows as a brute-force search finds them (to
        SEARCH_EPS), about 20x faster for 300 areas (30 ms instead of 700 ms here, exact), which
        the estimator needs for every changed area at every pass.

        Leaves of TREE_LEAF_ROWS rows, split at the sliding midpoint (not the median): the same
        neighbours, found 2x faster near the table's rows and 4-9x faster far from them (2,000
        queries, the table's rows with noise of 0.05 / 0.5 / 1.5 / 3 standard deviations: 0.13 /
        0.65 / 1.39 / 1.77 s of CPU against scipy's defaults' 0.22 / 2.54 / 8.40 / 13.14 s, the
        same neighbours for every query). Far from every row, the default tree visited most of
        itself: a network unlike the calibration's cost up to 50x more per area
        (docs/performance.md)."""
        return cKDTree(self.table.astype(np.float64), leafsize=TREE_LEAF_ROWS, balanced_tree=False)

    def standardised(self, features: np.ndarray) -> np.ndarray:
        """Feature rows as the table holds them: its named columns, else the first ones (a table
        written before a feature was added reads the others)."""
        features = np.asarray(features, dtype=np.float64)
        chosen = features[:, list(self.columns)] if self.columns else features[:, : self.table.shape[1]]
        return (chosen - self.mean) / self.scale

    def predict(self, features: np.ndarray, n60: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z, 90% half-width in log space) per row of features (n60: each row's N(60))."""
        z_hat, half, _ = self.predict_readings(features, n60)
        return z_hat, half

    def predict_readings(self, features: np.ndarray, n60: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """predict's (z, half-width), and each estimator's z alone, (rows, 2): the local fit's
        and the companion's, before they are weighed (the fit's twice where the companion does
        not answer: an area as its own reference, or a table without a companion). Two readings
        of the same counts that disagree about a threshold are a reason not to decide
        (estimator.level)."""
        if not len(features):
            return np.zeros(0), np.zeros(0), np.zeros((0, 2))
        z_hat, local, by_distance, spread = self._local(features)
        wide = self._with_disagreement(local, spread)
        if self.companion is None:
            half = np.hypot(wide, self.spread_floor) * by_distance
            alone = np.stack([z_hat, z_hat], axis=1)
        else:
            # Each estimator's error off the map widens as it does alone; the weights are the
            # inverse squares of those errors, and the range is made of their weighted error
            # (with each one's neighbours' disagreement, which weighs nothing: two estimators
            # that agree with each other may still both sit between two situations).
            other_z, other_local, other_by_distance, other_spread = self.companion._local(features)
            mine = np.maximum(local * by_distance, _MIN_ERROR)
            other = np.maximum(other_local * other_by_distance, _MIN_ERROR)
            weight = other ** -2 / (mine ** -2 + other ** -2)
            # The companion reads no network flag: an area as its own reference looks to it like
            # the whole network's curve, and its neighbours' errors, measured on those rows, say
            # nothing of that confusion. The local fit alone answers such an area.
            own = own_reference(features)
            weight = np.where(own, 0.0, weight)
            alone = np.stack([z_hat, np.where(own, z_hat, other_z)], axis=1)
            z_hat = weight * other_z + (1 - weight) * z_hat
            mine_wide = np.maximum(wide * by_distance, _MIN_ERROR)
            other_wide = np.maximum(self._with_disagreement(other_local, other_spread) * other_by_distance, _MIN_ERROR)
            half = np.hypot(weight * other_wide + (1 - weight) * mine_wide, self.spread_floor)
        return z_hat, half * np.asarray(self.spread_90)[size_class(n60)], alone

    def _with_disagreement(self, local: np.ndarray, spread: np.ndarray) -> np.ndarray:
        return np.hypot(local, spread) if self.disagreement else local

    def _local(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """z, the local error (its neighbours' errors), the distance factor (the off-map
        widening, >= 1, times, on the map, the narrowing of near neighbours, <= 1) and the
        neighbours' disagreement (the root mean square of their z around this z) per row."""
        x = self.standardised(features)
        # Identical curves (small areas with the same handful of devices, say) have identical
        # neighbours: each distinct row is searched once. That matters off the table's map,
        # where one search visits much of the tree (2 ms instead of 0.1 ms here).
        distinct, inverse = np.unique(x, axis=0, return_inverse=True)
        # Thousands of searches (a pass over thousands of areas) are shared out over every core
        # (scipy's threads); a few hundred are not worth starting threads for.
        workers = -1 if len(distinct) >= 1000 else 1
        distance, nearest = self._tree.query(distinct, k=self.k, eps=SEARCH_EPS, workers=workers)  # (rows, k) each: k >= 2
        fitted = local_linear(self.table, self.z, distinct, nearest, self.ridge) if self.ridge > 0 else None
        inverse = inverse.reshape(-1)
        distance, nearest = distance[inverse], nearest[inverse]
        zs = self.z[nearest]
        z_hat = zs.mean(axis=1) if fitted is None else fitted[inverse]
        if self.row_error is not None:
            local = np.sqrt(np.mean(np.square(self.row_error[nearest]), axis=1))
        else:
            local = zs.std(axis=1, ddof=1)
        spread = np.sqrt(np.mean(np.square(zs - z_hat[:, None]), axis=1))
        mean_distance = distance.mean(axis=1)
        by_distance = np.ones(len(local))
        if self.neighbour_distance > 0:  # off the map: wider
            by_distance = np.maximum(mean_distance / self.neighbour_distance, 1.0)
        if self.near_distance > 0:  # near twins: narrower
            by_distance *= np.minimum(mean_distance / self.near_distance, 1.0) ** NEAR_POWER
        return z_hat, local, by_distance, spread

    @classmethod
    def fit(cls, features: np.ndarray, z: np.ndarray, k: int, meta: dict,
            groups: np.ndarray | None = None, ridge: float = 0.0) -> VisibilityModel:
        """A table from calibration rows (spread_90 still 1.0: see with_coverage). With `groups`
        (one id per run and area, or per family of near-twin runs and area: calibrate.row_groups),
        each row's error is measured with every row of its own group left out: what the table
        knows of this area in this story without having seen it. (With
        only its own hour left out, a week-long run's other days of the same area answered for
        it, sharing its seed's persistent biases: the errors came out small, and a new seed of
        the same story, with other biases, fell outside the ranges.)"""
        features = np.asarray(features, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        table = ((features - mean) / scale).astype(np.float32)
        row_error = None
        neighbour_distance = near_distance = 0.0
        if groups is not None:
            nearest = _nearest_other_groups(table, k, np.asarray(groups))
            z_hat = local_linear(table, z, table.astype(np.float64), nearest, ridge) if ridge > 0 else z[nearest].mean(axis=1)
            row_error = np.abs(z - z_hat).astype(np.float32)
            distance = np.linalg.norm(table[nearest].astype(np.float64) - table[:, None, :], axis=2).mean(axis=1)
            neighbour_distance = float(np.quantile(distance, 0.95))
            near_distance = NEAR_SHARE * neighbour_distance
        return cls(table, z, mean, scale, k, np.ones(len(SIZE_EDGES) + 1), 0.0, meta, row_error, neighbour_distance,
                   near_distance, ridge)

    def with_coverage(self, features: np.ndarray, z: np.ndarray, n60: np.ndarray, level: float = 0.90,
                      runs: np.ndarray | None = None, across_runs: float = 0.9) -> VisibilityModel:
        """Scale the local error so that `level` of held-out rows of each size class lie inside
        the range (the floor: the 10th percentile of the held-out rows' local error).

        With `runs` (the held-out run of each row), a class's factor is the `across_runs`
        quantile over runs of each run's own `level` quantile: nine runs in ten hold `level`
        or more, rather than the pool, where one hard story would set the factor and widen
        every other story's ranges far past it, or the median run, which left the networks
        unlike the default one (other timers, chattier or quieter phones) at 65-75%. (Three in
        four, before, left the held-out runs of other networks at 86% and 89% with the local
        fit, and an off-map chatty network's run at 79%: docs/estimation.md.) A class
        with too few rows in every run takes its pooled quantile, and one with too few rows at
        all the quantile of all rows together."""
        classes = len(SIZE_EDGES) + 1
        unit = replace(self, spread_90=np.ones(classes), spread_floor=0.0)
        z_hat, spread = unit.predict(features, n60)
        floor = float(np.quantile(spread, 0.10))
        ratio = np.abs(np.asarray(z) - z_hat) / np.maximum(np.hypot(spread, floor), 1e-9)
        pooled = float(np.quantile(ratio, level))
        cls = size_class(n60)
        runs = np.zeros(len(ratio), dtype=int) if runs is None else np.asarray(runs)

        def factor(c: int) -> float:
            mine = cls == c
            per_run = [float(np.quantile(ratio[mine & (runs == r)], level))
                       for r in np.unique(runs) if np.count_nonzero(mine & (runs == r)) >= _MIN_CLASS_ROWS]
            if per_run:
                return float(np.quantile(per_run, across_runs))
            return float(np.quantile(ratio[mine], level)) if np.count_nonzero(mine) >= _MIN_CLASS_ROWS else pooled

        return replace(self, spread_90=np.array([factor(c) for c in range(classes)]), spread_floor=floor)

    def save(self, path: Path) -> None:
        """An .npz (zip) with LZMA compression: the standardised features on a grid of
        1/TABLE_GRID of a standard deviation as int16 (finer than float16 for the values that
        matter, under 1% of the distance between neighbouring rows), z to 1e-3 and the row errors
        to ERROR_STEP, each array stored as byte planes (a value's high bytes compress well, its
        low bytes barely), so that the shipped table with its companion's row errors stays under
        the 2 MiB a tracked file may weigh (its size: docs/performance.md). A grid of 1/128 gave
        the same robustness matrix to 0.1 point in a file 17% larger."""
        grid = np.rint(self.table.astype(np.float64) * TABLE_GRID)
        if np.abs(grid).max() > np.iinfo(np.int16).max:
            raise ValueError(f"a standardised feature beyond {np.iinfo(np.int16).max / TABLE_GRID:.0f} standard deviations")
        arrays = {
            "table_grid": _to_planes(np.ascontiguousarray(grid.astype(np.int16).T)),
            "grid": np.array(TABLE_GRID),
            "table_shape": np.array(self.table.shape),
            "z_e3": _to_planes(np.rint(self.z * _E3).astype(np.int16)),
            "mean": self.mean, "scale": self.scale, "k": np.array(self.k),
            "spread_90": np.asarray(self.spread_90), "spread_floor": np.array(self.spread_floor),
            "neighbour_distance": np.array(self.neighbour_distance), "near_distance": np.array(self.near_distance),
            "ridge": np.array(self.ridge), "disagreement": np.array(self.disagreement),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.row_error is not None:
            arrays["row_error_steps"] = _error_planes(self.row_error)
        if self.companion is not None:
            # The same rows and z: only its columns, k, penalty, row errors and map distance are
            # its own.
            c = self.companion
            arrays.update({
                "companion_columns": np.array(c.table.shape[1]), "companion_k": np.array(c.k),
                **({"companion_column_index": np.array(c.columns)} if c.columns else {}),
                "companion_ridge": np.array(c.ridge), "companion_neighbour_distance": np.array(c.neighbour_distance),
                "companion_near_distance": np.array(c.near_distance),
                "companion_row_error_steps": _error_planes(c.row_error),  # type: ignore[arg-type]
            })
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> VisibilityModel:
        with np.load(path, allow_pickle=False) as f:
            rows, columns = (int(n) for n in f["table_shape"])
            if "table_grid" in f.files:
                table = (_from_planes(f["table_grid"], np.int16).reshape(columns, rows).T / float(f["grid"])).astype(np.float32)
            else:  # tables written before the grid: float16
                table = _from_planes(f["table"], np.float16).reshape(columns, rows).T.astype(np.float32)
            table = np.ascontiguousarray(table)
            z = _from_planes(f["z_e3"], np.int16) / _E3 if "z_e3" in f.files else _from_planes(f["z"], np.int32) / _E4
            companion = None
            if "companion_columns" in f.files:
                # Its named columns, or (tables written before the venue flag) the first ones.
                named = "companion_column_index" in f.files
                chosen = f["companion_column_index"].astype(int) if named else np.arange(int(f["companion_columns"]))
                companion = cls(
                    table=np.ascontiguousarray(table[:, chosen]), z=z, mean=f["mean"][chosen], scale=f["scale"][chosen],
                    k=int(f["companion_k"]), spread_90=np.ones(len(SIZE_EDGES) + 1), spread_floor=0.0, meta={},
                    row_error=_read_errors(f, "companion_row_error"),
                    neighbour_distance=float(f["companion_neighbour_distance"]), ridge=float(f["companion_ridge"]),
                    near_distance=float(f["companion_near_distance"]) if "companion_near_distance" in f.files else 0.0,
                    columns=tuple(int(c) for c in chosen) if named else (),
                )
            return cls(
                table=table, z=z, mean=f["mean"],
                scale=f["scale"], k=int(f["k"]), spread_90=np.asarray(f["spread_90"], dtype=np.float64),
                spread_floor=float(f["spread_floor"]), meta=json.loads(str(f["meta"])),
                row_error=_read_errors(f, "row_error"),
                neighbour_distance=float(f["neighbour_distance"]) if "neighbour_distance" in f.files else 0.0,
                near_distance=float(f["near_distance"]) if "near_distance" in f.files else 0.0,
                ridge=float(f["ridge"]) if "ridge" in f.files else 0.0, companion=companion,
                disagreement=bool(f["disagreement"]) if "disagreement" in f.files else False,
            )


_E4 = 1e4
#: z is stored in thousandths (int16) and the row errors in steps of ERROR_STEP (uint16): a
#: tenth of a percent of people, finer than any estimate or range needs (row errors are 0.01-4
#: in log people, the ranges' floor 0.016), and it keeps the shipped table with its companion
#: under 2 MB. Tables written before: ten-thousandths, int32.
_E3 = 1e3
ERROR_STEP = 0.002


def _error_planes(errors: np.ndarray) -> np.ndarray:
    return _to_planes(np.rint(np.clip(errors, 0.0, np.iinfo(np.uint16).max * ERROR_STEP) / ERROR_STEP).astype(np.uint16))


def _read_errors(f: Any, name: str) -> np.ndarray | None:
    """Row errors stored in steps of ERROR_STEP, or (tables written before) in ten-thousandths; None if absent."""
    if f"{name}_steps" in f.files:
        return _from_planes(f[f"{name}_steps"], np.uint16) * ERROR_STEP
    return _from_planes(f[name], np.int32) / _E4 if name in f.files else None


#: Steps per standard deviation of the stored features (VisibilityModel.save).
TABLE_GRID = 64


def _to_planes(values: np.ndarray) -> np.ndarray:
    """(itemsize, n) uint8: byte b of every value in row b."""
    return np.ascontiguousarray(values.reshape(-1).view(np.uint8).reshape(-1, values.itemsize).T)


def _from_planes(planes: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(planes.T).view(dtype).reshape(-1)


def own_reference(features: np.ndarray) -> np.ndarray:
    """Rows whose curve was compared with itself (curve_features with the curve as its own
    reference) but is not flagged as the network's: a venue with no network around it. Every
    relative feature is then its base feature over itself (1, or base / _FLOOR below the floor)
    and the relative growth 0. A table without the flag cannot tell: no row is one."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] < len(FEATURE_NAMES):
        return np.zeros(len(f), dtype=bool)
    base = f[:, _BASE_COLUMNS]
    alone = np.isclose(f[:, _RELATIVE_COLUMNS], base / np.maximum(base, _FLOOR), rtol=1e-9, atol=1e-12).all(axis=1)
    return alone & (f[:, _GROWTH_RELATIVE] == 0.0) & (f[:, _NETWORK] == 0.0)


def local_linear(table: np.ndarray, z: np.ndarray, x: np.ndarray, nearest: np.ndarray, ridge: float,
                 chunk: int = 4096) -> np.ndarray:
    """z at each query row of x (standardised features) by a linear fit over its neighbours
    (`nearest`, (n, k) rows of the table): the fit's value at the query, with a ridge penalty on
    the slopes (not the intercept), kept within the neighbours' own z.

    Why not their mean: the neighbours of a situation are rarely centred on it. Off the table's
    map (a network unlike the calibration's, a venue that is its own reference) they all lie to
    one side of it, and their mean answers for where they are, not where the query is. The slope
    across them corrects for the offset; the penalty keeps it steady where the neighbours barely
    spread along a feature, and the clip keeps it from answering beyond what any neighbour knows.
    Measured in docs/estimation-history.md ("The table's method"), against the mean of the 10 nearest."""
    out = np.empty(len(x))
    columns = table.shape[1] + 1
    penalty = ridge * np.eye(columns)
    penalty[0, 0] = 0.0
    for start in range(0, len(x), chunk):
        rows = nearest[start : start + chunk]
        offsets = table[rows].astype(np.float64) - x[start : start + chunk, None, :]  # (n, k, features)
        design = np.concatenate([np.ones(offsets.shape[:2] + (1,)), offsets], axis=2)
        known = z[rows]
        gram = np.einsum("nki,nkj->nij", design, design) + penalty
        beta = np.linalg.solve(gram, np.einsum("nki,nk->ni", design, known)[..., None])[..., 0]
        out[start : start + chunk] = np.clip(beta[:, 0], known.min(axis=1), known.max(axis=1))
    return out


def _nearest_other_groups(table: np.ndarray, k: int, groups: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Indexes of the k nearest rows (Euclidean) of each table row among the rows of other
    groups. Brute force in chunks: the k-d tree cannot leave a group out."""
    table_sq = np.einsum("ij,ij->i", table, table)
    out = np.empty((len(table), k), dtype=np.int64)
    for start in range(0, len(table), chunk):
        part = table[start : start + chunk]
        # Squared distances by |a|^2 - 2ab + |b|^2: one matrix product per chunk.
        d = table_sq[None, :] - 2.0 * part @ table.T + table_sq[start : start + len(part), None]
        d[groups[start : start + len(part), None] == groups[None, :]] = np.inf
        out[start : start + len(part)] = np.argpartition(d, k - 1, axis=1)[:, :k]
    return out


def log_half_width(model_half: np.ndarray, hll_se: float, scaling_se: float, z90: float) -> np.ndarray:
    """The 90% half-width of log(people): the model's, HyperLogLog's on N(60) and the scaling's
    (market share, SIMs per person) combined as independent errors."""
    return np.sqrt(np.square(model_half) + (z90 * hll_se) ** 2 + (z90 * scaling_se) ** 2)


#: The least share of the phones present that an hour's window sees. A phone that stayed the
#: hour signals at least once per periodic update (T3412, 54 minutes by default), and a phone
#: whose timer is longer is still seen with the probability window / T3412: 0.5 for the two
#: hours that networks with long timers use (the robustness matrix's longest). But a phone that
#: arrived idle minutes ago may not have signalled yet: when a crowd pours in, fewer are seen.
#: Measured on the calibration's held-out runs and the robustness matrix, phones present reached
#: 3.9 x N(60) (a held-out network of 1.5 sessions an hour) and 4.5 x N(60) (quiet variant: the
#: station filling in the ten minutes after the match, 9,418 people (4,068 phones) present and 914
#: phones seen in the hour). So the phones present are at most N(60) / 0.2, a bound set past the
#: largest measured (docs/estimation.md).
VISIBILITY_FLOOR_60 = 0.2
N1 = RECENT_MIN.index(1)


def count_bounds(curves: np.ndarray, hll_se: float, z90: float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the phones present that the window counts themselves allow, per curve.

    - Low: the phones seen in the last minute (a phone seen a minute ago is there, bar the few
      that crossed the area within that minute).
    - High: N(60) / VISIBILITY_FLOOR_60 (everyone present is seen in an hour with at least that
      probability, newcomers included; phones that left only add to N(60)).
    Each widened by HyperLogLog's 90% error, so a bound never cuts a range HyperLogLog allows."""
    curves = np.asarray(curves, dtype=np.float64)
    hll = z90 * hll_se
    return curves[:, N1] * (1.0 - hll), curves[:, N60] * (1.0 + hll) / VISIBILITY_FLOOR_60


def recent_log_share(curves: np.ndarray) -> np.ndarray:
    """log(N(5) / N(60)) per curve (each count at least 1): the recent count against the hour, the
    reading a deployment's counts may lean an area's estimate on (estimator.corrected)."""
    curves = np.asarray(curves, dtype=np.float64)
    return np.log(np.maximum(curves[:, N5], 1.0) / np.maximum(curves[:, N60], 1.0))


def people_from(n60: np.ndarray, z: np.ndarray, half: np.ndarray, share: np.ndarray, sims: float,
                bounds: tuple[np.ndarray, np.ndarray] | None = None, scaling_half: float = 0.0,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(people, low, high): phones present = N(60) * e^z, people = phones / (share * SIMs).

    `bounds` (count_bounds, phones): the range is cut to what the counts allow, widened by the
    scaling's own 90% half-width `scaling_half` (log), and the estimate kept inside its range."""
    per_phone = 1.0 / (np.asarray(share, dtype=np.float64) * sims)
    phones = np.asarray(n60, dtype=np.float64) * np.exp(z)
    low, high = phones * np.exp(-half), phones * np.exp(half)
    if bounds is not None:
        floor, ceiling = bounds[0] * np.exp(-scaling_half), bounds[1] * np.exp(scaling_half)
        low = np.minimum(np.maximum(low, floor), ceiling)
        high = np.maximum(np.minimum(high, ceiling), low)
        phones = np.clip(phones, low, high)
    return (
        np.rint(phones * per_phone).astype(np.int64),
        np.floor(low * per_phone).astype(np.int64),
        np.ceil(high * per_phone).astype(np.int64),
    )
