"""`crowdpulse evaluate`: run a scenario end to end through the real pipeline and score the live
estimates against the simulator's ground truth. This module owns the run; the scoring is in
score.py (pure), the plots in plots.py, the table and report files in report.py, the options in
options.py.

The run: embedded broker and Redis (unless CROWDPULSE_KAFKA / CROWDPULSE_REDIS say otherwise),
a `crowdpulse worker` subprocess on fresh topics, Redis namespace and consumer group (started,
its topics created and its HTTP API waited for by the shared worker harness, streams/tools/
harness.py; its log in <out_dir>/logs/worker.log), the scenario published with kafka-python
paced so that stream time never runs far ahead of the worker, then every message of
`crowd.occupancy` read back with a plain consumer (the last message per area, window and as_of
wins) and scored. The worker never sees the truth: the simulator keeps it in memory. Everything
started is stopped in `finally`. Plots (one PNG per area), report.json / report.md and the
truth (truth.jsonl) go to the output directory.

The run crosses a pseudonym-key rotation (by default at its middle, `--rotate-at` to choose):
the simulator and the worker follow the same schedule, and `rotation_check` (score.py) reports
the windows spanning it apart. With differential privacy (`--dp EPSILON`, `evaluate_dp`) the
run is made twice, without and with noise (same seed, same events), and `dp_cost` (score.py)
sets the noisy error beside HLL's alone (docs/privacy.md).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import time
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.core.areas import load_areas
from streams.core.errors import ConfigError
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.estimate.privacy import DiscreteLaplace
from streams.tools.evaluate.options import DP_RELEASES_PER_POINT, EvalOptions
from streams.tools.evaluate.plots import plot_areas
from streams.tools.evaluate.report import write_report
from streams.tools.evaluate.score import dp_cost, evaluation_rotation, rotation_check, rotations_between, score
from streams.tools.harness import estimator_busy

if TYPE_CHECKING:
    from streams.tools.harness import WorkerProcess

log = logging.getLogger(__name__)

WEEK_MS = 7 * 86_400_000
#: How long the worker may take to answer its HTTP API after it is started.
WORKER_HTTP_WAIT_S = 90.0


def evaluate(
    options: EvalOptions,
    environ: Mapping[str, str] | None = None,
    published: dict | None = None,
    baseline: Mapping[tuple[str, int, int], dict] | None = None,
) -> dict:
    """Run the scenario through the pipeline and score it; returns the report (also written).

    `published`, if given, receives the last published estimate of every point; `baseline` is
    that of the same run without noise, for the `dp` section of a run with `dp_epsilon`.
    """
    from producers.publisher import KafkaSink
    from producers.scenarios import configure
    from producers.simulate import Progress, SimulationRun, run_simulation
    from producers.simulator import Simulation
    from streams.core.keys import KeyLayout
    from streams.runtime.services import EmbeddedServices
    from streams.tools.harness import launch_worker

    environ = dict(os.environ if environ is None else environ)
    settings = Settings.from_env(environ)
    areas = load_areas(settings.areas_path)
    config = configure(options.scenario, dict(options.overrides), quick=options.quick)
    scenario = config.scenario
    devices = options.devices or (scenario.quick_devices if options.quick else scenario.full_devices)
    duration_s = options.duration_s or scenario.duration_s
    pace = options.pace or 3600.0
    if devices <= 0 or duration_s <= 0 or pace <= 0:
        raise ConfigError("devices, duration and pace must be positive")
    start_ms = scenario.start_ms()
    # The worker rejects events far ahead of the wall clock: a scenario dated in the future is
    # moved back by whole weeks (same weekday and time of day) until it has happened.
    now_ms = int(time.time() * 1000)
    while start_ms + duration_s * 1000 > now_ms:
        start_ms -= WEEK_MS
    end_ms = start_ms + int(duration_s * 1000)
    rotation = evaluation_rotation(settings.rotation, start_ms, end_ms, options.rotate_at_s, settings.bucket_s)
    rotation.check(settings.bucket_s, max(settings.windows_s))  # --rotate-at on a whole bucket
    out_dir = options.out_dir or Path(tempfile.mkdtemp(prefix=f"crowdpulse-eval-{options.scenario}-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"

    sim = Simulation(areas, devices, options.seed, start_ms, config=config, rotation=rotation, truth=True,
                     bucket_s=settings.bucket_s, windows_s=settings.windows_s)
    services = EmbeddedServices(environ, log_dir=log_dir)
    worker: WorkerProcess | None = None
    occupancy: _Occupancy | None = None
    wall_started = time.monotonic()
    try:
        endpoints = services.start()
        tag = secrets.token_hex(4)
        worker_settings = {
            "CROWDPULSE_APP_ID": f"crowdpulse-eval-{tag}",
            "CROWDPULSE_TOPIC_PREFIX": f"eval-{tag}.",
            "CROWDPULSE_NAMESPACE": f"eval{tag}",
            "CROWDPULSE_HTTP_HOST": "127.0.0.1",
            "CROWDPULSE_AREAS": str(settings.areas_path),
            # The worker follows the simulator's pseudonym-key schedule (docs/privacy.md).
            "CROWDPULSE_ROTATION_PERIOD_S": str(rotation.period_s),
            "CROWDPULSE_ROTATION_OFFSET_S": str(rotation.offset_s),
            "CROWDPULSE_ROTATION_OVERLAP_S": str(rotation.overlap_s),
        }
        if options.dp_epsilon is not None:
            worker_settings.update(dp_env(options.dp_epsilon, settings.windows_s, environ))
        # The harness adds the services, a free HTTP port and this checkout on PYTHONPATH to the
        # caller's environment, creates the topics (with the Kafka security settings, for an
        # external Kafka) and returns once the worker answers HTTP.
        worker = launch_worker(endpoints, log_dir / "worker.log", worker_settings, base_env=environ,
                               wait=WORKER_HTTP_WAIT_S)
        wsettings = worker.settings
        topics = TopicNames(wsettings.topic_prefix)
        security = wsettings.kafka_security.kafka_python_config()  # SASL/TLS for an external Kafka
        log.info("worker up on %s; publishing %s (%d devices, %.0f simulated minutes)", worker.base_url,
                 options.scenario, devices, duration_s / 60)

        run = SimulationRun(devices=devices, seed=options.seed, start_ms=start_ms, duration_s=duration_s, speedup=0.0,
                            partitions=wsettings.partitions, producer_id=secrets.randbits(63),
                            bucket_s=wsettings.bucket_s, windows_s=wsettings.windows_s, scenario=options.scenario,
                            rotation=rotation)
        sink = KafkaSink(endpoints.kafka, topics.events, **security)
        pacer = _Pacer(start_ms, pace, int(options.max_ahead_s * 1000), worker)
        summary = run_simulation(run, areas, sink, sim=sim, on_step=pacer, progress=Progress(start_ms, end_ms))
        sent = summary["events"]
        stats = _wait(lambda: (s := _ingest(worker)).get("events_in", -1) >= sent and s, 300,
                      f"the worker to take in {sent:,} events", worker)
        # The estimator is done when nothing is left for it and the last point of every area
        # and window is out; then one more quiet interval for a pass already under way.
        layout = KeyLayout(wsettings.namespace, wsettings.bucket_s)
        import redis

        client = redis.Redis.from_url(endpoints.redis_url)
        occupancy = _Occupancy(endpoints.kafka, topics.occupancy, wsettings.partitions, **security)
        last_as_of = (stats["stream_time"] // wsettings.bucket_ms + 1) * wsettings.bucket_ms
        final = {(a, w, last_as_of) for a in areas.area_ids for w in wsettings.windows_s}
        quiet_since = None
        deadline = time.monotonic() + 180
        while True:
            got = occupancy.poll()
            done = not estimator_busy(client, layout, wsettings.partitions) and final <= occupancy.points.keys()
            quiet_since = (quiet_since or time.monotonic()) if done and not got else None
            if quiet_since is not None and time.monotonic() - quiet_since >= 2.5 * wsettings.publish_interval_s:
                break
            if worker.process.poll() is not None:
                raise RuntimeError(_exited(worker, "waiting for the estimator's last points"))
            if time.monotonic() > deadline:
                raise RuntimeError(f"the estimator did not publish the final minute within 180 s; see {log_dir}")
        client.close()
        skipped = worker.metric("crowdpulse_estimate_points_skipped_total")
        stats = _ingest(worker) or stats
    finally:
        if occupancy is not None:
            occupancy.close()
        if worker is not None:
            worker.stop(timeout=15)
        services.stop()

    truth = sim.truth.table()  # type: ignore[union-attr]
    scores = score(truth, occupancy.points, start_ms, options.window_s, options.min_people, wsettings.min_count,
                   scenario.episodes(start_ms), scenario.focus)
    report = {
        "scenario": options.scenario,
        "quick": options.quick,
        "seed": options.seed,
        "devices": devices,
        "start": _iso(start_ms),
        "end": _iso(end_ms),
        "simulated_min": duration_s / 60,
        "population": summary["population"],
        "event_types": summary["event_types"],
        "events": sent,
        "shadow_events": summary["shadow_events"],
        "publish_wall_s": summary["wall_s"],
        "events_in": stats["events_in"],
        "counted": stats["counted"],
        "deadletter": stats["deadletter"],
        "late": stats["late"],
        "points_skipped": int(skipped) if skipped is not None else None,
        "occupancy_messages": occupancy.messages,
        **scores,
        "out_dir": str(out_dir),
    }
    report["rotation_at"] = [_iso(b) for b in rotations_between(rotation, start_ms, end_ms)]
    report["rotation_offset_s"], report["rotation_overlap_s"] = rotation.offset_s, rotation.overlap_s
    city = areas.widest()  # the whole city
    report.update(rotation_check(truth, occupancy.points, rotation, city, start_ms, wsettings.min_count))
    if options.dp_epsilon is not None:
        mechanism = DiscreteLaplace(options.dp_epsilon, wsettings.dp_sensitivity, b"only-for-the-quantile")
        report["dp"] = {
            "epsilon": options.dp_epsilon,
            "sensitivity": wsettings.dp_sensitivity,
            "daily_budget": wsettings.dp_daily_budget,
            "budget_note": "CROWDPULSE_DP_DAILY_BUDGET" if environ.get("CROWDPULSE_DP_DAILY_BUDGET") else
                           f"evaluate's default: {DP_RELEASES_PER_POINT} releases of every point of a day",
            "noise_90": mechanism.quantile(0.90),
            "released_messages": occupancy.noisy,
            "withheld_messages": occupancy.budget_withheld,
            **dp_cost(truth, occupancy.points, baseline or {}, wsettings.min_count),
        }
    if published is not None:
        published.update(occupancy.points)
    title = f"{options.scenario}{' (quick)' if options.quick else ''}, estimate ({options.window_s // 60}-min window) vs truth"
    report["plots"] = [str(p) for p in plot_areas(truth, occupancy.points, options.window_s, out_dir, title, options.min_people)]
    report["wall_s"] = round(time.monotonic() - wall_started, 1)
    write_report(report, out_dir)
    with open(out_dir / "truth.jsonl", "w") as f:
        for row in truth.rows():
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return report


def dp_env(epsilon: float, windows_s: tuple[int, ...], environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's differential-privacy settings for `--dp`: the daily budget and noise secret
    from the environment if set; else a budget for DP_RELEASES_PER_POINT releases of every point
    of a day (a republished point with a changed count is charged again), so that a run shows
    the cost of the noise rather than of the budget, and a fresh secret."""
    budget = epsilon * len(windows_s) * (86_400 // 60) * DP_RELEASES_PER_POINT
    return {
        "CROWDPULSE_DP_EPSILON": repr(epsilon),
        "CROWDPULSE_DP_DAILY_BUDGET": environ.get("CROWDPULSE_DP_DAILY_BUDGET") or repr(budget),
        "CROWDPULSE_DP_SECRET": environ.get("CROWDPULSE_DP_SECRET") or secrets.token_hex(16),
    }


def evaluate_dp(options: EvalOptions, environ: Mapping[str, str] | None = None) -> dict:
    """`evaluate --dp EPSILON`: the run without noise (its report in <out_dir>/without-noise),
    then the same run (same seed: the same events, the same HyperLogLogs) with noise; returns
    the noisy run's report, whose `dp` section sets its error beside that of HLL alone."""
    if options.dp_epsilon is None or not options.dp_epsilon > 0:
        raise ConfigError("--dp needs an epsilon > 0")
    out_dir = options.out_dir or Path(tempfile.mkdtemp(prefix=f"crowdpulse-eval-{options.scenario}-dp-"))
    environ = dict(os.environ if environ is None else environ)
    without_noise = {k: v for k, v in environ.items() if k != "CROWDPULSE_DP_EPSILON"}
    plain: dict = {}
    evaluate(replace(options, dp_epsilon=None, out_dir=out_dir / "without-noise"), without_noise, published=plain)
    return evaluate(replace(options, out_dir=out_dir), environ, baseline=plain)


# --- the worker, the pacer and the occupancy reader --------------------------------------------

@dataclass
class _Pacer:
    """Called after each simulated step: keeps the simulation at most `pace` x real time and at
    most `max_ahead_ms` ahead of the stream time the estimator last published for. Bounding the
    estimator (not only ingest) bounds how far stream time can jump between two estimator
    passes, so it never has to skip a point (it catches up at most 240 minutes per pass)."""

    start_ms: int
    pace: float
    max_ahead_ms: int
    worker: WorkerProcess
    wall_start: float = field(default_factory=time.monotonic)
    estimator_ms: int | None = None
    last_poll: float = 0.0

    def __call__(self, now_ms: int) -> None:
        due = self.wall_start + (now_ms - self.start_ms) / 1000 / self.pace
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if now_ms - (self.estimator_ms or self.start_ms) <= self.max_ahead_ms:
            return
        stalled_since = time.monotonic()
        while True:
            if time.monotonic() - self.last_poll >= 0.25:
                self.last_poll = time.monotonic()
                seconds = self.worker.metric("crowdpulse_stream_time_seconds")
                self.estimator_ms = int(seconds * 1000) if seconds else None
            if now_ms - (self.estimator_ms or self.start_ms) <= self.max_ahead_ms:
                return
            if self.worker.process.poll() is not None:
                raise RuntimeError(_exited(self.worker, "the scenario was being published"))
            if time.monotonic() - stalled_since > 180:
                raise RuntimeError("the worker's estimator made no progress for 180 s")
            time.sleep(0.05)


class _Occupancy:
    """Reads crowd.occupancy from the beginning, keeping the last message per point."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, **security: object) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                                      group_id=None, max_partition_fetch_bytes=8 << 20, **security)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.points: dict[tuple[str, int, int], dict] = {}
        self.messages = 0
        #: Differential privacy: noisy releases, and releases withheld for the budget.
        self.noisy = 0
        self.budget_withheld = 0

    def poll(self, timeout_ms: int = 500) -> int:
        got = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=50_000).values():
            for message in records:
                body = json.loads(message.value)
                self.points[(body["area"], int(body["window_s"]), int(body["as_of"]))] = body
                got += 1
                self.noisy += int("noise" in body)
                self.budget_withheld += int(body.get("suppressed_reason") == "privacy_budget")
        self.messages += got
        return got

    def close(self) -> None:
        self.consumer.close()


def _ingest(worker: WorkerProcess) -> dict:
    """The worker's /api/ingest, or {} if it does not answer."""
    try:
        return worker.stats()
    except (OSError, urllib.error.URLError, ValueError):
        return {}


def _wait(condition: Callable[[], Any], timeout: float, what: str, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if worker.process.poll() is not None:
            raise RuntimeError(_exited(worker, f"waiting for {what}"))
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {worker.log_path.parent}")
        time.sleep(0.25)


def _exited(worker: WorkerProcess, during: str) -> str:
    """The error for a worker that died during the run: its exit code, its log and the log's tail."""
    return (f"the worker exited with code {worker.process.poll()} while {during}; see {worker.log_path}; "
            f"its log ends:\n{worker.log_tail()}")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(ms / 1000))
