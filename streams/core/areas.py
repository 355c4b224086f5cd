"""The areas file: cells, and areas made of cells, with a capacity. Plus the vectorised mapping
from a batch of cell ids to cell indexes and to (event, area) pairs used by the ingest path.

Areas overlap and share cells (a stadium inside a district inside the centre), so one event may
belong to several areas. Pure: no Kafka, no Redis. Format: docs/areas.md.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.core.errors import ConfigError

AREA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: The `kind` of an area where a crowd comes for an event and stays through it (a stadium, an
#: arena, a concert hall): the people model reads its counts against other venues' (AreaMap.venues).
VENUE_KIND = "venue"


@dataclass(frozen=True)
class Cell:
    id: int
    x_m: float
    y_m: float
    radius_m: float


@dataclass(frozen=True)
class Area:
    id: str
    name: str
    capacity: int
    cells: tuple[int, ...]
    kind: str = "area"
    size_m2: float | None = None
    #: The operator's share of the people in this area (None: the configured default).
    market_share: float | None = None
    #: The areas that divide this one: no cell in two of them, together exactly its cells. The
    #: people in them add up to its own, and the estimator makes their estimates agree
    #: (streams/estimate/estimator.py, reconcile; docs/areas.md).
    parts: tuple[str, ...] = ()


class AreaMap:
    """Cells and areas of one city, with the numpy structures the hot path needs.

    cell_ids: sorted uint32 array of every known cell; a cell's *index* is its position here.
    area_ptr / area_idx: CSR layout, the areas of cell index c are area_idx[area_ptr[c]:area_ptr[c+1]].
    """

    def __init__(self, name: str, cells: list[Cell], areas: list[Area], reference: str | None = None) -> None:
        self.name = name
        self.cells = sorted(cells, key=lambda c: c.id)
        self.areas = list(areas)
        self.area_ids = [a.id for a in self.areas]
        self.area_by_id = {a.id: a for a in self.areas}
        self.cell_ids = np.array([c.id for c in self.cells], dtype=np.uint32)
        members: list[list[int]] = [[] for _ in self.cells]
        position = {c.id: i for i, c in enumerate(self.cells)}
        for a_index, area in enumerate(self.areas):
            for cell_id in area.cells:
                members[position[cell_id]].append(a_index)
        counts = np.array([len(m) for m in members], dtype=np.int64)
        self.area_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.area_idx = np.array([a for m in members for a in m], dtype=np.int64)
        if reference is not None and reference not in self.area_by_id:
            raise ValueError(f"reference area {reference!r} is not an area of {name}")
        #: The area every other is compared with by the people model (docs/estimation.md): the
        #: one named in the file, else the first that covers every cell, else the widest.
        self.reference = reference or next((a.id for a in self.areas if len(a.cells) == len(self.cells)), None) or self.widest()
        #: (area, its parts) for every area whose parts are all in this map (a map of some of a
        #: file's areas, as the evaluation's, drops a division it does not hold whole).
        self.divisions: list[tuple[str, tuple[str, ...]]] = [
            (a.id, a.parts) for a in self.areas if a.parts and all(part in self.area_by_id for part in a.parts)
        ]

    @property
    def divided(self) -> frozenset[str]:
        """Every area in a division, whole or part."""
        return frozenset(a for whole, parts in self.divisions for a in (whole, *parts))

    @property
    def reference_covers_network(self) -> bool:
        """Does the reference area cover every cell? If not, the network's activity (night,
        rush hour) is read from a part of it, and a venue as its own reference cannot tell its
        crowd's comings and goings from the network's habits: the worker warns."""
        return len(self.area_by_id[self.reference].cells) == len(self.cells)

    @property
    def network_area(self) -> str | None:
        """The area whose curve is the whole network's own: the reference when it covers every
        cell, else none (the people model's network flag, visibility.curve_features)."""
        return self.reference if self.reference_covers_network else None

    def cell_index(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map cell ids to cell indexes; returns (index, known) where known marks real cells."""
        index = np.searchsorted(self.cell_ids, cells)
        index = np.minimum(index, len(self.cell_ids) - 1)
        known = self.cell_ids[index] == cells
        return index, known

    def expand_to_areas(self, cell_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For events at the given cell indexes, every (event position, area index) pair."""
        starts = self.area_ptr[cell_index]
        counts = self.area_ptr[cell_index + 1] - starts
        total = int(counts.sum())
        event_pos = np.repeat(np.arange(len(cell_index)), counts)
        # Offset of each pair inside its event's run: 0, 1, .. counts[i]-1.
        run_starts = np.repeat(np.cumsum(counts) - counts, counts)
        within = np.arange(total) - run_starts
        area_index = self.area_idx[np.repeat(starts, counts) + within]
        return event_pos, area_index

    @property
    def venues(self) -> frozenset[str]:
        """The areas of kind `venue` (VENUE_KIND): visibility.curve_features' venue flag."""
        return frozenset(a.id for a in self.areas if a.kind == VENUE_KIND)

    def widest(self) -> str:
        """The area with the most cells (the whole network in a city file), first on a tie: the
        visibility model's reference area."""
        return max(self.areas, key=lambda a: len(a.cells)).id

    def areas_of_cell(self, cell_id: int) -> list[str]:
        index, known = self.cell_index(np.array([cell_id], dtype=np.uint32))
        if not known[0]:
            return []
        c = int(index[0])
        return [self.area_ids[a] for a in self.area_idx[self.area_ptr[c] : self.area_ptr[c + 1]]]


def area_shard(area_id: str, shards: int) -> int:
    """The estimator shard of an area: which worker counts it is whichever owns the crowd.events
    partition of this number (streams/pipeline/estimator_pass.py). Stable across processes and
    runs (CRC-32 of the id, not Python's salted hash)."""
    return zlib.crc32(area_id.encode()) % shards


def parse_areas(doc: object, source: str = "<areas>") -> AreaMap:
    """Validate an areas document (already parsed JSON) and build the AreaMap."""

    def fail(message: str) -> ValueError:
        return ValueError(f"{source}: {message}")

    if not isinstance(doc, dict):
        raise fail("top level must be an object with 'cells' and 'areas'")
    raw_cells = doc.get("cells")
    raw_areas = doc.get("areas")
    if not isinstance(raw_cells, list) or not raw_cells:
        raise fail("'cells' must be a non-empty list")
    if not isinstance(raw_areas, list) or not raw_areas:
        raise fail("'areas' must be a non-empty list")
    cells: list[Cell] = []
    seen_cells: set[int] = set()
    for i, raw in enumerate(raw_cells):
        if not isinstance(raw, dict):
            raise fail(f"cells[{i}] must be an object")
        cell_id = raw.get("id")
        if not isinstance(cell_id, int) or isinstance(cell_id, bool) or not 0 <= cell_id < 2**32:
            raise fail(f"cells[{i}].id must be an unsigned 32-bit integer")
        if cell_id in seen_cells:
            raise fail(f"cell {cell_id} is listed twice")
        seen_cells.add(cell_id)
        try:
            cells.append(
                Cell(cell_id, float(raw.get("x_m", 0.0)), float(raw.get("y_m", 0.0)), float(raw.get("radius_m", 500.0)))
            )
        except (TypeError, ValueError):
            raise fail(f"cell {cell_id}: x_m, y_m and radius_m must be numbers") from None
    areas: list[Area] = []
    seen_areas: set[str] = set()
    for i, raw in enumerate(raw_areas):
        if not isinstance(raw, dict):
            raise fail(f"areas[{i}] must be an object")
        area_id = raw.get("id")
        if not isinstance(area_id, str) or not AREA_ID.match(area_id):
            raise fail(f"areas[{i}].id must match {AREA_ID.pattern}")
        if area_id in seen_areas:
            raise fail(f"area {area_id!r} is listed twice")
        seen_areas.add(area_id)
        capacity = raw.get("capacity")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity <= 0:
            raise fail(f"area {area_id!r}: capacity must be a positive integer")
        members = raw.get("cells")
        if not isinstance(members, list) or not members:
            raise fail(f"area {area_id!r}: cells must be a non-empty list")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in members):
            raise fail(f"area {area_id!r}: cells must be integer cell ids")
        unknown = [c for c in members if c not in seen_cells]
        if unknown:
            raise fail(f"area {area_id!r}: unknown cells {unknown[:5]}")
        if len(set(members)) != len(members):
            raise fail(f"area {area_id!r}: a cell is listed twice")
        size = raw.get("size_m2")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size < math.inf
        ):
            raise fail(f"area {area_id!r}: size_m2 must be a positive number")
        share = raw.get("market_share")
        if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1):
            raise fail(f"area {area_id!r}: market_share must be a number in (0, 1]")
        areas.append(
            Area(
                id=area_id,
                name=str(raw.get("name", area_id)),
                capacity=capacity,
                cells=tuple(int(c) for c in members),
                kind=str(raw.get("kind", "area")),
                size_m2=float(size) if size is not None else None,
                market_share=float(share) if share is not None else None,
                parts=_parts(raw.get("parts"), area_id, fail),
            )
        )
    _check_divisions(areas, fail)
    reference = doc.get("reference")
    if reference is not None and (not isinstance(reference, str) or reference not in seen_areas):
        raise fail("'reference' must be the id of one of the areas")
    return AreaMap(str(doc.get("name", source)), cells, areas, reference)


