"""A simulation in several threads (Simulation(shards=N), `crowdpulse simulate --threads N`):
reproducible, the same city, population and plans, the same model, and a truth that still
matches its events; and run_simulation, which generates in a thread of its own while it sends."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from producers.publisher import FileSink, read_frames_file
from producers.scenarios import configure
from producers.simulate import SimulationRun, run_simulation
from producers.simulator import Simulation, WindowTruth
from streams.cli import main
from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.core.wire import EVENT_TYPES, decode

AREAS = load_areas(DEFAULT_AREAS)


def events_of(sim: Simulation, minutes: int) -> np.ndarray:
    return np.concatenate(list(sim.run(sim.start_ms + minutes * 60_000)))


def test_shards_split_the_devices_and_are_reproducible() -> None:
    start = configure("steady").scenario.start_ms()
    one, two, again = (Simulation(AREAS, 4000, seed=5, start_ms=start, shards=n) for n in (1, 2, 2))
    # The same population: the same devices under the same pseudonyms.
    assert np.array_equal(one.population.pseudonym, two.population.pseudonym)
    # The shards hold every device once, in order, with about as many each.
    sizes = [shard.radio.pop.n_visible for shard in two.shards]
    assert [shard.first_device for shard in two.shards] == [0, sizes[0]]
    assert sum(sizes) == two.population.n_visible and abs(sizes[0] - sizes[1]) < 0.01 * sum(sizes)
    a, b, c = (events_of(sim, 40) for sim in (one, two, again))
    assert len(b) > 1000 and b.tobytes() == c.tobytes()  # reproducible for (seed, shards)
    assert a.tobytes() != b.tobytes()  # another realisation
    assert np.all(np.diff(b["ts"]) >= 0) and np.isin(b["cell"], AREAS.cell_ids).all()
    # Both shards' devices speak, and every event carries a known device's pseudonym.
    pseudonyms = two.pseudonyms.for_epoch(int(two.rotation.epoch(start)))
    index = {p: i for i, p in enumerate(pseudonyms.view("<u8").tolist())}
    speakers = np.array([index[d] for d in b["device"].view("<u8").tolist()])
    assert (speakers < sizes[0]).any() and (speakers >= sizes[0]).any()
    with pytest.raises(AttributeError, match="one Mobility and Radio per shard"):
        _ = two.mobility


def test_shards_keep_the_plans_and_moves_of_day_planned_scenarios() -> None:
    """Day plans are built once for everyone and trips are arithmetic: the people truly in each
    area, minute by minute, do not depend on the sharding (only the radio's draws do)."""
    config = configure("match-day", {}, quick=True)
    start = config.scenario.start_ms() + 90 * 60_000
    sims = [Simulation(AREAS, 3000, seed=8, start_ms=start, step_s=60.0, config=config, truth=True, shards=n)
            for n in (1, 2)]
    events = [events_of(sim, 120) for sim in sims]
    tables = [sim.truth.table() for sim in sims]
    assert len(tables[0].as_of) == 120
    assert np.array_equal(tables[0].people, tables[1].people)
    assert np.array_equal(tables[0].devices_present, tables[1].devices_present)
    assert events[0].tobytes() != events[1].tobytes()


def test_two_shards_are_the_same_model() -> None:
    """Steady city, 12,000 devices, two hours: the same event mix and reach in one thread or two."""
    start = configure("steady").scenario.start_ms()
    runs = [events_of(Simulation(AREAS, 12_000, seed=2, start_ms=start, step_s=60.0, shards=n), 120) for n in (1, 2)]
    for kind in ("data", "paging", "tau", "handover"):
        counts = [int((e["type"] == EVENT_TYPES[kind]).sum()) for e in runs]
        assert counts[0] > 1000 and abs(counts[1] - counts[0]) < 0.05 * counts[0], (kind, counts)
    reach = [len(np.unique(e["device"].view("<u8"))) for e in runs]
    assert abs(reach[1] - reach[0]) < 0.01 * reach[0]


def test_the_truth_of_a_sharded_run_matches_its_events() -> None:
    start = configure("steady").scenario.start_ms()
    sim = Simulation(AREAS, 3000, seed=3, start_ms=start, step_s=60.0, truth=True, shards=2)
    events = events_of(sim, 30)
    table = sim.truth.table()
    plain = WindowTruth(AREAS, 60, (300, 900))
    plain.add(events)
    newest = (start + 30 * 60_000) // 60_000 - 1
    for area in ("stadium", "centre", "city"):
        a = AREAS.area_ids.index(area)
        assert table.distinct[-1, a, 0] == len(plain.distinct(area, newest, 300)) > 0
        assert table.distinct[-1, a, 1] == len(plain.distinct(area, newest, 900))


def test_run_simulation_in_threads_writes_reproducible_frames(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.frames"
        assert main(["simulate", "--seed", "4", "--devices", "1500", "--duration", "900", "--threads", "2",
                     "--out", str(out)]) == 0
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    records = [decode(frame, 10**7).records for _, frame in read_frames_file(outs[0])]
    assert sum(len(r) for r in records) > 1000
    assert main(["simulate", "--threads", "0", "--out", str(tmp_path / "x")]) == 2


def _run(tmp_path: Path, **changes) -> SimulationRun:
    start = configure("steady").scenario.start_ms()
    options = dict(devices=1500, seed=1, start_ms=start, duration_s=3600.0, speedup=0.0, partitions=4, producer_id=7)
    options.update(changes)
    return SimulationRun(**options)


def test_run_simulation_sends_every_generated_step_in_order(tmp_path: Path) -> None:
    run = _run(tmp_path, duration_s=1800.0)
    sent: list[int] = []
    summary = run_simulation(run, AREAS, FileSink(tmp_path / "f"), on_step=sent.append)
    assert sent == [run.start_ms + 10_000 * (i + 1) for i in range(180)]  # 10 s steps, each once, in order
    reference = run.simulation(AREAS)
    expected = sum(len(reference.step_with_shadows()[0]) for _ in range(180))
    assert summary["events"] == expected > 0 and summary["simulated_s"] == 1800.0
    assert not [t for t in threading.enumerate() if t.name == "simulation-steps"]


def test_run_simulation_raises_a_generation_error_and_stops_on_request(tmp_path: Path) -> None:
    run = _run(tmp_path)
    sim = run.simulation(AREAS)
    steps = 0
    real = sim.step_with_shadows

    def failing(until_ms=None):
        nonlocal steps
        steps += 1
        if steps == 5:
            raise ValueError("the fifth step broke")
        return real(until_ms)

    sim.step_with_shadows = failing  # type: ignore[method-assign]
    sink = FileSink(tmp_path / "g")
    with pytest.raises(ValueError, match="fifth step"):
        run_simulation(run, AREAS, sink, sim=sim)
    assert sink.file.closed and steps == 5
    # A stop request ends the run after the step being sent; the generating thread ends too.
    stop = threading.Event()
    sent: list[int] = []

    def stop_after_three(now_ms: int) -> None:
        sent.append(now_ms)
        if len(sent) == 3:
            stop.set()

    summary = run_simulation(run, AREAS, FileSink(tmp_path / "h"), stop, on_step=stop_after_three)
    assert len(sent) == 3 and summary["simulated_s"] == 30.0
    assert not [t for t in threading.enumerate() if t.name == "simulation-steps"]
