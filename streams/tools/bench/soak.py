"""`crowdpulse bench --soak MINUTES`: a steady load for a long time, one line a minute.

The embedded broker and Redis, one worker and the simulator (steady scenario) at a fixed speed-up,
as `crowdpulse demo` runs them. Every minute: the events taken in and their rate, the worker's and
the broker's resident memory, Redis' used memory, the consumer lag, the estimate age and the
stream delay (how far the newest published window end is behind what the simulator has sent, in
wall seconds). The summary compares the last minute with the first minute after warm-up (the
longest window filling: at 60x, about a wall minute).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from streams.core.areas import load_areas
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.runtime.services import EmbeddedServices
from streams.tools.harness import WorkerProcess, launch_worker, metric_value

MINUTE_S = 60.0


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample(worker: WorkerProcess, broker_pid: int | None, client: redis.Redis, sent_ms: int, speedup: float) -> dict:
    """One minute's figures (None where a source did not answer)."""
    stats = worker.stats()
    exposition = worker.metrics_text()
    lag = sum(
        float(line.rpartition(" ")[2]) for line in exposition.splitlines() if line.startswith("crowdpulse_consumer_lag_messages{")
    )
    stream_s = metric_value(exposition, "crowdpulse_stream_time_seconds")
    return {
        "events_in": stats["events_in"],
        "books_close": stats["events_in"] == stats["counted"] + stats["deadletter"] + stats["late"],
        "worker_rss_mb": rss_mb(worker.process.pid),
        "broker_rss_mb": rss_mb(broker_pid) if broker_pid else None,
        "redis_used_mb": int(client.info("memory")["used_memory"]) / 2**20,
        "lag_messages": lag,
        "estimate_age_s": metric_value(exposition, "crowdpulse_estimate_age_seconds"),
        # Simulated time sent minus the newest stream time applied, in wall seconds.
        "stream_delay_s": None if not stream_s else max(0.0, (sent_ms / 1000 - stream_s) / speedup),
    }


def format_row(minute: int, s: dict, rate: float) -> str:
    def f(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    return (f"{minute:>6} {s['events_in']:>12,} {rate:>9,.0f} {f(s['worker_rss_mb'], '.1f'):>10} {f(s['broker_rss_mb'], '.1f'):>10} "
            f"{f(s['redis_used_mb'], '.1f'):>9} {s['lag_messages']:>6.0f} {f(s['estimate_age_s'], '.1f'):>7} "
            f"{f(s['stream_delay_s'], '.1f'):>8} {'yes' if s['books_close'] else 'NO':>6}")


HEADER = (f"{'minute':>6} {'events in':>12} {'events/s':>9} {'worker MB':>10} {'broker MB':>10} {'redis MB':>9} {'lag':>6} "
          f"{'age s':>7} {'delay s':>8} {'books':>6}")


def soak(minutes: float, devices: int, speedup: float, out: Callable[[str], None]) -> dict:
    from producers.publisher import KafkaSink
    from producers.simulate import SimulationRun, run_simulation

    settings = Settings.from_env()
    areas = load_areas(settings.areas_path)
    # Until the longest window (plus grace) has filled, Redis grows by design.
    warmup_minutes = math.ceil((max(settings.windows_s) + settings.grace_s) / speedup / MINUTE_S) + 1
    log_dir = Path(tempfile.mkdtemp(prefix="crowdpulse-soak-"))
    services = EmbeddedServices(os.environ, log_dir=log_dir)
    stop = threading.Event()
    rows: list[dict] = []
    sent_ms = [0]
    try:
        endpoints = services.start()
        tag = secrets.token_hex(3)
        worker = launch_worker(endpoints, log_dir / "worker.log", {
            "CROWDPULSE_APP_ID": f"soak-{tag}", "CROWDPULSE_TOPIC_PREFIX": f"soak{tag}.", "CROWDPULSE_NAMESPACE": f"soak{tag}"})
        broker = services.processes[0].pid if services.processes else None
        client = redis.Redis.from_url(endpoints.redis_url)
        start_ms = int(time.time() // 60 * 60 * 1000)
        sent_ms[0] = start_ms
        run = SimulationRun(devices=devices, seed=1, start_ms=start_ms, duration_s=10 * 365 * 86400.0, speedup=speedup,
                            partitions=settings.partitions, producer_id=secrets.randbits(63), rotation=settings.rotation)
        sink = KafkaSink(endpoints.kafka, TopicNames(f"soak{tag}.").events)
        simulator = threading.Thread(target=run_simulation, args=(run, areas, sink, stop),
                                     kwargs={"on_step": lambda now: sent_ms.__setitem__(0, now)}, daemon=True)
        simulator.start()
        out(f"soak: {devices:,} devices, steady scenario at {speedup:g}x, {minutes:g} minutes (the first {warmup_minutes} "
            f"fill the windows); logs in {log_dir}")
        out(HEADER)
        began = time.monotonic()
        previous = 0
        for minute in range(1, int(minutes) + 1):
            time.sleep(max(0.0, began + minute * MINUTE_S - time.monotonic()))
            if worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            s = sample(worker, broker, client, sent_ms[0], speedup)
            rows.append({"minute": minute, **s})
            out(format_row(minute, s, (s["events_in"] - previous) / MINUTE_S))
            previous = s["events_in"]
        stop.set()
        simulator.join(timeout=30)
        client.close()
        worker.stop()
    finally:
        stop.set()
        services.stop()
    shutil.rmtree(log_dir, ignore_errors=True)  # kept only if the run failed
    return summarise(rows, warmup_minutes, out)


def summarise(rows: list[dict], warmup_minutes: int, out: Callable[[str], None]) -> dict:
    """Last minute against the first after warm-up: memory growth in %, the largest lag and delay."""
    steady = [r for r in rows if r["minute"] > warmup_minutes] or rows
    first, last = steady[0], steady[-1]

    def growth(name: str) -> float | None:
        a, b = first[name], last[name]
        return None if not a or b is None else 100.0 * (b - a) / a

    summary = {
        "minutes": len(rows),
        "worker_rss_growth_pct": growth("worker_rss_mb"),
        "redis_used_growth_pct": growth("redis_used_mb"),
        "broker_rss_growth_pct": growth("broker_rss_mb"),
        "max_lag_messages": max(r["lag_messages"] for r in steady),
        "max_stream_delay_s": max((r["stream_delay_s"] or 0.0) for r in steady),
        "books_close": all(r["books_close"] for r in rows),
        "rows": rows,
    }
    out(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return summary
