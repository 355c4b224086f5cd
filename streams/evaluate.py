"""`crowdpulse evaluate`: run a scenario end to end through the real pipeline and score the live
estimates against the simulator's ground truth.

The run: embedded broker and Redis (unless CROWDPULSE_KAFKA / CROWDPULSE_REDIS say otherwise),
a `crowdpulse worker` subprocess on fresh topics, Redis namespace and consumer group, the
scenario published with kafka-python paced so that stream time never runs far ahead of the
worker, then every message of `crowd.occupancy` read back with a plain consumer (the last
message per area, window and as_of wins) and scored. The worker never sees the truth: the
simulator keeps it in memory. Everything started is stopped in `finally`.

The scoring (`score`) is pure:
- HyperLogLog fidelity: published `devices` against the exact distinct devices with an event
  in the same window (the pipeline's definition: event time [as_of - W, as_of));
- occupancy: published `people` against people truly present at `as_of`, only where at least
  `min_people` (1,000) are truly present and the window lies wholly inside the run; MAPE, bias,
  worst area; `naive_mape` scores the model people = distinct devices in the 15-minute window;
- surge lag: per fill/empty episode of the scenario's focus area, the estimate's 50% crossing
  (halfway between its own low and high in the episode) minus the truth's, in minutes;
- range coverage: the share of scored minutes whose truth lies in [people_low, people_high].
Plots (one PNG per area) and report.json / report.md go to the output directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .areas import load_areas
from .settings import Settings
from .topics import TopicNames

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
WEEK_MS = 7 * 86_400_000
NAIVE_WINDOW_S = 900


@dataclass(frozen=True)
class EvalOptions:
    scenario: str = "match-day"
    quick: bool = False
    devices: int | None = None
    duration_s: float | None = None
    seed: int = 1
    overrides: tuple[tuple[str, str], ...] = ()
    #: Simulated seconds per wall second, at most (None: 3600, an hour a second).
    pace: float | None = None
    #: The window whose estimates the headline figures score.
    window_s: int = 900
    #: Occupancy is scored only where at least this many people are truly present.
    min_people: int = 1000
    out_dir: Path | None = None
    #: How far (stream time) the publisher may run ahead of the estimator.
    max_ahead_s: float = 1800.0


# --- scoring (pure) -----------------------------------------------------------------------------

def score(
    truth: Any,
    estimates: Mapping[tuple[str, int, int], dict],
    start_ms: int,
    window_s: int = 900,
    min_people: int = 1000,
    min_count: int = 15,
    episodes: list | None = None,
    focus: str = "",
) -> dict:
    """Score published estimates against a TruthTable (producers/truth.py).

    `estimates` maps (area, window_s, as_of) to the last published estimate of that point.
    """
    windows = list(truth.windows_s)
    if window_s not in windows:
        raise ValueError(f"window {window_s}s is not one of the published windows {windows}")
    rows: list[dict] = []
    hll_all: list[float] = []
    pooled: dict[str, list] = {"ape": [], "signed": [], "inside": [], "naive": []}
    missing = 0
    for a, area in enumerate(truth.area_ids):
        for i, w in enumerate(windows):
            hll: list[float] = []
            ape: list[float] = []
            signed: list[float] = []
            inside: list[bool] = []
            naive: list[float] = []
            for t, as_of in enumerate(truth.as_of.tolist()):
                est = estimates.get((area, w, as_of))
                if est is None:
                    missing += 1
                    continue
                exact = int(truth.distinct[t, a, i])
                if not est["suppressed"] and exact >= min_count:
                    hll.append((est["devices"] - exact) / exact)
                people = int(truth.people[t, a])
                if as_of - start_ms < w * 1000 or people < min_people or est["suppressed"]:
                    continue
                ape.append(abs(est["people"] - people) / people)
                signed.append((est["people"] - people) / people)
                inside.append(est["people_low"] <= people <= est["people_high"])
                naive_est = estimates.get((area, NAIVE_WINDOW_S, as_of))
                if naive_est is not None and not naive_est["suppressed"] and w == window_s:
                    naive.append(abs(naive_est["devices"] - people) / people)
            abs_hll = np.abs(hll)
            rows.append({
                "area": area,
                "window_s": w,
                "hll_points": len(hll),
                "hll_p50_rel_error": _q(abs_hll, 50),
                "hll_p95_rel_error": _q(abs_hll, 95),
                "hll_max_rel_error": float(abs_hll.max()) if len(abs_hll) else None,
                "occupancy_minutes": len(ape),
                "occupancy_mape": _mean(ape),
                "occupancy_bias": _mean(signed),
                "range_coverage": _mean(inside),
            })
            hll_all.extend(hll)
            if w == window_s:
                pooled["ape"].extend(ape)
                pooled["signed"].extend(signed)
                pooled["inside"].extend(inside)
                pooled["naive"].extend(naive)
    headline = [r for r in rows if r["window_s"] == window_s and r["occupancy_minutes"]]
    worst = max(headline, key=lambda r: r["occupancy_mape"]) if headline else None
    lags = surge_lags(truth, estimates, focus, window_s, episodes or [])
    lag_values = [e["lag_min"] for e in lags if e["lag_min"] is not None]
    return {
        "window_s": window_s,
        "min_people": min_people,
        "hll_p50_rel_error": _q(np.abs(hll_all), 50),
        "hll_p95_rel_error": _q(np.abs(hll_all), 95),
        "hll_points": len(hll_all),
        "occupancy_mape": _mean(pooled["ape"]),
        "occupancy_bias": _mean(pooled["signed"]),
        "naive_mape": _mean(pooled["naive"]),
        "scored_minutes": len(pooled["ape"]),
        "worst_area": worst["area"] if worst else None,
        "worst_area_mape": worst["occupancy_mape"] if worst else None,
        "surge_area": focus or None,
        "surge_lag_min": float(np.mean(lag_values)) if lag_values else None,
        "surge_episodes": lags,
        "range_coverage": _mean(pooled["inside"]),
        "missing_points": missing,
        "areas": rows,
    }


def surge_lags(truth: Any, estimates: Mapping[tuple[str, int, int], dict], area: str, window_s: int,
               episodes: list) -> list[dict]:
    """Per episode: when the estimate crosses halfway between its own low and high, minus when
    the truth does (minutes; positive: the estimate is late). Each series is measured against
    its own range, so a biased level does not masquerade as a delay."""
    if not area or area not in truth.area_ids:
        return []
    a = truth.area_ids.index(area)
    out = []
    for ep in episodes:
        sel = np.flatnonzero((truth.as_of >= ep.from_ms) & (truth.as_of <= ep.to_ms))
        if len(sel) < 3:
            out.append({"episode": ep.label, "lag_min": None, "truth_cross": None, "estimate_cross": None})
            continue
        times = truth.as_of[sel]
        real = truth.people[sel, a].astype(float)
        est = np.array([_people(estimates.get((area, window_s, int(t)))) for t in times])
        t_real = _crossing(times, real, ep.direction)
        t_est = _crossing(times, est, ep.direction)
        lag = (t_est - t_real) / 60_000 if t_real is not None and t_est is not None else None
        out.append({"episode": ep.label, "lag_min": lag, "truth_cross": t_real, "estimate_cross": t_est})
    return out


def _crossing(times: np.ndarray, values: np.ndarray, direction: int) -> int | None:
    """First time, after the series' extreme on the far side, it crosses halfway up (or down)."""
    values = np.nan_to_num(values, nan=0.0)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0:
        return None
    mid = lo + 0.5 * (hi - lo)
    begin = int(np.argmin(values)) if direction > 0 else int(np.argmax(values))
    after = values[begin:]
    hits = np.flatnonzero(after >= mid if direction > 0 else after <= mid)
    return int(times[begin + hits[0]]) if len(hits) else None


