"""A Redis Cluster of three masters under a moving slot and a restarted master, with a worker
writing all along. The run is compared with a run of the same events on one Redis: the books
close exactly, and every HyperLogLog key and every final figure is the same.

What happens (docs/operations.md, "Redis Cluster"): while a slot moves, a node answers ASK or
TRYAGAIN for its keys; redis-py follows ASK for ordinary commands, and the worker's pipelined
PFADDs and PFCOUNTs are resent on a fresh slot map (PFADD and PFCOUNT may run twice) until
the move completes. While a master is away the cluster refuses every command (CLUSTERDOWN,
after cluster-node-timeout) and the worker waits as it does for one Redis away; the master
restarted with its data (AOF) rejoins with its slots and the worker carries on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from streams.core.areas import load_areas
from streams.core.settings import DEFAULT_AREAS
from streams.runtime.processes import ManagedProcess, free_cluster_port
from streams.runtime.services import Endpoints, cluster_node_args, cluster_url, form_cluster, start_redis, wait_for_redis

from ..conftest import start_worker, wait_until
from .test_faults import Feed, assert_as_without_fault, kill, minute_end, newest_as_of, outcome, reference_run, wait_for_books

pytestmark = pytest.mark.integration

#: The area whose slot is moved: the stadium takes events every minute.
MOVED_TAG = "{a:stadium}"


@dataclass
class OwnCluster:
    """Three masters of the test's own, each with AOF (fsync always) in its folder: a master
    killed and restarted comes back with every acknowledged write and its slots."""

    folder: Path
    ports: list[int] = field(default_factory=lambda: [free_cluster_port() for _ in range(3)])
    processes: dict[int, ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return cluster_url(self.ports)

    def start_node(self, port: int) -> None:
        args = ("--appendonly", "yes", "--appendfsync", "always", *cluster_node_args(self.folder, port))
        self.processes[port], node_url = start_redis(port, self.folder, extra_args=args, name=f"redis-{port}")
        wait_for_redis(node_url, timeout=15)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def owner_of(self, slot: int) -> int:
        """The port of the master serving `slot`, as the first node sees it."""
        with self.node(self.ports[0]) as client:
            for low, high, (_host, port, *_), *_ in client.execute_command("CLUSTER SLOTS"):
                if low <= slot <= high:
                    return int(port)
        raise AssertionError(f"slot {slot} not served")

    def begin_move(self, slot: int, to_port: int) -> None:
        """Mark `slot` as moving to the master on `to_port` (IMPORTING there, MIGRATING at its
        owner), as redis-cli --cluster reshard does: from now on the owner answers ASK for
        keys it no longer (or does not yet) hold, and TRYAGAIN for commands whose keys are split."""
        from_port = self.owner_of(slot)
        with self.node(from_port) as source, self.node(to_port) as target:
            source_id, target_id = source.execute_command("CLUSTER MYID"), target.execute_command("CLUSTER MYID")
            target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)

    def finish_move(self, slot: int, to_port: int, pause_s: float) -> int:
        """MIGRATE the slot's keys one at a time with a pause between, then give the slot to its
        new master on every node. Returns how many keys moved."""
        from_port = self.owner_of(slot)
        with self.node(from_port) as source, self.node(to_port) as target:
            target_id = target.execute_command("CLUSTER MYID")
            moved = 0
            while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 1):
                source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause_s)
            for port in self.ports:
                with self.node(port) as client:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            return moved


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[OwnCluster]:
    cluster = OwnCluster(tmp_path / "cluster")
    for port in cluster.ports:
        cluster.start_node(port)
    form_cluster(cluster.ports)
    try:
        yield cluster
    finally:
        for process in cluster.processes.values():
            process.stop(timeout=5)


def test_a_moving_slot_and_a_restarted_master_lose_and_double_nothing(
    endpoints: Endpoints, own_cluster: OwnCluster, tmp_path: Path,
) -> None:
    areas = load_areas(DEFAULT_AREAS)
    worker = start_worker(Endpoints(kafka=endpoints.kafka, redis_url=own_cluster.url), tmp_path, "cluster")
    feed = Feed.to(endpoints.kafka, worker, areas)
    try:
        feed.minutes(0, 9)
        wait_for_books(worker, feed.sent, 60)
        wait_until(lambda: newest_as_of(worker) >= minute_end(9), 60, "estimates of minute 9")

        # The stadium's slot moves to another master while minutes 10-14 are written, a
        # minute every 0.4 s: the worker's writes and counts meet the slot half moved.
        slot = key_slot(MOVED_TAG.encode())
        first_owner = own_cluster.owner_of(slot)
        to_port = next(p for p in own_cluster.ports if p != first_owner)
        own_cluster.begin_move(slot, to_port)

        def paced() -> None:
            for minute in range(10, 15):
                feed.minutes(minute, minute)
                time.sleep(0.4)

        writer = threading.Thread(target=paced)
        writer.start()
        moved = own_cluster.finish_move(slot, to_port, pause_s=0.3)
        writer.join()
        assert moved >= 10 and own_cluster.owner_of(slot) == to_port
        wait_for_books(worker, feed.sent, 90)
        resent = [line for line in worker.log_tail(1_000_000).splitlines() if "resending" in line]
        assert any("AskError" in line or "TryAgainError" in line for line in resent), \
            f"the worker's pipelines never met the moving slot:\n{worker.log_tail()}"

        # The master holding the books ({ingest}) is killed, away 5 s, restarted with its data.
        books_port = own_cluster.owner_of(key_slot(b"{ingest}"))
        kill(own_cluster.processes[books_port])
        feed.minutes(15, 17)  # waits in Kafka
        time.sleep(5)
        assert worker.process.poll() is None, f"the worker died while a master was away:\n{worker.log_tail()}"
        own_cluster.start_node(books_port)
        back_at = time.monotonic()
        form_cluster(own_cluster.ports)  # waits until the cluster is ok again; assigns nothing

        feed.minutes(18, 19)
        wait_for_books(worker, feed.sent, 120)
        wait_until(lambda: newest_as_of(worker) >= minute_end(19), 90, f"estimates of minute 19:\n{worker.log_tail()}")
        print(f"\nRedis Cluster: {moved} keys moved mid-stream; master away 5 s: everything in and minute 19 "
              f"published {time.monotonic() - back_at:.1f} s after it came back")
        time.sleep(2 * worker.settings.publish_interval_s)
        assert worker.process.poll() is None
        assert (worker.metric("crowdpulse_redis_retries_total") or 0) > 0, "ingest never waited for the cluster"
        faulty = outcome(worker)
    finally:
        feed.close()
        worker.stop()
        worker.redis.close()

    assert_as_without_fault(faulty, reference_run(endpoints, tmp_path, 20), feed.sent)
