"""`crowdpulse evaluate --footfall`: weeks of the `free-parking` scenario through the pipeline in
stream time, then the report's uplift scored against the causal truth (docs/footfall.md).

The run: the embedded services (Redis, PostgreSQL, the broker), one worker's ingest and
estimator (WorkerParts, the same code a worker runs) fed the simulator's frames in process,
an estimator pass per 10 simulated minutes, so weeks take minutes and every minute is
estimated; the history writer stores hours and days in PostgreSQL as a live worker does. (The
Kafka path of the history is covered by tests/integration/pipeline/test_history.py; here the
broker would only add transport time.) The report (streams/tools/report.py) then compares
the after weeks with the before weeks, against the control area, from the stored rows.

The truth: producers/footfall_truth.py, the same simulation's people with and without the
intervention (same seed): `did` is the intervention's effect on the area's daily visitors net
of the control's. Scored: the reported change minus `did` (percentage points) and whether the
90% interval holds `did`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, cast

MINUTE_MS = 60_000
#: Simulated time after the last visitor day: its buckets must be merged (an hour after they
#: are sealed) before the day is counted.
TAIL_S = 2.5 * 3600


def footfall_options(quick: bool, weeks: int | None) -> tuple[int, int]:
    """(weeks before, weeks after) of the run."""
    if weeks is not None:
        return weeks, weeks
    return (2, 2) if quick else (4, 4)


async def _drive(settings: Any, areas: Any, run: Any, log_every_days: float = 7.0) -> dict[str, float]:
    from producers.publisher import Framer
    from streams.pipeline.ingest import Message
    from streams.runtime.app import WorkerParts

    sim = run.simulation(areas)
    framer = Framer(run.producer_id, settings.partitions, areas.cell_ids)
    parts = WorkerParts.build(settings, areas)
    offsets = {p: 0 for p in range(settings.partitions)}
    end = run.start_ms + int(run.duration_s * 1000)
    started, events, next_log = time.perf_counter(), 0, run.start_ms + log_every_days * 86_400_000
    while sim.now_ms < end:
        batch: list[Message] = []
        until = min(end, sim.now_ms + 10 * MINUTE_MS)
        while sim.now_ms < until:
            step, shadows = sim.step_with_shadows(until)
            events += len(step)
            for frames in (framer.frames(step), framer.frames(shadows, shadow=True)):
                for partition, key, frame in frames:
                    batch.append(Message("events", partition, offsets[partition], key, frame))
                    offsets[partition] += 1
        await parts.ingest.ingest(batch)
        await parts.estimator.run()
        if sim.now_ms >= next_log:
            next_log += log_every_days * 86_400_000
            print(f"  {dt.datetime.fromtimestamp(sim.now_ms / 1000, dt.timezone.utc):%Y-%m-%d %H:%M} simulated, "
                  f"{events:,} events, {time.perf_counter() - started:.0f} s", flush=True)
    for _ in range(3):
        await parts.estimator.run()
    stats = await parts.hll.stats()
    return {"events": events, "seconds": time.perf_counter() - started, "counted": stats.get("counted", 0)}


def evaluate_footfall(quick: bool, devices: int | None, seed: int, overrides: dict[str, str], weeks: int | None,
                      out_dir: Path | None) -> dict[str, Any]:
    from producers.footfall_truth import footfall_effect, footfall_truth
    from producers.scenarios import configure
    from producers.simulate import SimulationRun
    from streams.core.areas import load_areas
    from streams.core.settings import Settings
    from streams.pipeline.history_store import read_days
    from streams.runtime.services import EmbeddedServices
    from streams.tools.report import DailyRow, build_report, write_report
    from streams.tools.report_command import usable

    before_weeks, after_weeks = footfall_options(quick, weeks)
    days = 7 * (before_weeks + after_weeks)
    values = {"intervention_day": str(7 * before_weeks), "duration_s": str(days * 86_400 + 4 * 3600 + TAIL_S), **overrides}
    config = configure("free-parking", values)
    scenario = config.scenario
    n = devices or (3_000 if quick else scenario.full_devices)
    out = out_dir or Path(tempfile.mkdtemp(prefix="crowdpulse-footfall-"))
    with EmbeddedServices(history=True) as services:
        endpoints = services.endpoints
        settings = Settings.from_env({"CROWDPULSE_REDIS": endpoints.redis_url, "CROWDPULSE_HISTORY_DB": endpoints.history_db or "",
                                      "CROWDPULSE_NAMESPACE": f"ff{secrets.token_hex(3)}"})
        areas = load_areas(settings.areas_path)
        run = SimulationRun(devices=n, seed=seed, start_ms=scenario.start_ms(), duration_s=scenario.duration_s, speedup=0.0,
                            partitions=settings.partitions, producer_id=secrets.randbits(63), scenario="free-parking",
                            overrides=tuple(values.items()), rotation=settings.rotation, step_s=60.0)
        print(f"footfall: {days} days of free-parking, {n:,} devices, seed {seed}, through the pipeline in stream time", flush=True)
        driven = asyncio.run(_drive(settings, areas, run))
        first = dt.datetime.fromtimestamp(scenario.start_ms() / 1000, dt.timezone.utc).date()
        intervention = first + dt.timedelta(days=7 * before_weeks)
        before = (first, intervention - dt.timedelta(days=1))
        after = (intervention, intervention + dt.timedelta(days=7 * after_weeks - 1))
        control = getattr(scenario, "control", "east-district")
        rows = usable(read_days(endpoints.history_db or "", settings.namespace, scenario.focus, before[0], after[1]))
        control_rows = usable(read_days(endpoints.history_db or "", settings.namespace, control, before[0], after[1]))
    started = time.perf_counter()
    report = build_report(scenario.focus, cast("list[DailyRow]", rows), before, after, control,
                          cast("list[DailyRow]", control_rows))
    written = write_report(report, out)
    report_s = time.perf_counter() - started
    truth_started = time.perf_counter()
    truth = footfall_truth(areas, n, seed, config, scenario.start_ms(), scenario.duration_s)
    effect = footfall_effect(truth, scenario.focus, control)
    v = report.visitors
    return {
        "scenario": "free-parking", "devices": n, "seed": seed, "weeks_before": before_weeks, "weeks_after": after_weeks,
        "uplift_pct_setting": getattr(scenario, "uplift_pct", None), "weekend_uplift_pct_setting": getattr(scenario, "weekend_uplift_pct", None),
        "area": scenario.focus, "control": control,
        "reported_change": v.change, "reported_low": v.low, "reported_high": v.high,
        "true_did": effect.did, "true_uplift": effect.uplift, "true_control_uplift": effect.control_uplift,
        "true_observed_did": effect.observed_did,
        "error_pp": 100 * (v.change - effect.did),
        "interval_holds_truth": bool(v.low <= effect.did <= v.high),
        "occupancy_change": report.occupancy.change if report.occupancy else None,
        "days_used_before": v.days_before, "days_used_after": v.days_after,
        "pipeline_events": driven["events"], "pipeline_seconds": round(driven["seconds"], 1),
        "truth_seconds": round(time.perf_counter() - truth_started, 1), "report_seconds": round(report_s, 2),
        "report": str(out / "report.html"), "files": [str(p) for p in written],
    }


def format_footfall(r: dict[str, Any]) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:+.2f}%"

    lines = [
        f"free-parking: {r['weeks_before']} weeks before, {r['weeks_after']} after; {r['devices']:,} devices, seed {r['seed']}; "
        f"setting +{r['uplift_pct_setting']}% weekdays, +{r['weekend_uplift_pct_setting']}% weekends (shop trips)",
        f"  {'':34} {'change':>9} {'90% interval':>22}",
        f"  {'reported (pipeline, DiD vs ' + r['control'] + ')':34} {pct(r['reported_change']):>9} "
        f"{pct(r['reported_low']) + ' to ' + pct(r['reported_high']):>22}",
        f"  {'truth: causal effect (DiD)':34} {pct(r['true_did']):>9}",
        f"  {'truth: a perfect counter (DiD)':34} {pct(r['true_observed_did']):>9}",
        f"  error {r['error_pp']:+.2f} points; interval holds the truth: {'yes' if r['interval_holds_truth'] else 'NO'}",
        f"  pipeline {r['pipeline_events']:,} events in {r['pipeline_seconds']:.0f} s; report in {r['report_seconds']:.2f} s; "
        f"truth in {r['truth_seconds']:.0f} s",
        f"  report: {r['report']}",
    ]
    return "\n".join(lines)
