"""The Faust application of `crowdpulse worker`: the ingest agent, the estimator task and the
HTTP API, composed from the pipeline (streams/pipeline/) and the operations room (streams/ops/).

`create_app(settings)` builds everything; `crowdpulse worker` runs it. The agent reads raw bytes
(Faust's own decoding would skip bad records with only a log line), hands batches of messages to
the ingest service and publishes its dead letters and late events. The estimator runs on the
leader only, so no window is computed twice when several workers run.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import redis
from faust.types import TP
from kafka import KafkaConsumer

from streams.core.areas import AreaMap, load_areas
from streams.core.errors import ConfigError
from streams.core.kafka_security import KafkaSecurity
from streams.core.keys import KeyLayout
from streams.core.metrics import Metrics
from streams.core.settings import LOOPBACK_HOSTS, Settings
from streams.core.topics import TopicNames
from streams.ops.alert_service import AlertService
from streams.ops.alert_store import AlertStore
from streams.ops.auth import TokenSet, middlewares
from streams.ops.web import ApiSources, add_views
from streams.ops.webhook import WebhookSender
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.estimator_pass import EstimatorPass, next_pass_at, people_model
from streams.pipeline.history_store import HistoryStore
from streams.pipeline.history_writer import HistoryWriter
from streams.pipeline.hll_store import HllStore
from streams.pipeline.ingest import BatchPlan, Message
from streams.pipeline.ingest_service import IngestService
from streams.pipeline.kafka_transport import transport_class
from streams.pipeline.rebuild import Rebuilder
from streams.pipeline.redis_io import TRANSIENT_ERRORS, connect
from streams.runtime.recovery import Recovery

log = logging.getLogger(__name__)


@dataclass
class WorkerParts:
    """What one worker process is made of, shared by the agent, the estimator task and the
    API: one Redis client under the stores, the ingest service, the estimator pass, alerts."""

    settings: Settings
    areas: AreaMap
    keys: KeyLayout
    metrics: Metrics
    hll: HllStore
    published: EstimateStore
    ingest: IngestService
    estimator: EstimatorPass
    rebuilder: Rebuilder
    alerting: AlertService
    webhook: WebhookSender | None
    history: HistoryStore | None

    @classmethod
    def build(cls, settings: Settings, areas: AreaMap) -> WorkerParts:
        if not settings.redis_url:
            raise ConfigError("no Redis configured (CROWDPULSE_REDIS)")
        keys = KeyLayout(settings.namespace, settings.bucket_s, settings.rotation)
        metrics = Metrics()
        # One client for every store: its connections are made on first use, inside the
        # worker's event loop.
        client = connect(settings.redis_url)
        # Changes of the people model's reference, and of every area of a division (whose
        # estimates are reconciled together), go to every estimator shard: every counter reads
        # the reference's curve, and those of the divisions its areas are in.
        hll = HllStore(client, keys, shards=settings.partitions, broadcast={areas.reference, *areas.divided},
                   register_writes=settings.register_writes)
        published = EstimateStore(client, keys)
        history_store = HistoryStore(settings.history_db, settings.namespace) if settings.history_db else None
        history = HistoryWriter(settings, areas, client, keys, history_store, metrics) if history_store else None
        return cls(
            settings=settings,
            areas=areas,
            keys=keys,
            metrics=metrics,
            hll=hll,
            published=published,
            ingest=IngestService(settings, areas, hll, metrics),
            estimator=EstimatorPass(settings, areas, hll, published, metrics, people_model(settings, areas), history),
            history=history_store,
            rebuilder=Rebuilder(settings, areas, hll, functools.partial(rebuild_consumer, settings)),
            alerting=AlertService(settings, areas, keys, metrics, AlertStore(client, keys)),
            webhook=WebhookSender(settings, metrics) if settings.webhook_url else None,
        )

    async def ingest_stats(self) -> dict[str, Any]:
        """GET /api/ingest: the books and stream time."""
        stats: dict[str, Any] = dict(await self.hll.stats())
        stats["stream_time"] = await self.hll.stream_now_ms()
        return stats


def rebuild_consumer(settings: Settings) -> KafkaConsumer:
    """A consumer of no group for the rebuild's reads (pipeline/rebuild.py)."""
    return KafkaConsumer(
        bootstrap_servers=(settings.kafka or "").split(","), enable_auto_commit=False, group_id=None,
        max_partition_fetch_bytes=2 * settings.max_message_bytes, fetch_max_bytes=4 * settings.max_message_bytes,
        **settings.kafka_security.kafka_python_config(),
    )