def _people(est: dict | None) -> float:
    if est is None:
        return float("nan")
    return 0.0 if est["suppressed"] else float(est["people"])


def _q(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if len(values) else None


# --- report -------------------------------------------------------------------------------------

def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def format_table(report: dict) -> str:
    s = report
    lines = [
        f"crowdpulse evaluate: scenario {s['scenario']}{' (quick)' if s['quick'] else ''}, seed {s['seed']}, "
        f"{s['start']} -> {s['end']} ({s['simulated_min']:.0f} simulated minutes)",
        f"  population: {s['population']['people']:,} people ({s['population']['visitors']:,} visitors, "
        f"{s['population']['in-commuters']:,} in-commuters), {s['population']['visible_devices']:,} operator devices "
        f"({s['population']['visible_m2m']:,} M2M) of {s['population']['devices_all_operators']:,} on all networks",
        f"  pipeline: {s['events']:,} events published in {s['publish_wall_s']:.1f} s; worker in {s['events_in']:,} = counted "
        f"{s['counted']:,} + dead-lettered {s['deadletter']:,} + late {s['late']:,}; estimate points skipped "
        f"{s['points_skipped']}, missing {s['missing_points']}",
        f"  occupancy is scored where >= {s['min_people']:,} people are truly present and the window lies inside the run",
        "",
        f"{'area':<15} {'window':>6} {'hll p50':>8} {'hll p95':>8} {'occ min':>8} {'occ MAPE':>9} {'bias':>8} {'in range':>9}",
    ]
    for r in s["areas"]:
        lines.append(
            f"{r['area']:<15} {r['window_s']:>5}s {_pct(r['hll_p50_rel_error']):>8} {_pct(r['hll_p95_rel_error']):>8} "
            f"{r['occupancy_minutes']:>8} {_pct(r['occupancy_mape']):>9} {_pct(r['occupancy_bias'], True):>8} "
            f"{_pct(r['range_coverage']):>9}"
        )
    lines += [
        "",
        f"headline ({s['window_s']}s window): hll_p95_rel_error {_pct(s['hll_p95_rel_error'])}, occupancy_mape "
        f"{_pct(s['occupancy_mape'])} (bias {_pct(s['occupancy_bias'], True)}), naive_mape {_pct(s['naive_mape'])}, "
        f"worst area {s['worst_area']} ({_pct(s['worst_area_mape'])}), range_coverage {_pct(s['range_coverage'])}",
    ]
    if s["surge_episodes"]:
        parts = ", ".join(
            f"{e['episode']} {e['lag_min']:+.0f} min" if e["lag_min"] is not None else f"{e['episode']} n/a"
            for e in s["surge_episodes"]
        )
        lag = s["surge_lag_min"]
        lines.append(f"surge lag ({s['surge_area']}, 50% crossings): {parts} -> surge_lag_min "
                     f"{'n/a' if lag is None else f'{lag:+.1f}'}")
    lines.append(f"plots and report: {s['out_dir']}")
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> None:
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "report.md").write_text("```\n" + format_table(report) + "\n```\n")


