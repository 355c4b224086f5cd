"""What the estimator pass says about the areas file when it builds the people model
(streams/pipeline/estimator_pass.py, people_model)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from streams.core.areas import AreaMap, load_areas
from streams.core.settings import DEFAULT_AREAS, Settings
from streams.estimate.visibility import VisibilityModel
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


def test_a_table_fitted_on_a_deployments_counts_says_what_it_corrects(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    settings = Settings()
    table = VisibilityModel.load(settings.visibility_model_path)
    corrections = {"stadium": {"kind": "blend", "dz": 0.64, "weight": 1.0, "counts": 43, "window_min": 5, "half": 0.155,
                               "cv_mape_none": 0.322, "cv_mape_shift": 0.234, "cv_mape_blend": 0.08},
                   # A table written before the choice: a shift without its kind.
                   "station": {"dz": 0.05, "se": 0.02, "counts": 14},
                   "gate-7": {"kind": "none", "dz": 0.0, "se": 0.0, "counts": 9}}
    replace(table, meta={**table.meta, "area_corrections": corrections}).save(tmp_path / "fitted.npz")
    with caplog.at_level(logging.INFO, logger="streams.pipeline.estimator_pass"):
        people_model(replace(settings, visibility_model_path=tmp_path / "fitted.npz"), AREAS)
    assert ("corrects 3 areas by the deployment's own counts: gate-7: none (9 counts); stadium: blend: 1.00 of the "
            "5-minute count, shift +0.640, 90% error 0.155 (43 counts; none 32.2%, shift 23.4%, blend 8.0%); "
            "station: shift +0.050 (se 0.020) (14 counts)") in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "corrects areas this areas file does not have, and those corrections are unused: gate-7" in warnings[0]