def batches_of_bytes(events: list, max_bytes: int) -> list[list]:
    """Cut a taken batch into consecutive runs of at most `max_bytes` of message values (at
    least one message each): 500 large frames would otherwise make one batch of 20 million
    events and a worker of several GB."""
    out: list[list] = [[]]
    size = 0
    for event in events:
        length = len(event.message.value or b"")
        if out[-1] and size + length > max_bytes:
            out.append([])
            size = 0
        out[-1].append(event)
        size += length
    return out if out[0] else []


def create_app(settings: Settings, areas: AreaMap | None = None) -> faust.App:
    """Build the Faust app with its topics, agent, timer and web views."""
    if not settings.kafka:
        raise ConfigError("no Kafka configured (CROWDPULSE_KAFKA)")
    areas = areas or load_areas(settings.areas_path)
    tokens = TokenSet.from_config(settings.api_tokens, settings.api_tokens_file)
    if settings.http_host not in LOOPBACK_HOSTS and not tokens:
        raise ConfigError(f"the tokens configured for {settings.http_host} are empty (docs/security.md)")
    topics = TopicNames(settings.topic_prefix)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=True,
        web_port=settings.http_port,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_application_options={"middlewares": middlewares(tokens)},
        broker_credentials=faust_credentials(settings.kafka_security),
        datadir=str(faust_datadir(settings)),
        producer_max_request_size=2 * settings.max_message_bytes,
        producer_linger=settings.producer_linger_s,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=3600.0,
        # Short group timeouts: the embedded broker holds a JoinGroup for the rebalance timeout.
        broker_rebalance_timeout=settings.group_timeout_s,
        broker_session_timeout=settings.group_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.group_timeout_s / 5),
    )
    app.transport = transport_class(settings.fetch_max_wait_ms)(app.conf.broker_consumer, app)
    parts = WorkerParts.build(settings, areas)
    app.parts = parts  # type: ignore[attr-defined]

    events_topic = app.topic(topics.events, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    occupancy_topic = app.topic(topics.occupancy, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    deadletter_topic = app.topic(topics.deadletter, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    late_topic = app.topic(topics.late, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    alerts_topic = app.topic(topics.alerts, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")

    def events_highwater(partition: int) -> int | None:
        """The log end of a crowd.events partition as the consumer last fetched it (None: unknown)."""
        try:
            return app.consumer.highwater(TP(topics.events, partition))
        except Exception:  # not fetched yet, or being rebalanced
            return None

    recovery = Recovery(app, parts.rebuilder, parts.ingest, parts.metrics, topics.events, events_highwater)

    @app.agent(events_topic, concurrency=1)
    async def record_events(stream: faust.StreamT) -> None:
        # noack_take: a batch is acknowledged (and so its offsets committed) only after it is
        # written to Redis and its outputs are sent; a crash or stop before that redelivers it.
        # Two batches overlap: the next one is planned (CPU, here) while Redis applies the one
        # before (CPU, in Redis). Writes, outputs and acks stay in batch order, one in flight.
        in_flight: asyncio.Future | None = None

        async def finish(events: list, plan: BatchPlan, started: float) -> None:
            deadletters, late = await parts.ingest.write_batch(plan, len(events), started)
            for out in deadletters:
                await deadletter_topic.send(key=out.key, value=out.value, headers=list(out.headers))
            for out in late:
                await late_topic.send(key=out.key, value=out.value, headers=list(out.headers))
            for event in events:
                await stream.ack(event)

        try:
            async for taken in stream.noack_take(settings.batch_messages, within=settings.batch_within_s):  # type: ignore[attr-defined]  # faust-streaming's Stream, not in StreamT
                for events in batches_of_bytes(taken, settings.batch_max_bytes):
                    started = time.perf_counter()
                    messages = [
                        Message(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value or b"")
                        for e in events
                    ]
                    plan = await parts.ingest.plan_batch(messages, events_highwater)
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(finish(events, plan, started))
            if in_flight is not None:
                await in_flight
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()  # unacknowledged: redelivered, and skipped if already applied

    @app.task
    async def estimator() -> None:
        # Like app.timer (on the leader, every publish interval), but live at a fixed rate:
        # app.timer sleeps the interval after each pass ends (next_pass_at).
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not app.should_stop:
            deadline = next_pass_at(deadline, loop.time(), settings.publish_interval_s, parts.estimator.live)
            await app.sleep(deadline - loop.time())
            if app.should_stop:
                break
            await recovery.check()  # every worker: each recovers its own partitions
            await guarded_pass()

    async def guarded_pass() -> None:
        # A failed pass never ends the task (nor the worker): Redis away is the expected case
        # (its client reconnects by itself; the next pass, one interval later, is the retry),
        # anything else is logged with its traceback. Either is counted; the estimate age then
        # grows and the shipped alert fires if it lasts (docs/operations.md, runbook).
        try:
            await publish_estimates()
        except TRANSIENT_ERRORS as exc:
            parts.metrics.estimator_errors.labels("redis").inc()
            log.warning("estimator pass failed, Redis unavailable (%s); next pass in %.0fs", exc, settings.publish_interval_s)
        except Exception:
            parts.metrics.estimator_errors.labels("other").inc()
            log.exception("estimator pass failed; next pass in %.0fs", settings.publish_interval_s)

    def owned_shards() -> set[int]:
        """The estimator shards this worker counts: the crowd.events partitions the group gave
        it (a rebalance moves them, and their areas, with the partitions). If the topic has
        fewer partitions than CROWDPULSE_PARTITIONS (it existed before, with fewer), no worker
        can be given the shards beyond: the leader counts those."""
        shards = settings.partitions
        try:
            owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.events and tp.partition < shards}
            actual = app.consumer.topic_partitions(topics.events)
        except Exception:  # no consumer yet, or being rebalanced: nothing owned this pass
            return set()
        if actual is not None and actual < shards and app.is_leader():
            owned |= set(range(actual, shards))
        return owned

    async def publish_estimates() -> None:
        if await parts.hll.rebuilding():
            log.info("windows being rebuilt from Kafka; estimates wait")
            return
        # Every worker counts the areas of its partitions; the leader then publishes every
        # area's records (docs/architecture.md, "Scale-out").
        shards = owned_shards()
        highwaters = {p: h for p in shards if (h := events_highwater(p)) is not None}
        await parts.estimator.counter.run(shards, highwaters)
        if not app.is_leader():
            return
        estimates = await parts.estimator.publisher.run()
        for estimate in estimates:
            await occupancy_topic.send(
                key=estimate["area"].encode(), value=json.dumps(estimate, separators=(",", ":")).encode()
            )
        if estimates:
            log.debug("published %d window estimates", len(estimates))
        # Alerts run after the estimates are out, so a failing alert pass never holds them up;
        # it is counted and logged, and the next pass evaluates the next points.
        try:
            await parts.alerting.evaluate(estimates)
            await parts.alerting.publish_outbox(
                lambda e: alerts_topic.send(key=e["area"].encode(), value=json.dumps(e, separators=(",", ":")).encode())
            )
        except Exception:
            parts.metrics.alert_errors.inc()
            log.exception("alert pass failed")

    if parts.webhook is not None:
        webhook = parts.webhook

        # Its own timer: a slow or dead receiver (retries, backoff) delays only the webhook.
        @app.timer(interval=1.0, on_leader=True)
        async def deliver_webhooks() -> None:
            try:
                await webhook.drain(parts.alerting.store, keep_going=app.is_leader)
            except Exception:
                log.exception("webhook delivery failed")

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # a coroutine receiver, as faust awaits it
        async def close_webhook(sender: Any, **kwargs: Any) -> None:
            await webhook.close()

    # faust's stubs type a receiver as (sender, *args, signal=...); it calls this one with the
    # revoked partitions as the first argument.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.events:
                parts.ingest.forget(tp.partition)

    started_wall = time.time()

    async def before_scrape() -> None:
        await observe_at_scrape(app, parts, started_wall)

    # The API reads the history on a connection of its own: never inside the writer's transaction.
    web_history = HistoryStore(settings.history_db, settings.namespace) if settings.history_db else None
    add_views(app, ApiSources(settings, areas, parts.metrics, parts.alerting, parts.published, parts.ingest_stats, before_scrape,
                              web_history))
    return app


FAUST_DIR_PREFIX = "crowdpulse-faust-"


def faust_datadir(settings: Settings) -> Path:
    """Faust's data directory: the configured one, else a temporary one removed at exit. Its
    name carries the process id, so that the folders of workers that died without cleaning up
    (kill -9) are removed by the next worker to start."""
    if settings.datadir is not None:
        settings.datadir.mkdir(parents=True, exist_ok=True)
        return settings.datadir
    remove_orphaned_datadirs(Path(tempfile.gettempdir()))
    path = Path(tempfile.mkdtemp(prefix=f"{FAUST_DIR_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def remove_orphaned_datadirs(folder: Path) -> list[Path]:
    """Remove the temporary data directories of workers no longer running; returns them."""
    removed: list[Path] = []
    if not Path("/proc/self").exists():  # no way to tell a live process here: keep everything
        return removed
    for path in folder.glob(f"{FAUST_DIR_PREFIX}*-*"):
        pid = path.name[len(FAUST_DIR_PREFIX):].partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


async def observe_at_scrape(app: faust.App, parts: WorkerParts, started_wall: float) -> None:
    """Gauges read when Prometheus scrapes, the same on every worker:

    - the age of the last published estimate, whichever worker published it (Redis keeps when),
      counted from this worker's start if nothing was ever published, so that the age grows
      (and the shipped alert fires) when no leader publishes; while Redis is away, from the
      newest publication this worker knows of;
    - the lag of the crowd.events partitions this worker owns: the consumer's highwater (as of
      its last fetch) minus the next offset to apply, this worker's applied offset + 1, or, for a
      partition it owns but has not yet read from, the offset its previous owner applied."""
    m = parts.metrics
    applied_elsewhere: dict[int, int] = {}
    try:
        published_ms = await parts.published.published_at_ms()
        applied_elsewhere = await parts.hll.applied_offsets()
    except redis.RedisError as exc:
        log.warning("estimate age and lag read without Redis: %s", exc)
        published_ms = None
    known = [t for t in (parts.estimator.last_publish_wall, None if published_ms is None else published_ms / 1000) if t is not None]
    m.estimate_age.set(time.time() - (max(known) if known else started_wall))
    lag = m.consumer_lag
    lag.clear()
    consumer = getattr(app, "_consumer", None)  # never create a consumer just to scrape
    if consumer is None:
        return
    events = TopicNames(parts.settings.topic_prefix).events
    try:
        assignment = consumer.assignment()
    except Exception:  # not started or being rebalanced
        return
    for tp in assignment:
        if tp.topic != events:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # the aiokafka consumer is not (yet) running
            continue
        if highwater is None:
            continue
        applied = parts.ingest.applied_offset(tp.partition)
        if applied is None:
            applied = applied_elsewhere.get(tp.partition, -1)
        lag.labels(str(tp.partition)).set(max(0, highwater - applied - 1))


def faust_credentials(security: KafkaSecurity) -> object | None:
    """`broker_credentials` for faust.App (aiokafka underneath); None for PLAINTEXT."""
    if security.protocol == "SASL_SSL":
        return faust.SASLCredentials(
            username=security.username, password=security.password, mechanism=security.sasl_mechanism,
            ssl_context=security.ssl_context(),
        )
    if security.protocol == "SSL":
        return faust.SSLCredentials(security.ssl_context())
    return None