def plot_areas(truth: Any, estimates: Mapping[tuple[str, int, int], dict], window_s: int, out_dir: Path,
               title: str, min_people: int) -> list[Path]:
    """One PNG per area: the published band and people against the truth, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    times = truth.as_of.astype("datetime64[ms]")
    w_index = list(truth.windows_s).index(window_s)
    paths = []
    for a, area in enumerate(truth.area_ids):
        est = [estimates.get((area, window_s, int(t))) for t in truth.as_of]
        ok = [e is not None and not e["suppressed"] for e in est]

        def series(key: str) -> np.ndarray:
            return np.array([e[key] if good else np.nan for e, good in zip(est, ok)], dtype=float)

        fig, ax = plt.subplots(figsize=(11, 4.8), dpi=100)
        ax.fill_between(times, series("people_low"), series("people_high"), color="tab:blue", alpha=0.25,
                        label=f"published range ({window_s // 60}-min window)")
        ax.plot(times, series("people"), color="tab:blue", lw=1.4, label="published people")
        ax.plot(times, truth.people[:, a], color="black", lw=1.6, label="people truly present")
        ax.plot(times, truth.devices_present[:, a], color="tab:green", lw=1, ls=":", label="operator devices present")
        ax.plot(times, truth.distinct[:, a, w_index], color="tab:gray", lw=1, ls="--",
                label="exact distinct devices in window (a perfect HLL)")
        ax.axhline(min_people, color="tab:red", lw=0.6, ls="-.", alpha=0.5, label=f"scoring threshold ({min_people:,})")
        ax.set_title(f"{area}: {title}")
        ax.set_ylabel("people / devices")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M"))
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = plots / f"{area}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


# --- the run ------------------------------------------------------------------------------------

@dataclass
class _Pacer:
    """Called after each simulated step: keeps the simulation at most `pace` x real time and at
    most `max_ahead_ms` ahead of the stream time the estimator last published for. Bounding the
    estimator (not only ingest) bounds how far stream time can jump between two estimator
    passes, so it never has to skip a point (it catches up at most 240 minutes per pass)."""

    start_ms: int
    pace: float
    max_ahead_ms: int
    base_url: str
    worker: Any
    wall_start: float = field(default_factory=time.monotonic)
    estimator_ms: int | None = None
    last_poll: float = 0.0

    def __call__(self, sim: Any) -> None:
        due = self.wall_start + (sim.now_ms - self.start_ms) / 1000 / self.pace
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if sim.now_ms - (self.estimator_ms or self.start_ms) <= self.max_ahead_ms:
            return
        stalled_since = time.monotonic()
        while True:
            if time.monotonic() - self.last_poll >= 0.25:
                self.last_poll = time.monotonic()
                seconds = _metric(self.base_url, "crowdpulse_stream_time_seconds")
                self.estimator_ms = int(seconds * 1000) if seconds else None
            if sim.now_ms - (self.estimator_ms or self.start_ms) <= self.max_ahead_ms:
                return
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {self.worker.poll()}")
            if time.monotonic() - stalled_since > 180:
                raise RuntimeError("the worker's estimator made no progress for 180 s")
            time.sleep(0.05)


def _ingest(base_url: str) -> dict:
    from .cli import http_json

    try:
        return http_json(base_url + "/api/ingest", timeout=5.0)  # type: ignore[return-value]
    except (OSError, urllib.error.URLError, ValueError):
        return {}


def _metric(base_url: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:  # noqa: S310 (loopback)
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


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

    def poll(self, timeout_ms: int = 500) -> int:
        got = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=50_000).values():
            for message in records:
                body = json.loads(message.value)
                self.points[(body["area"], int(body["window_s"]), int(body["as_of"]))] = body
                got += 1
        self.messages += got
        return got

    def close(self) -> None:
        self.consumer.close()


def evaluate(options: EvalOptions, environ: Mapping[str, str] | None = None) -> dict:
    """Run the scenario through the pipeline and score it; returns the report (also written)."""
    from producers.publisher import KafkaSink
    from producers.scenarios import configure
    from producers.simulate import Progress, SimulationRun, run_simulation
    from producers.simulator import Simulation

    from .cli import topic_partitions
    from .keys import KeyLayout
    from .services import EmbeddedServices, ManagedProcess, ensure_topics, free_port

    environ = dict(os.environ if environ is None else environ)
    settings = Settings.from_env(environ)
    areas = load_areas(settings.areas_path)
    config = configure(options.scenario, dict(options.overrides), quick=options.quick)
    scenario = config.scenario
    devices = options.devices or (scenario.quick_devices if options.quick else scenario.full_devices)
    duration_s = options.duration_s or scenario.duration_s
    pace = options.pace or 3600.0
    if devices <= 0 or duration_s <= 0 or pace <= 0:
        raise ValueError("devices, duration and pace must be positive")
    start_ms = scenario.start_ms()
    # The worker rejects events far ahead of the wall clock: a scenario dated in the future is
    # moved back by whole weeks (same weekday and time of day) until it has happened.
    now_ms = int(time.time() * 1000)
    while start_ms + duration_s * 1000 > now_ms:
        start_ms -= WEEK_MS
    end_ms = start_ms + int(duration_s * 1000)
    out_dir = options.out_dir or Path(tempfile.mkdtemp(prefix=f"crowdpulse-eval-{options.scenario}-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"

    sim = Simulation(areas, devices, options.seed, start_ms, config=config, truth=True,
                     bucket_s=settings.bucket_s, windows_s=settings.windows_s)
    services = EmbeddedServices(environ, log_dir=log_dir)
    worker = ManagedProcess()
    occupancy: _Occupancy | None = None
    wall_started = time.monotonic()
    try:
        endpoints = services.start()
        tag = secrets.token_hex(4)
        port = free_port()
        worker_env = dict(
            environ,
            CROWDPULSE_KAFKA=endpoints.kafka,
            CROWDPULSE_REDIS=endpoints.redis_url,
            CROWDPULSE_APP_ID=f"crowdpulse-eval-{tag}",
            CROWDPULSE_TOPIC_PREFIX=f"eval-{tag}.",
            CROWDPULSE_NAMESPACE=f"eval{tag}",
            CROWDPULSE_HTTP_PORT=str(port),
            CROWDPULSE_HTTP_HOST="127.0.0.1",
            CROWDPULSE_AREAS=str(settings.areas_path),
            # The simulator's pseudonyms are stable (no key rotation, docs/privacy.md).
            CROWDPULSE_ROTATION_PERIOD_S="0",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH", "")) if p),
        )
        wsettings = Settings.from_env(worker_env)
        topics = TopicNames(wsettings.topic_prefix)
        security = wsettings.kafka_security.kafka_python_config()  # SASL/TLS for an external Kafka
        ensure_topics(endpoints.kafka, topic_partitions(wsettings), security=security)
        base = f"http://127.0.0.1:{port}"
        worker.start([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"], "worker",
                     log_dir / "worker.log", env=worker_env, stop_signal=signal.SIGINT)
        _wait(lambda: bool(_ingest(base)), 90, "the worker's HTTP API", worker, log_dir)
        log.info("worker up on %s; publishing %s (%d devices, %.0f simulated minutes)", base, options.scenario,
                 devices, duration_s / 60)

        run = SimulationRun(devices=devices, seed=options.seed, start_ms=start_ms, duration_s=duration_s, speedup=0.0,
                            partitions=wsettings.partitions, producer_id=secrets.randbits(63),
                            bucket_s=wsettings.bucket_s, windows_s=wsettings.windows_s, scenario=options.scenario)
        sink = KafkaSink(endpoints.kafka, topics.events, **security)
        pacer = _Pacer(start_ms, pace, int(options.max_ahead_s * 1000), base, worker)
        summary = run_simulation(run, areas, sink, sim=sim, on_step=pacer, progress=Progress(start_ms, end_ms))
        sent = summary["events"]
        stats = _wait(lambda: (s := _ingest(base)).get("events_in", -1) >= sent and s, 300,
                      f"the worker to take in {sent:,} events", worker, log_dir)
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
            done = not client.exists(layout.dirty_buckets) and final <= occupancy.points.keys()
            quiet_since = (quiet_since or time.monotonic()) if done and not got else None
            if quiet_since is not None and time.monotonic() - quiet_since >= 2.5 * wsettings.publish_interval_s:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.poll()}; see {log_dir / 'worker.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the estimator did not publish the final minute within 180 s; see {log_dir}")
        client.close()
        skipped = _metric(base, "crowdpulse_estimate_points_skipped_total")
        stats = _ingest(base) or stats
    finally:
        if occupancy is not None:
            occupancy.close()
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
    title = f"{options.scenario}{' (quick)' if options.quick else ''}, estimate ({options.window_s // 60}-min window) vs truth"
    report["plots"] = [str(p) for p in plot_areas(truth, occupancy.points, options.window_s, out_dir, title, options.min_people)]
    report["wall_s"] = round(time.monotonic() - wall_started, 1)
    write_report(report, out_dir)
    with open(out_dir / "truth.jsonl", "w") as f:
        for row in truth.rows():
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return report


def _wait(condition, timeout: float, what: str, worker: Any, log_dir: Path):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.poll()} while waiting for {what}; see {log_dir / 'worker.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {log_dir}")
        time.sleep(0.25)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(ms / 1000))


def run_evaluate_command(args: argparse.Namespace) -> int:
    from producers.scenarios import parse_overrides

    options = EvalOptions(
        scenario=args.scenario, quick=args.quick, devices=args.devices, duration_s=args.duration, seed=args.seed,
        overrides=tuple(parse_overrides(args.set).items()), pace=args.pace, window_s=args.window,
        out_dir=args.out_dir,
    )
    if args.json:
        logging.getLogger().setLevel(logging.WARNING)
    report = evaluate(options)
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(format_table(report), flush=True)
    return 0