def _parts(raw: object, area_id: str, fail: Callable[[str], ValueError]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(p, str) for p in raw) or len(set(raw)) != len(raw):
        raise fail(f"area {area_id!r}: parts must be a list of two or more different area ids")
    if area_id in raw:
        raise fail(f"area {area_id!r}: an area cannot be a part of itself")
    return tuple(raw)


def _check_divisions(areas: list[Area], fail: Callable[[str], ValueError]) -> None:
    """Each area's parts exist, share no cell and together hold exactly its cells; an area is
    in one division at most (as the whole or as a part), so each is reconciled on its own."""
    by_id = {a.id: a for a in areas}
    member_of: dict[str, str] = {}
    for area in areas:
        if not area.parts:
            continue
        unknown = [p for p in area.parts if p not in by_id]
        if unknown:
            raise fail(f"area {area.id!r}: unknown parts {unknown}")
        cells = [c for p in area.parts for c in by_id[p].cells]
        if len(set(cells)) != len(cells):
            raise fail(f"area {area.id!r}: its parts share cells (a division's parts must not overlap)")
        if set(cells) != set(area.cells):
            missing, extra = set(area.cells) - set(cells), set(cells) - set(area.cells)
            raise fail(f"area {area.id!r}: its parts must hold exactly its cells "
                       f"(missing {sorted(missing)[:5]}, outside it {sorted(extra)[:5]})")
        for member in (area.id, *area.parts):
            if member in member_of:
                raise fail(f"area {member!r} is in two divisions ({member_of[member]!r} and {area.id!r})")
            member_of[member] = area.id


def load_areas(path: Path) -> AreaMap:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read areas file {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return parse_areas(doc, str(path))
