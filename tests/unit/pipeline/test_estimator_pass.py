"""What the estimator pass says about the areas file when it builds the people model
(streams/pipeline/estimator_pass.py, people_model)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from streams.core.areas import AreaMap, load_areas
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.pipeline.estimator_pass import people_model

AREAS = load_areas(DEFAULT_AREAS)


def test_a_venue_covering_the_whole_network_is_read_as_the_network_and_the_worker_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    site = replace(AREAS.area_by_id["city"], kind="venue")
    areas = AreaMap(AREAS.name, list(AREAS.cells), [site, AREAS.area_by_id["stadium"]])
    with caplog.at_level(logging.WARNING, logger="streams.pipeline.estimator_pass"):
        model = people_model(Settings(), areas)
    assert model is not None and model.network_area == "city" and model.venues == {"stadium"}
    assert "'city' covers the whole network and is of kind venue" in caplog.text


def test_a_reference_that_misses_cells_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    alone = AreaMap(AREAS.name, list(AREAS.cells), [AREAS.area_by_id["stadium"]])
    with caplog.at_level(logging.WARNING, logger="streams.pipeline.estimator_pass"):
        model = people_model(Settings(), alone)
    assert model is not None and model.network_area is None and model.venues == {"stadium"}
    assert "'stadium' covers 2 of the" in caplog.text and "kind venue" not in caplog.text


def test_the_example_city_raises_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.pipeline.estimator_pass"):
        people_model(Settings(), AREAS)
    assert caplog.text == ""
