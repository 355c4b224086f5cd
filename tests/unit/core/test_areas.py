"""The areas file (streams/core/areas.py): the shipped city, cell lookup, area expansion, validation."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from streams.core.areas import Area, AreaMap, Cell, load_areas, parse_areas
from streams.core.settings import DEFAULT_AREAS

SMALL = {
    "name": "Small town",
    "cells": [{"id": 1, "x_m": 0, "y_m": 0, "radius_m": 300}, {"id": 2}, {"id": 3}],
    "areas": [
        {"id": "town", "name": "Town", "kind": "city", "capacity": 1000, "cells": [1, 2, 3], "size_m2": 1e6},
        {"id": "square", "capacity": 50, "cells": [2]},
    ],
}


@pytest.fixture(scope="module")
def city() -> AreaMap:
    return load_areas(DEFAULT_AREAS)


def expected_pairs(areas: AreaMap, cells: np.ndarray) -> list[tuple[int, str]]:
    """(event position, area id) pairs by the slow, obvious route."""
    return sorted((i, area) for i, cell in enumerate(cells.tolist()) for area in areas.areas_of_cell(cell))


def expanded_pairs(areas: AreaMap, cells: np.ndarray) -> list[tuple[int, str]]:
    index, known = areas.cell_index(cells)
    assert known.all()
    event_pos, area_index = areas.expand_to_areas(index)
    return sorted(zip(event_pos.tolist(), [areas.area_ids[a] for a in area_index.tolist()]))


# --- the shipped example city ----------------------------------------------------------------


def test_example_city_loads(city: AreaMap) -> None:
    assert city.name == "Example city"
    assert city.cell_ids.tolist() == list(range(1001, 1065))
    assert city.area_ids == [
        "city", "centre", "east-district", "west-district", "stadium", "station", "high-street", "arena",
    ]
    assert {a.id: a.capacity for a in city.areas} == {
        "city": 400_000, "centre": 120_000, "east-district": 150_000, "west-district": 150_000,
        "stadium": 60_000, "station": 15_000, "high-street": 20_000, "arena": 12_000,
    }
    stadium = city.area_by_id["stadium"]
    assert (stadium.name, stadium.kind, stadium.cells, stadium.size_m2) == ("Stadium", "venue", (1038, 1039), 45_000.0)


def test_every_area_cell_of_the_example_city_is_known(city: AreaMap) -> None:
    for area in city.areas:
        _, known = city.cell_index(np.array(area.cells, dtype=np.uint32))
        assert known.all(), area.id


def test_example_city_areas_overlap(city: AreaMap) -> None:
    # The stadium sits on the centre / east-district border, inside the city.
    assert city.areas_of_cell(1038) == ["city", "centre", "east-district", "stadium"]
    assert city.areas_of_cell(1039) == ["city", "east-district", "stadium"]
    assert city.areas_of_cell(1028) == ["city", "centre", "west-district", "station"]
    assert city.areas_of_cell(1001) == ["city", "west-district"]
    assert city.areas_of_cell(999) == []
    # The two districts split the city between them.
    for cell in city.cell_ids.tolist():
        districts = [a for a in city.areas_of_cell(cell) if a.endswith("-district")]
        assert len(districts) == 1, cell


# --- lookups ---------------------------------------------------------------------------------


def test_cell_index_marks_unknown_cells(city: AreaMap) -> None:
    cells = np.array([1001, 5, 1064, 1065, 0, 1038, 2**32 - 1], dtype=np.uint32)

    index, known = city.cell_index(cells)

    assert known.tolist() == [True, False, True, False, False, True, False]
    assert index[known].tolist() == [0, 63, 37]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expand_to_areas_matches_a_plain_loop(city: AreaMap, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = rng.choice(city.cell_ids, size=2_000)

    assert expanded_pairs(city, cells) == expected_pairs(city, cells)


def test_expand_to_areas_skips_cells_in_no_area() -> None:
    areas = parse_areas(
        {
            "cells": [{"id": c} for c in (10, 20, 30, 40)],
            "areas": [
                {"id": "a", "capacity": 1, "cells": [20, 40]},
                {"id": "b", "capacity": 1, "cells": [40]},
            ],
        }
    )
    cells = np.random.default_rng(3).choice(np.array([10, 20, 30, 40], dtype=np.uint32), size=500)

    pairs = expanded_pairs(areas, cells)

    assert pairs == expected_pairs(areas, cells)
    assert len(pairs) == int((cells == 20).sum() + 2 * (cells == 40).sum())


def test_expand_to_areas_of_no_events_is_empty(city: AreaMap) -> None:
    event_pos, area_index = city.expand_to_areas(np.zeros(0, dtype=np.int64))

    assert (len(event_pos), len(area_index)) == (0, 0)


# --- parsing and validation ------------------------------------------------------------------


def test_parse_areas_fills_optional_fields() -> None:
    areas = parse_areas(SMALL)

    assert areas.name == "Small town"
    assert areas.cells == [Cell(1, 0.0, 0.0, 300.0), Cell(2, 0.0, 0.0, 500.0), Cell(3, 0.0, 0.0, 500.0)]
    assert areas.areas == [
        Area("town", "Town", 1000, (1, 2, 3), "city", 1e6),
        Area("square", "square", 50, (2,), "area", None),
    ]


def test_parse_areas_names_the_map_after_the_source_when_unnamed() -> None:
    doc = {k: v for k, v in SMALL.items() if k != "name"}

    assert parse_areas(doc, "mine.json").name == "mine.json"


DELETE = object()


def changed(path: tuple, value: object) -> dict:
    """A deep copy of SMALL with one value replaced (or removed, for value=DELETE)."""
    doc = copy.deepcopy(SMALL)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "top level must be an object with 'cells' and 'areas'"),
        (changed(("cells",), DELETE), "'cells' must be a non-empty list"),
        (changed(("cells",), []), "'cells' must be a non-empty list"),
        (changed(("areas",), DELETE), "'areas' must be a non-empty list"),
        (changed(("areas",), {}), "'areas' must be a non-empty list"),
        (changed(("cells", 1), 2), "cells[1] must be an object"),
        (changed(("cells", 1, "id"), -2), "cells[1].id must be an unsigned 32-bit integer"),
        (changed(("cells", 1, "id"), 2**32), "cells[1].id must be an unsigned 32-bit integer"),
        (changed(("cells", 1, "id"), True), "cells[1].id must be an unsigned 32-bit integer"),
        (changed(("cells", 1, "id"), "2"), "cells[1].id must be an unsigned 32-bit integer"),
        (changed(("cells", 1, "id"), 1), "cell 1 is listed twice"),
        (changed(("cells", 0, "x_m"), "left"), "cell 1: x_m, y_m and radius_m must be numbers"),
        (changed(("areas", 1), "square"), "areas[1] must be an object"),
        (changed(("areas", 1, "id"), "Square"), "areas[1].id must match"),
        (changed(("areas", 1, "id"), "-square"), "areas[1].id must match"),
        (changed(("areas", 1, "id"), "a" * 65), "areas[1].id must match"),
        (changed(("areas", 1, "id"), "town"), "area 'town' is listed twice"),
        (changed(("areas", 1, "capacity"), 0), "area 'square': capacity must be a positive integer"),
        (changed(("areas", 1, "capacity"), -50), "area 'square': capacity must be a positive integer"),
        (changed(("areas", 1, "capacity"), 50.0), "area 'square': capacity must be a positive integer"),
        (changed(("areas", 1, "capacity"), True), "area 'square': capacity must be a positive integer"),
        (changed(("areas", 1, "capacity"), DELETE), "area 'square': capacity must be a positive integer"),
        (changed(("areas", 1, "cells"), []), "area 'square': cells must be a non-empty list"),
        (changed(("areas", 1, "cells"), DELETE), "area 'square': cells must be a non-empty list"),
        (changed(("areas", 1, "cells"), [2, 99, 98]), "area 'square': unknown cells [99, 98]"),
        (changed(("areas", 1, "cells"), [2, 3, 2]), "area 'square': a cell is listed twice"),
        (changed(("areas", 0, "size_m2"), 0), "area 'town': size_m2 must be a positive number"),
        (changed(("areas", 0, "size_m2"), -1.5), "area 'town': size_m2 must be a positive number"),
        (changed(("areas", 0, "size_m2"), "big"), "area 'town': size_m2 must be a positive number"),
        (changed(("areas", 0, "size_m2"), True), "area 'town': size_m2 must be a positive number"),
        (changed(("areas", 0, "size_m2"), float("nan")), "area 'town': size_m2 must be a positive number"),
        (changed(("areas", 0, "size_m2"), float("inf")), "area 'town': size_m2 must be a positive number"),
        (changed(("areas", 1, "cells"), [2, True]), "area 'square': cells must be integer cell ids"),
        (changed(("areas", 1, "cells"), [2, [3]]), "area 'square': cells must be integer cell ids"),
    ],
)
def test_parse_areas_rejects_bad_documents(doc: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_areas(doc, "town.json")

    assert str(caught.value).startswith("town.json: ")
    assert message in str(caught.value)


def test_area_id_pattern_accepts_the_documented_characters() -> None:
    areas = parse_areas(changed(("areas", 1, "id"), "0-a_b" + "c" * 59))

    assert areas.area_ids == ["town", "0-a_b" + "c" * 59]


# --- files -----------------------------------------------------------------------------------


def test_load_areas_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "town.json"
    path.write_text(json.dumps(SMALL))

    assert load_areas(path).area_ids == ["town", "square"]


def test_load_areas_reports_invalid_json_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "town.json"
    path.write_text("{'cells': []}")

    with pytest.raises(ValueError, match=r"town\.json: not valid JSON"):
        load_areas(path)


def test_load_areas_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read areas file .*nowhere.json"):
        load_areas(tmp_path / "nowhere.json")


def test_load_areas_prefixes_validation_errors_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "town.json"
    path.write_text(json.dumps(changed(("areas", 1, "capacity"), 0)))

    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: area 'square': capacity")):
        load_areas(path)


# --- the people model's reference area ------------------------------------------------------


def test_reference_defaults_to_the_area_that_covers_every_cell(city: AreaMap) -> None:
    assert city.reference == "city" and city.reference_covers_network and city.network_area == "city"


def test_reference_can_be_named_in_the_file() -> None:
    doc = copy.deepcopy(SMALL)
    doc["reference"] = doc["areas"][-1]["id"]
    areas = parse_areas(doc)
    assert areas.reference == doc["areas"][-1]["id"]


def test_a_reference_that_is_not_an_area_is_refused() -> None:
    doc = copy.deepcopy(SMALL)
    doc["reference"] = "nowhere"
    with pytest.raises(ValueError, match="'reference' must be the id of one of the areas"):
        parse_areas(doc)


def test_a_venue_alone_is_its_own_reference_and_says_it_cannot_carry_the_network(city: AreaMap) -> None:
    stadium = city.area_by_id["stadium"]
    alone = AreaMap("venue", list(city.cells), [stadium])
    assert alone.reference == "stadium" and not alone.reference_covers_network and alone.network_area is None


# --- divisions: an area and the parts that divide it --------------------------------------------


DIVIDED = {
    "name": "Divided town",
    "cells": [{"id": c} for c in range(1, 6)],
    "areas": [
        {"id": "town", "capacity": 1000, "cells": [1, 2, 3, 4, 5], "parts": ["north", "south"]},
        {"id": "north", "capacity": 500, "cells": [1, 2]},
        {"id": "south", "capacity": 500, "cells": [3, 4, 5]},
        {"id": "square", "capacity": 50, "cells": [2, 3]},
    ],
}


def divided(**changes: object) -> dict:
    doc = copy.deepcopy(DIVIDED)
    for area_id, value in changes.items():
        next(a for a in doc["areas"] if a["id"] == area_id.replace("_", "-"))["parts"] = value
    return doc


def test_the_example_city_is_divided_into_its_two_districts(city: AreaMap) -> None:
    assert city.divisions == [("city", ("east-district", "west-district"))]
    assert city.divided == {"city", "east-district", "west-district"}


def test_a_division_must_hold_exactly_its_areas_cells_without_overlap() -> None:
    town = parse_areas(DIVIDED, "town.json")
    assert town.divisions == [("town", ("north", "south"))]
    assert town.area_by_id["north"].parts == ()
    for doc, message in [
        (divided(town=["north", "square"]), "its parts share cells"),
        (divided(town=["north", "nowhere"]), "unknown parts ['nowhere']"),
        (divided(town=["north"]), "parts must be a list of two or more different area ids"),
        (divided(town=["north", "north"]), "parts must be a list of two or more different area ids"),
        (divided(town="north,south"), "parts must be a list of two or more different area ids"),
        (divided(town=["town", "north"]), "an area cannot be a part of itself"),
        (divided(square=["north", "south"]), "its parts must hold exactly its cells (missing [], outside it [1, 4, 5])"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_areas(doc, "town.json")
    twice = copy.deepcopy(DIVIDED)
    twice["areas"].append({"id": "whole", "capacity": 1000, "cells": [1, 2, 3, 4, 5], "parts": ["north", "south"]})
    with pytest.raises(ValueError, match="area 'north' is in two divisions"):
        parse_areas(twice, "town.json")


def test_a_map_of_some_of_the_areas_keeps_only_the_divisions_it_holds_whole() -> None:
    town = parse_areas(DIVIDED, "town.json")
    some = AreaMap(town.name, list(town.cells), [a for a in town.areas if a.id != "south"])
    assert some.divisions == [] and some.divided == frozenset()
