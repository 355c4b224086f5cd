"""`crowdpulse demo`: embedded services, one worker, the simulator and a live terminal table,
as one process tree that stops cleanly on Ctrl-C or after --duration."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from streams.core.areas import load_areas
from streams.core.errors import ServiceUnavailable
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.runtime.processes import ManagedProcess
from streams.runtime.services import EmbeddedServices
from streams.tools.harness import WorkerProcess, http_json, launch_worker

HELP = "services + worker + simulator + live table, until Ctrl-C or --duration"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from streams.tools.simulate import simulation_arguments

    simulation_arguments(p, default_speedup=60.0, default_devices=100_000, demo=True)
    p.add_argument("--data-dir", type=Path,
                   help="keep Redis' data (AOF) and the footfall history (PostgreSQL) here and reuse them at the next demo with "
                        "the same directory (default: nothing kept)")


def run(args: argparse.Namespace) -> int:
    from streams.runtime.preflight import check_port_free
    from streams.tools.simulate import check_simulation_arguments

    # The demo paces the simulator against the wall clock: as fast as possible is not a demo.
    check_simulation_arguments(args, flat_out=False)
    settings = Settings.from_env()
    # Before anything starts: on a taken port the demo would show another process's dashboard.
    check_port_free(settings.http_host, settings.http_port)
    with _terminal_foreground():
        return _run_demo(args)


@contextlib.contextmanager
def _terminal_foreground() -> Iterator[None]:
    """Make this process the terminal's foreground process group while the demo runs.

    Ctrl-C signals the whole foreground group. Under `make demo` that includes make, which then
    dies by SIGINT (exit 130) however cleanly the demo stops. Taking the foreground for our own
    group means Ctrl-C reaches only the demo, which stops everything and exits 0, and so does
    make. Without a terminal (CI, pipes) there is nothing to do.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        yield
        return
    try:
        previous = os.tcgetpgrp(fd)
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not take the tty otherwise
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError:
        os.close(fd)
        yield
        return
    try:
        yield
    finally:
        try:
            os.tcsetpgrp(fd, previous)
        except OSError:
            pass
        os.close(fd)


