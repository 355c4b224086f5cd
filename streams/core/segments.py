"""Subscriber segments: residents and visitors of an area, and one coarse age band.

The wire's `segment` field (u16, docs/wire-format.md) carries two subscriber attributes that the
producer edge knows from the operator's customer records:
- bits 0-11: the home cell code, 0 when unknown (or the subscriber lives outside the network),
  else 1 + the index of the home cell among the areas file's sorted cell ids;
- bits 12-13: the age band, 0 unknown, 1 = 16-34, 2 = 35-64, 3 = 65 and over;
- bits 14-15: reserved (ignored).

A device is a *resident* of an area when its home cell is one of the area's cells; every other
device seen there (home elsewhere or unknown) is a *visitor*. Each area keeps, per bucket, one
HyperLogLog of its residents and one per age band next to its total; visitors are the total
minus the residents. They are published and suppressed like the totals (streams/estimate/privacy.py).
Pure: numpy only.
"""

from __future__ import annotations

import numpy as np

from streams.core.areas import AreaMap

HOME_BITS = 12
HOME_MASK = (1 << HOME_BITS) - 1
BAND_SHIFT = 12
BAND_MASK = 0b11
MAX_CELLS = HOME_MASK  # home codes 1..4095
#: Segments with a HyperLogLog of their own, by key suffix; visitors are derived.
RESIDENTS = "res"
BANDS = {1: "age_16_34", 2: "age_35_64", 3: "age_65_plus"}
STORED = (RESIDENTS, *BANDS.values())
#: Published segment names, in order.
PUBLISHED = ("residents", "visitors", *BANDS.values())


def encode(home_cell_index: np.ndarray, band: np.ndarray) -> np.ndarray:
    """The wire code from home cell indexes (-1: unknown/outside) and age bands (0: unknown)."""
    home = np.asarray(home_cell_index, dtype=np.int64)
    if (home >= MAX_CELLS).any():
        raise ValueError(f"home cell codes hold at most {MAX_CELLS} cells")
    code = np.where(home >= 0, home + 1, 0) | (np.asarray(band, dtype=np.int64) & BAND_MASK) << BAND_SHIFT
    return code.astype(np.uint16)


def home_code(segment: np.ndarray) -> np.ndarray:
    return np.asarray(segment, dtype=np.int64) & HOME_MASK


def band(segment: np.ndarray) -> np.ndarray:
    return (np.asarray(segment, dtype=np.int64) >> BAND_SHIFT) & BAND_MASK


class ResidentTable:
    """resident[area index, home code]: is a device with that home code a resident of the area?
    One gather per event instead of a set lookup. Home codes beyond the areas file's cells
    (another file's numbering) are nobody's residents."""

    def __init__(self, areas: AreaMap) -> None:
        self.table = np.zeros((len(areas.area_ids), HOME_MASK + 1), dtype=bool)
        for a, area in enumerate(areas.areas):
            # Every area cell is in cell_ids (the areas file is checked): its index is exact.
            cells = np.searchsorted(areas.cell_ids, np.asarray(area.cells, dtype=areas.cell_ids.dtype))
            self.table[a, cells + 1] = True

    def resident(self, area_index: np.ndarray, segment: np.ndarray) -> np.ndarray:
        return self.table[area_index, home_code(segment)]
