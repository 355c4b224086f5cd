"""Faults against the real broker and real redis-servers: a worker killed with SIGKILL, Redis
killed and restarted with its data. Each run is compared with a run of the same events without
the fault: the books close exactly, and every HyperLogLog key counts the same (PFADD is
idempotent and HyperLogLog registers are a function of the set added, so "the same" is exact).

The events are the alert tests' synthetic city minutes (tests/integration/crowd.py), a replay of
the past: stream time, not wall time. Recovery times are printed (pytest -s shows them) and
bounded; docs/operations.md's runbook quotes measured ones.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from producers.publisher import Framer, KafkaSink
from streams.core.areas import AreaMap, load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.runtime.processes import ManagedProcess, free_port
from streams.runtime.services import Endpoints, start_redis, wait_for_redis
from streams.tools.harness import http_json, metric_value

from ..conftest import RunningWorker, launch_worker, start_worker, wait_until
from ..crowd import MIN, START_MS, minute_events

#: The survivor of a killed worker must own every partition and publish again within this.
TAKEOVER_BOUND_S = 30.0
BROKER_DOWN_S = 30.0


@dataclass
class Feed:
    """Publishes whole minutes of the synthetic city to one worker's topic (no waiting)."""

    sink: KafkaSink
    framer: Framer
    areas: AreaMap
    sent: int = 0

    @classmethod
    def to(cls, kafka: str, worker: RunningWorker, areas: AreaMap) -> Feed:
        framer = Framer(producer_id=0xFA17, partitions=worker.settings.partitions, cell_ids=areas.cell_ids)
        return cls(KafkaSink(kafka, worker.topics.events), framer, areas)

    def minutes(self, first: int, last: int) -> None:
        for minute in range(first, last + 1):
            events = minute_events(self.areas, minute)
            self.sink.send(self.framer.frames(events))
            self.sent += len(events)
        self.sink.producer.flush()

    def close(self) -> None:
        self.sink.close()


def books(worker: RunningWorker) -> dict:
    stats = worker.stats()
    return {k: stats[k] for k in ("events_in", "counted", "deadletter", "late")}


def wait_for_books(worker: RunningWorker, sent: int, timeout: float) -> dict:
    def done() -> dict | None:
        try:
            b = books(worker)
        except OSError:  # 503 while Redis is away, or the worker not answering yet
            return None
        return b if b["events_in"] >= sent else None

    return wait_until(done, timeout, f"{sent} events taken in:\n{worker.log_tail()}")


def newest_as_of(worker: RunningWorker) -> int:
    try:
        estimates = worker.get("/api/areas")
    except OSError:
        return 0
    return max((e["as_of"] for e in estimates), default=0)  # type: ignore[union-attr]


def minute_end(minute: int) -> int:
    """The window end (as_of) of the bucket holding `minute`'s events."""
    return START_MS + (minute + 1) * MIN