def _run_demo(args: argparse.Namespace) -> int:
    from producers.publisher import KafkaSink
    from producers.scenarios import parse_overrides
    from producers.simulate import SimulationRun, run_simulation
    from streams.runtime.preflight import check_kafka, check_redis

    settings = Settings.from_env()
    areas = load_areas(settings.areas_path)
    log_dir = Path(tempfile.mkdtemp(prefix="crowdpulse-demo-"))
    services = EmbeddedServices(os.environ, log_dir=log_dir, data_dir=args.data_dir, history=True)
    process = ManagedProcess()
    worker: WorkerProcess | None = None
    stop = threading.Event()
    simulator: threading.Thread | None = None
    summary: dict = {}
    base = f"http://127.0.0.1:{settings.http_port}"
    started = time.monotonic()
    try:
        endpoints = services.start()
        check_kafka(endpoints.kafka)  # configured ones (CROWDPULSE_KAFKA/_REDIS) may not answer
        check_redis(endpoints.redis_url)
        settings = settings.with_endpoints(endpoints.kafka, endpoints.redis_url)
        # A fresh consumer group per demo: the embedded broker can hold a dead member for a while.
        own = {} if "CROWDPULSE_APP_ID" in os.environ else {"CROWDPULSE_APP_ID": f"crowdpulse-demo-{secrets.token_hex(3)}"}
        print(f"crowdpulse demo: broker {endpoints.kafka}, redis {endpoints.redis_url}, logs in {log_dir}", flush=True)
        if endpoints.history_db:
            # For `crowdpulse report` and psql while the demo runs (docs/footfall.md).
            print(f"footfall history: CROWDPULSE_HISTORY_DB={endpoints.history_db}", flush=True)
        # On the configured HTTP port: the address the demo prints and the docs give. Raises with
        # the tail of the worker's log if it dies or stays silent.
        worker = launch_worker(endpoints, log_dir / "worker.log", own, base_env=os.environ, wait=90, http_port=settings.http_port)
        process = worker.process
        print(f"worker up: dashboard {base}/  API {base}/api/areas  alerts {base}/api/alerts  metrics {base}/metrics", flush=True)

        run = SimulationRun(
            devices=args.devices, seed=args.seed, start_ms=int(time.time() // 60 * 60 * 1000),
            duration_s=10 * 365 * 86400.0, speedup=args.speedup, partitions=settings.partitions,
            producer_id=secrets.randbits(63), bucket_s=settings.bucket_s, windows_s=settings.windows_s,
            scenario=args.scenario, overrides=tuple(parse_overrides(args.set).items()),
            rotation=settings.rotation,  # the worker reads the same CROWDPULSE_ROTATION_* settings
            threads=args.threads,
        )
        sink = KafkaSink(endpoints.kafka, TopicNames(settings.topic_prefix).events, **settings.kafka_security.kafka_python_config())
        simulator = threading.Thread(
            target=lambda: summary.update(run_simulation(run, areas, sink, stop)), name="simulator", daemon=True
        )
        sim_started = time.monotonic()
        simulator.start()
        deadline = None if args.duration is None else started + args.duration
        interactive = sys.stdout.isatty()
        last_print = 0.0
        while deadline is None or time.monotonic() < deadline:
            if process.poll() is not None:
                print(f"worker exited with code {process.poll()}; see {log_dir / 'worker.log'}", file=sys.stderr)
                return 1
            if interactive or time.monotonic() - last_print >= 5:
                _print_table(base, interactive)
                last_print = time.monotonic()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    except ServiceUnavailable:
        shutil.rmtree(log_dir, ignore_errors=True)  # one line says it all; nothing ran to log
        raise
    finally:
        stop.set()
        if simulator is not None and worker is not None:
            simulator.join(timeout=15)
            _drain(worker, summary.get("events", 0), timeout=15)
            _print_summary(base, summary, time.monotonic() - sim_started)
        process.stop(timeout=15)
        services.stop()
    # A clean run leaves nothing behind; a failed one (returned or raised above) keeps its logs.
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def _drain(worker: WorkerProcess, sent: int, timeout: float) -> None:
    """Give the worker a moment to count what the simulator sent before the summary."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.process.poll() is None:
        try:
            if worker.stats()["events_in"] >= sent:
                return
        except (OSError, urllib.error.URLError, ValueError):
            return
        time.sleep(0.5)


def _print_table(base: str, interactive: bool) -> None:
    try:
        estimates = cast("list[dict]", http_json(f"{base}/api/areas"))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"(api not answering: {exc})", flush=True)
        return
    lines = table_lines(estimates)
    lines.extend(_alert_lines(base, estimates))
    if interactive:
        sys.stdout.write("\x1b[2J\x1b[H")
    print("\n".join(lines) + "\n", flush=True)


def table_lines(estimates: list[dict]) -> list[str]:
    """The terminal table: per area and window the phones counted, the people estimated present
    (customers of every operator) with their 90% range, the estimate's share of capacity and the
    level; withheld rows say why."""
    lines = [f"{'area':<15} {'window':>6} {'phones':>8} {'people':>8} {'people, 90% range':>19} {'of cap.':>8} {'level':>9}"]
    as_of = None
    warming = False
    for e in estimates:
        as_of = e["as_of"]
        window = f"{e['window_s'] // 60}m"
        if e["suppressed"] or e["people"] is None:
            why = {"below_min_count": "withheld: < k", "differencing": "withheld: diff.", "privacy_budget": "withheld: budget"}
            lines.append(f"{e['area']:<15} {window:>6} {'-':>8} {'-':>8} {why.get(e.get('suppressed_reason') or '', 'withheld'):>19} "
                         f"{'':>8} {'-':>9}")
            continue
        mark = "*" if e.get("warming_up") else ""
        warming = warming or bool(mark)
        rng = f"{e['people_low']:,}-{e['people_high']:,}"
        pct = f"{100 * e['people'] / e['capacity']:.0f}%"
        lines.append(f"{e['area']:<15} {window:>6} {e['devices']:>8,} {e['people']:>8,} {rng:>19} {pct:>8} {e['level'] + mark:>9}")
    if warming:
        lines.append("* warming up: the windows are still filling after the start (docs/estimation.md)")
    reasons = {e["area"]: e["level_reason"] for e in estimates if e.get("level") == "uncertain" and e.get("level_reason")}
    for area, reason in sorted(reasons.items()):
        lines.append(f"uncertain {area}: {reason}")
    if as_of is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(as_of / 1000))
        lines.insert(0, f"stream time: windows ending {stamp} UTC")
    return lines


def _alert_lines(base: str, estimates: list[dict]) -> list[str]:
    """The active alerts under the table (the dashboard at / shows them with ack buttons): each
    with its message of the moment it fired and the area's share of capacity now."""
    try:
        active = http_json(f"{base}/api/alerts")["active"]  # type: ignore[index]
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
        return []
    if not active:
        return ["", "alerts: none active"]
    lines = ["", f"alerts: {len(active)} active"]
    now = {(e["area"], e["window_s"]): e for e in estimates}
    for a in active[:12]:
        e = now.get((a["area"], a.get("window_s")))
        current = "" if e is None or e["people"] is None else f"  [now {100 * e['people'] / e['capacity']:.0f}%, {e['level']}]"
        lines.append(f"  {a['level'].upper():<8} {a['state']:<12} {a['message']}{current}")
    if len(active) > 12:
        lines.append(f"  ... and {len(active) - 12} more")
    return lines


def _print_summary(base: str, simulator: dict, wall_s: float) -> None:
    try:
        stats = cast(dict, http_json(f"{base}/api/ingest"))
    except (OSError, urllib.error.URLError, ValueError):
        stats = {}
    sent = simulator.get("events")
    undelivered = simulator.get("undelivered_events", 0)
    print("demo summary:", flush=True)
    if sent is None:
        print("  simulator: no summary (it did not finish)", flush=True)
    else:
        print(f"  simulator: {sent} events in {simulator.get('frames', '?')} frames"
              + (f", {undelivered} NOT DELIVERED to Kafka" if undelivered else ""), flush=True)
    if stats:
        s = stats
        closes = s["events_in"] == s["counted"] + s["deadletter"] + s["late"]
        # The books close only if the worker also took in everything that was delivered.
        complete = sent is not None and s["events_in"] == sent - undelivered
        print(
            f"  worker: in {s['events_in']} = counted {s['counted']} + dead-lettered {s['deadletter']} "
            f"+ late {s['late']} ({'closes' if closes else 'DOES NOT CLOSE'}); delivered {'?' if sent is None else sent - undelivered} "
            f"= in {s['events_in']} ({'complete' if complete else 'INCOMPLETE: the worker had not taken in everything'})",
            flush=True,
        )
        print(f"  frame sequence gaps {s['sequence_gaps']}, repeats {s['sequence_repeats']}", flush=True)
        if wall_s > 0:
            print(f"  throughput: {s['events_in'] / wall_s:,.0f} events/s over {wall_s:.0f} s", flush=True)
