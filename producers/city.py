"""The simulated city: where cells are, what each covers, how they group into tracking areas,
where people live and work, and the footprints of venues. Built once from an areas file.

Coverage is modelled on a raster (25 m pixels for the example city): for every pixel the
nearest cell site (its *territory*, a Voronoi cell: this defines where a person truly is), the
second-nearest site, and the ratio of their distances. Where that ratio is close to 1 a phone
may be served by either cell (overlapping coverage): which one depends on the phone's own
shadowing, and a connected phone there ping-pongs between the two. Pure: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streams.core.areas import VENUE_KIND, AreaMap

#: Raster resolution for small cities; larger cities get coarser pixels (at most MAX_PIXELS).
RASTER_M = 25.0
MAX_PIXELS = 400_000
#: Margin around the outermost cell sites, metres: people at the city's edge are still covered.
MARGIN_M = 600.0


@dataclass(frozen=True)
class Footprint:
    """Where people *at* a venue stand: a disc, or a segment for a street."""

    area: str
    kind: str  # "disc" or "segment"
    a: tuple[float, float]  # disc centre, or segment start
    b: tuple[float, float]  # segment end (disc: same as a)
    radius_m: float  # disc radius, or half the street's width
    sites: np.ndarray  # (k, 2) sites of the area's cells, to snap strays back inside


class City:
    """Geometry of one areas file, with the lookups the simulator's hot path needs.

    Cell *indexes* are positions in `areas.cell_ids` (sorted), as in streams.core.areas.
    """

    def __init__(self, areas: AreaMap, tracking_area_m: float = 1000.0) -> None:
        self.areas = areas
        self.n_cells = len(areas.cells)
        self.n_areas = len(areas.areas)
        self.xy = np.array([(c.x_m, c.y_m) for c in areas.cells], dtype=np.float64)
        self.membership = np.zeros((self.n_cells, self.n_areas), dtype=bool)
        for a, area in enumerate(areas.areas):
            index, _ = areas.cell_index(np.array(area.cells, dtype=np.uint32))
            self.membership[index, a] = True
        self.spacing_m = _typical_spacing(self.xy)
        self.centroid = self.xy.mean(axis=0)
        lo = self.xy.min(axis=0) - MARGIN_M
        hi = self.xy.max(axis=0) + MARGIN_M
        self.bounds = (lo, hi)
        # Tracking areas: square blocks of cell sites. Idle phones moving inside one are silent.
        block = np.floor((self.xy - lo) / tracking_area_m).astype(np.int64)
        _, self.tracking_area = np.unique(block[:, 0] * 1_000_003 + block[:, 1], return_inverse=True)
        self._build_raster(lo, hi)
        self.residential_weight, self.work_weight = self._land_use()

    # --- coverage -------------------------------------------------------------------------
    def _build_raster(self, lo: np.ndarray, hi: np.ndarray) -> None:
        span = hi - lo
        res = max(RASTER_M, math.sqrt(float(span[0] * span[1]) / MAX_PIXELS))
        nx, ny = int(math.ceil(span[0] / res)), int(math.ceil(span[1] / res))
        self.res = res
        self.origin = lo
        self.shape = (ny, nx)
        nearest = np.empty((ny, nx), dtype=np.int32)
        second = np.empty((ny, nx), dtype=np.int32)
        ratio = np.empty((ny, nx), dtype=np.float32)
        xs = lo[0] + (np.arange(nx) + 0.5) * res
        for row in range(ny):  # one row at a time keeps memory at nx * n_cells
            y = lo[1] + (row + 0.5) * res
            d = np.hypot(xs[:, None] - self.xy[None, :, 0], y - self.xy[None, :, 1])
            if self.n_cells == 1:
                nearest[row], second[row], ratio[row] = 0, 0, np.inf
                continue
            two = np.argpartition(d, 1, axis=1)[:, :2]
            d2 = np.take_along_axis(d, two, axis=1)
            swap = d2[:, 0] > d2[:, 1]
            two[swap] = two[swap][:, ::-1]
            d2[swap] = d2[swap][:, ::-1]
            nearest[row], second[row] = two[:, 0], two[:, 1]
            ratio[row] = d2[:, 1] / np.maximum(d2[:, 0], 1.0)
        self.nearest_px, self.second_px, self.ratio_px = nearest, second, ratio

    def pixel(self, pos: np.ndarray) -> np.ndarray:
        """Flat raster index of each position (positions outside the raster clamp to its edge)."""
        ix = np.clip(((pos[:, 0] - self.origin[0]) / self.res).astype(np.int64), 0, self.shape[1] - 1)
        iy = np.clip(((pos[:, 1] - self.origin[1]) / self.res).astype(np.int64), 0, self.shape[0] - 1)
        return iy * self.shape[1] + ix

    def locate(self, pos: np.ndarray) -> np.ndarray:
        """The cell whose territory holds each position: where a person truly is."""
        return self.nearest_px.reshape(-1)[self.pixel(pos)]

    def coverage(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(nearest cell, second-nearest cell, distance ratio second/nearest) per position."""
        px = self.pixel(pos)
        return self.nearest_px.reshape(-1)[px], self.second_px.reshape(-1)[px], self.ratio_px.reshape(-1)[px]

    # --- land use and places ----------------------------------------------------------------
    def _land_use(self) -> tuple[np.ndarray, np.ndarray]:
        """Where people live and work, per cell, from geometry and area kinds.

        Jobs concentrate around the city's centroid (a Gaussian of ~1.2 km), homes thin out
        there; venue and station cells have few homes; a street's cells have fewer homes and,
        being shops rather than offices, fewer jobs (its crowds are shoppers).
        """
        d = np.hypot(*(self.xy - self.centroid).T)
        core = np.exp(-((d / 1200.0) ** 2))
        residential = 1.0 - 0.55 * core
        work = 0.25 + 3.0 * core
        for a, area in enumerate(self.areas.areas):
            cells = self.membership[:, a]
            if cells.sum() > max(4, self.n_cells // 8):
                continue  # districts and the city: no special use
            if area.kind in (VENUE_KIND, "station"):
                residential[cells] *= 0.1
                work[cells] *= 0.5
            elif area.kind == "street":
                residential[cells] *= 0.6
                work[cells] *= 0.35
        return residential / residential.sum(), work / work.sum()

    def area_index(self, area_id: str) -> int:
        return self.areas.area_ids.index(area_id)

    def cells_of(self, area_id: str) -> np.ndarray:
        return np.flatnonzero(self.membership[:, self.area_index(area_id)])

    def footprint(self, area_id: str) -> Footprint:
        """Where people at a venue stand (size_m2, kind street -> a segment along its sites)."""
        area = self.areas.area_by_id[area_id]
        sites = self.xy[self.cells_of(area_id)]
        size = area.size_m2 or 40_000.0
        if area.kind == "street" and len(sites) >= 2:
            d = np.hypot(sites[:, None, 0] - sites[None, :, 0], sites[:, None, 1] - sites[None, :, 1])
            i, j = np.unravel_index(np.argmax(d), d.shape)
            length = max(float(d[i, j]), 1.0)
            width = min(max(size / length, 6.0), 200.0)
            return Footprint(area_id, "segment", tuple(sites[i]), tuple(sites[j]), width / 2, sites)
        centre = tuple(sites.mean(axis=0))
        return Footprint(area_id, "disc", centre, centre, math.sqrt(size / math.pi), sites)

    def sample_footprint(self, fp: Footprint, n: int, rng: np.random.Generator) -> np.ndarray:
        """n positions inside a venue's footprint, all inside the venue's cell territories."""
        a, b = np.array(fp.a), np.array(fp.b)
        if fp.kind == "segment":
            along = rng.random(n)[:, None]
            direction = (b - a) / max(np.hypot(*(b - a)), 1e-9)
            normal = np.array([-direction[1], direction[0]])
            pos = a + along * (b - a) + rng.uniform(-fp.radius_m, fp.radius_m, size=(n, 1)) * normal
        else:
            r = fp.radius_m * np.sqrt(rng.random(n))
            angle = rng.random(n) * 2 * np.pi
            pos = a + np.column_stack([r * np.cos(angle), r * np.sin(angle)])
        return self._snap_into(pos, fp.area, fp.sites, rng)

    def sample_cells(self, weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n positions: a cell drawn by `weights`, then uniform in its territory."""
        cells = rng.choice(self.n_cells, size=n, p=weights / weights.sum())
        half = self.spacing_m / 2
        pos = self.xy[cells] + rng.uniform(-half, half, size=(n, 2))
        lo, hi = self.bounds
        return np.clip(pos, lo, hi)

    def sample_edge(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points on the outer ring of cell sites: where road traffic enters the city."""
        lo, hi = self.xy.min(axis=0), self.xy.max(axis=0)
        t = rng.random(n)
        side = rng.integers(0, 4, size=n)
        x = np.where(side < 2, lo[0] + t * (hi[0] - lo[0]), np.where(side == 2, lo[0], hi[0]))
        y = np.where(side == 0, lo[1], np.where(side == 1, hi[1], lo[1] + t * (hi[1] - lo[1])))
        return np.column_stack([x, y])

    def _snap_into(self, pos: np.ndarray, area_id: str, sites: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        inside = self.membership[self.locate(pos), self.area_index(area_id)]
        if not inside.all():
            stray = np.flatnonzero(~inside)
            near = np.argmin(np.hypot(pos[stray, None, 0] - sites[None, :, 0], pos[stray, None, 1] - sites[None, :, 1]), axis=1)
            pos[stray] = sites[near] + rng.uniform(-5.0, 5.0, size=(len(stray), 2))
        return pos


def _typical_spacing(xy: np.ndarray) -> float:
    """Median distance from a site to its nearest other site (500 m in the example city)."""
    if len(xy) < 2:
        return 1000.0
    d = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))