def hll_counts(client: redis.Redis, namespace: str) -> dict[str, int]:
    """PFCOUNT of every HyperLogLog key of a namespace, by key name without the namespace."""
    keys = sorted(client.scan_iter(match=f"{namespace}:*:hll:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("PFCOUNT", key)  # redis-py's cluster pipeline refuses its pfcount method
    return {key.decode().removeprefix(namespace): n for key, n in zip(keys, pipe.execute())}


def final_figures(worker: RunningWorker) -> dict:
    return {(e["area"], e["window_s"]): (e["as_of"], e["devices"], e["people"], e["people_low"], e["people_high"], e["suppressed"])
            for e in worker.get("/api/areas")}  # type: ignore[union-attr]


@dataclass
class Outcome:
    """What a run leaves: its books, every HyperLogLog key's count, the final published figures."""

    books: dict
    counts: dict[str, int]
    figures: dict


def outcome(worker: RunningWorker) -> Outcome:
    return Outcome(books(worker), hll_counts(worker.redis, worker.settings.namespace), final_figures(worker))


def assert_as_without_fault(faulty: Outcome, reference: Outcome, taken_in: int, same_figures: bool = True) -> None:
    """Nothing lost, nothing counted twice: the books hold exactly `taken_in` events and close,
    and every HyperLogLog key (and, unless told, every final figure) is the fault-free run's."""
    assert faulty.books["events_in"] == taken_in
    assert faulty.books["counted"] + faulty.books["deadletter"] + faulty.books["late"] == taken_in
    assert faulty.books["deadletter"] == faulty.books["late"] == 0
    assert faulty.counts == reference.counts and len(faulty.counts) > 100
    if same_figures:
        assert faulty.figures == reference.figures


#: Reference runs by (broker, minutes): the same events give the same outcome (counts by key name
#: without the namespace, figures), so the session's fault tests share one.
_REFERENCES: dict[tuple[str, int], Outcome] = {}


def reference_run(endpoints: Endpoints, tmp_path: Path, minutes: int) -> Outcome:
    """The same minutes through a worker with no fault (run once per session and broker)."""
    key = (endpoints.kafka, minutes)
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_run(endpoints, tmp_path, minutes)
    return _REFERENCES[key]


def _reference_run(endpoints: Endpoints, tmp_path: Path, minutes: int) -> Outcome:
    worker = start_worker(endpoints, tmp_path / "reference", "ref")
    try:
        feed = Feed.to(endpoints.kafka, worker, load_areas(DEFAULT_AREAS))
        feed.minutes(0, minutes - 1)
        feed.close()
        wait_for_books(worker, feed.sent, 60)
        wait_until(lambda: newest_as_of(worker) >= minute_end(minutes - 1), 60, "the reference's last estimates")
        time.sleep(2 * worker.settings.publish_interval_s)  # let a pass republish what the last one read
        return outcome(worker)
    finally:
        worker.stop()


def kill(process: ManagedProcess) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.stop(timeout=5)  # reaps it


# --- a worker killed -----------------------------------------------------------------------------


def test_kill_9_of_the_leader_of_two_workers_loses_and_doubles_nothing(endpoints: Endpoints, tmp_path: Path) -> None:
    areas = load_areas(DEFAULT_AREAS)
    first = start_worker(endpoints, tmp_path, "kill")
    env = {"CROWDPULSE_APP_ID": first.settings.app_id, "CROWDPULSE_TOPIC_PREFIX": first.settings.topic_prefix,
           "CROWDPULSE_NAMESPACE": first.settings.namespace}
    second = launch_worker(endpoints, tmp_path, env)
    workers = [first, second]
    feed = Feed.to(endpoints.kafka, first, areas)
    try:
        feed.minutes(0, 9)
        wait_for_books(first, feed.sent, 90)
        wait_until(lambda: newest_as_of(first) >= minute_end(9), 60, "estimates of minute 9")

        def published(w: RunningWorker) -> float:
            return w.metric("crowdpulse_estimates_published_total") or 0.0

        leader = wait_until(lambda: next((w for w in workers if published(w) > 0), None), 30, "a leader publishing")
        survivor = second if leader is first else first
        kill(leader.process)
        killed_at = time.monotonic()
        feed.minutes(10, 19)

        wait_for_books(survivor, feed.sent, 120)
        wait_until(lambda: newest_as_of(survivor) >= minute_end(19), 120, f"the survivor's estimates:\n{survivor.log_tail()}")
        takeover_s = time.monotonic() - killed_at
        print(f"\nkill -9 of the leader: the survivor took in everything and published minute 19 after {takeover_s:.1f} s")
        assert takeover_s <= TAKEOVER_BOUND_S, f"takeover took {takeover_s:.1f} s"
        owned = wait_until(lambda: lag_partitions(survivor), 10, "the survivor's lag per partition")
        assert len(owned) == survivor.settings.partitions, f"the survivor owns {sorted(owned)}"
        time.sleep(2 * survivor.settings.publish_interval_s)
        faulty = outcome(survivor)
    finally:
        feed.close()
        for w in workers:
            w.stop()

    assert_as_without_fault(faulty, reference_run(endpoints, tmp_path, 20), feed.sent)


def lag_partitions(worker: RunningWorker) -> set[str]:
    """The partitions a worker reports lag for: the ones it owns."""
    prefix = "crowdpulse_consumer_lag_messages{"
    return {line[len(prefix):].partition("}")[0] for line in worker.metrics_text().splitlines() if line.startswith(prefix)}


# --- Redis away ----------------------------------------------------------------------------------


@dataclass
class OwnRedis:
    """A redis-server of the test's own on a fixed port. With `aof`, AOF (fsync always) in a
    folder, so a restart after SIGKILL comes back with every acknowledged write; without, a
    restart comes back empty."""

    port: int
    folder: Path
    aof: bool = True
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ("--appendonly", "yes", "--appendfsync", "always") if self.aof else ()
        self.process, _ = start_redis(self.port, self.folder, extra_args=(*persistence, "--dir", str(self.folder)))
        wait_for_redis(self.url, timeout=15)

    def kill(self) -> None:
        assert self.process is not None
        kill(self.process)


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OwnRedis]:
    server = OwnRedis(free_port(), tmp_path / "redis-data", aof=getattr(request, "param", True))
    server.folder.mkdir()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.stop(timeout=5)


@pytest.mark.parametrize("down_s", [10, 30])
def test_redis_down_and_back_with_its_data(endpoints: Endpoints, own_redis: OwnRedis, tmp_path: Path, down_s: int) -> None:
    """No worker crashes (the leader included: it runs the estimator), the API answers a JSON
    503 meanwhile, the worker carries on where it left off, nothing is applied twice."""
    areas = load_areas(DEFAULT_AREAS)
    private = Endpoints(kafka=endpoints.kafka, redis_url=own_redis.url)
    worker = start_worker(private, tmp_path, "redis")
    feed = Feed.to(endpoints.kafka, worker, areas)
    try:
        feed.minutes(0, 9)
        wait_for_books(worker, feed.sent, 60)
        wait_until(lambda: newest_as_of(worker) >= minute_end(9), 60, "estimates of minute 9")

        own_redis.kill()
        down_at = time.monotonic()
        feed.minutes(10, 14)  # waits in Kafka; the worker retries its writes
        time.sleep(3)
        with pytest.raises(OSError) as refused:
            http_json(f"{worker.base_url}/api/areas")
        assert getattr(refused.value, "code", None) == 503, refused.value
        assert b"Redis" in refused.value.read()  # type: ignore[attr-defined]
        metrics = worker.metrics_text()  # /metrics answers without Redis
        time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
        assert worker.process.poll() is None, f"the worker died while Redis was away:\n{worker.log_tail()}"
        own_redis.start()
        back_at = time.monotonic()

        feed.minutes(15, 19)
        wait_for_books(worker, feed.sent, 120)
        wait_until(lambda: newest_as_of(worker) >= minute_end(19), 60, f"estimates of minute 19:\n{worker.log_tail()}")
        print(f"\nRedis down {down_s} s: everything in and minute 19 published {time.monotonic() - back_at:.1f} s after it came back")
        time.sleep(2 * worker.settings.publish_interval_s)
        assert worker.process.poll() is None
        assert (metric_value(metrics, "crowdpulse_estimate_age_seconds") or 0) > 0
        assert (worker.metric("crowdpulse_redis_retries_total") or 0) > 0, "ingest never waited for Redis"
        assert (worker.metric("crowdpulse_estimator_pass_errors_total", {"kind": "redis"}) or 0) > 0, \
            "the estimator never met the outage"
        faulty = outcome(worker)
    finally:
        feed.close()
        worker.stop()
        worker.redis.close()

    assert_as_without_fault(faulty, reference_run(endpoints, tmp_path, 20), feed.sent)


@pytest.mark.parametrize("own_redis", [False], indirect=True, ids=["no-persistence"])
def test_redis_restarted_empty_is_rebuilt_from_kafka(endpoints: Endpoints, own_redis: OwnRedis, tmp_path: Path) -> None:
    """The worker finds Redis empty, puts its partition states back and re-reads the last hour
    (plus grace) of crowd.events from Kafka: every window counts what it counted, the estimates
    come back the same, and the books (lost with Redis) count exactly what arrived after."""
    areas = load_areas(DEFAULT_AREAS)
    worker = start_worker(Endpoints(kafka=endpoints.kafka, redis_url=own_redis.url), tmp_path, "empty")
    feed = Feed.to(endpoints.kafka, worker, areas)
    try:
        feed.minutes(0, 9)
        wait_for_books(worker, feed.sent, 60)
        wait_until(lambda: newest_as_of(worker) >= minute_end(9), 60, "estimates of minute 9")
        before_loss = feed.sent

        own_redis.kill()
        feed.minutes(10, 14)
        time.sleep(3)
        own_redis.start()  # empty
        back_at = time.monotonic()
        feed.minutes(15, 19)
        after_loss = feed.sent - before_loss

        wait_until(lambda: (worker.metric("crowdpulse_redis_rebuilds_total") or 0) >= 1, 30, f"a rebuild:\n{worker.log_tail()}")
        wait_for_books(worker, after_loss, 60)
        wait_until(lambda: newest_as_of(worker) >= minute_end(19), 60, f"estimates of minute 19:\n{worker.log_tail()}")
        wait_until(lambda: worker.redis.scard(worker.keys.rebuilding) == 0, 30, "the rebuild to finish")
        print(f"\nRedis back empty: rebuilt and minute 19 published {time.monotonic() - back_at:.1f} s after it came back")
        time.sleep(3 * worker.settings.publish_interval_s)
        assert worker.process.poll() is None
        assert (worker.metric("crowdpulse_rebuild_messages_total") or 0) > 0
        faulty = outcome(worker)
    finally:
        feed.close()
        worker.stop()
        worker.redis.close()

    # The books restart with Redis: exactly the events that arrived after, each once.
    assert_as_without_fault(faulty, reference_run(endpoints, tmp_path, 20), after_loss)


# --- the broker comes back empty -----------------------------------------------------------------


def test_a_broker_that_comes_back_empty_is_read_from_its_start(endpoints: Endpoints, tmp_path: Path) -> None:
    """The broker is away for 30 s and, as the embedded broker keeps topics in memory, comes back
    empty: its partitions start again at offset 0, below what the worker applied. The worker notices, reads them from their start instead of
    skipping them as already applied, and the books close on everything sent."""
    from streams.runtime.services import ensure_topics, start_broker, topic_partitions, wait_for_kafka

    areas = load_areas(DEFAULT_AREAS)
    port = free_port()
    broker, bootstrap = start_broker(port, tmp_path)
    try:
        wait_for_kafka(bootstrap)
        worker = start_worker(Endpoints(kafka=bootstrap, redis_url=endpoints.redis_url), tmp_path, "reset")
        feed = Feed.to(bootstrap, worker, areas)
        try:
            feed.minutes(0, 9)
            wait_for_books(worker, feed.sent, 60)
            wait_until(lambda: newest_as_of(worker) >= minute_end(9), 60, "estimates of minute 9")

            kill(broker)
            time.sleep(BROKER_DOWN_S)  # the worker's fetches and heartbeats fail meanwhile
            broker, _ = start_broker(port, tmp_path)
            wait_for_kafka(bootstrap)
            ensure_topics(bootstrap, topic_partitions(worker.settings))
            restarted_at = time.monotonic()
            feed.minutes(10, 14)  # fewer messages than the worker had applied per partition

            wait_for_books(worker, feed.sent, 120)
            wait_until(lambda: newest_as_of(worker) >= minute_end(14), 60, f"estimates of minute 14:\n{worker.log_tail()}")
            print(f"\nbroker down {BROKER_DOWN_S:.0f} s, back empty: everything sent after it counted "
                  f"{time.monotonic() - restarted_at:.1f} s later")
            time.sleep(3 * worker.settings.publish_interval_s)
            faulty = outcome(worker)
            assert (worker.metric("crowdpulse_log_resets_total") or 0) >= 1
        finally:
            feed.close()
            worker.stop()
            worker.redis.close()
    finally:
        broker.stop()

    assert_as_without_fault(faulty, reference_run(endpoints, tmp_path, 15), feed.sent)


# --- the estimator shared by two workers ---------------------------------------------------------


def test_two_workers_share_the_estimator_and_one_takes_over_the_others_areas(endpoints: Endpoints, tmp_path: Path) -> None:
    """Each worker counts the areas of its partitions (both count, their shards add up to all),
    the leader publishes every area; the non-leader killed -9, the leader takes its partitions
    and areas over and publishes on. Figures and counts are a one-worker run's."""
    areas = load_areas(DEFAULT_AREAS)
    first = start_worker(endpoints, tmp_path, "share")
    env = {"CROWDPULSE_APP_ID": first.settings.app_id, "CROWDPULSE_TOPIC_PREFIX": first.settings.topic_prefix,
           "CROWDPULSE_NAMESPACE": first.settings.namespace}
    second = launch_worker(endpoints, tmp_path, env)
    workers = [first, second]
    feed = Feed.to(endpoints.kafka, first, areas)

    def shards(w: RunningWorker) -> int:
        return int(w.metric("crowdpulse_estimator_shards") or 0)

    def counted(w: RunningWorker) -> float:
        return w.metric("crowdpulse_estimator_points_counted_total") or 0.0

    try:
        wait_until(lambda: shards(first) > 0 and shards(second) > 0 and shards(first) + shards(second) == first.settings.partitions,
                   60, "both workers owning estimator shards")
        feed.minutes(0, 14)
        wait_for_books(first, feed.sent, 90)
        wait_until(lambda: newest_as_of(first) >= minute_end(14), 60, "estimates of minute 14")
        assert counted(first) > 0 and counted(second) > 0, "both workers count their areas"
        time.sleep(2 * first.settings.publish_interval_s)
        shared, sent_15 = outcome(first), feed.sent  # two workers counting: the figures of one
        leader = wait_until(lambda: next((w for w in workers if (w.metric("crowdpulse_estimates_published_total") or 0) > 0), None),
                            30, "the leader publishing")
        other = second if leader is first else first
        assert (other.metric("crowdpulse_estimates_published_total") or 0) == 0, "only the leader publishes"

        kill(other.process)
        killed_at = time.monotonic()
        feed.minutes(15, 19)
        wait_for_books(leader, feed.sent, 120)
        wait_until(lambda: newest_as_of(leader) >= minute_end(19), 120, f"minute 19 published:\n{leader.log_tail()}")
        takeover_s = time.monotonic() - killed_at
        print(f"\nshared estimator: the other worker killed -9, its areas counted and minute 19 published after {takeover_s:.1f} s")
        assert takeover_s <= TAKEOVER_BOUND_S
        assert shards(leader) == leader.settings.partitions
        time.sleep(2 * leader.settings.publish_interval_s)
        faulty = outcome(leader)
    finally:
        feed.close()
        for w in workers:
            w.stop()

    assert_as_without_fault(shared, reference_run(endpoints, tmp_path, 15), sent_15)
    assert_as_without_fault(faulty, reference_run(endpoints, tmp_path, 20), feed.sent)
