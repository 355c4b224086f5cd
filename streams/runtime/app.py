"""The Faust application: the ingest agent, the estimator timer and the HTTP API.

`create_app(settings)` builds everything; `crowdpulse worker` runs it. The agent reads raw bytes
(Faust's own decoding would skip bad records with only a log line), hands batches of messages to
streams/pipeline/ingest.py, and writes the plan with streams/pipeline/hll_store.py. The estimator runs on the
leader only, so no window is computed twice when several workers run.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import faust
import redis

from streams.ops.alert_store import AlertService
from streams.core.areas import AreaMap, load_areas
from streams.estimate.estimator import (
    DAY_MS,
    PeopleModel,
    SealedCounts,
    WindowBook,
    ahead_share,
    points_to_refresh,
    private_releases,
    sealed_through,
)
from streams.estimate.privacy import DiscreteLaplace
from streams.pipeline.hll_store import HllStore, connect, stream_time
from streams.pipeline.ingest import BatchPlan, Ingestor, Message, Output
from streams.pipeline.kafka_transport import transport_class
from streams.core.keys import KeyLayout
from streams.core.windows import as_of_ms
from streams.core.metrics import Metrics
from streams.ops.auth import TokenSet, middlewares
from streams.core.settings import LOOPBACK_HOSTS, Settings
from streams.core.topics import TopicNames
from streams.estimate.visibility import VisibilityModel
from streams.ops.web import add_views
from streams.ops.webhook import WebhookSender
from streams.core.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Pipeline:
    """State shared by the agent, the timer and the views of one worker process."""

    def __init__(self, settings: Settings, areas: AreaMap) -> None:
        self.settings = settings
        self.areas = areas
        self.keys = KeyLayout(settings.namespace, settings.bucket_s, settings.rotation)
        self.ingestor = Ingestor(settings, areas)
        self.metrics = Metrics()
        self._store: HllStore | None = None
        # Alerts share the HLL store's Redis client (created lazily in the worker's loop).
        self.alerting = AlertService(settings, areas, self.keys, self.metrics, lambda: self.store.redis)
        self.webhook = WebhookSender(settings, self.metrics) if settings.webhook_url else None
        # Window ends that can still change: grace, plus the current and one more bucket.
        keep = settings.grace_s // settings.bucket_s + 3
        self.noise = (
            DiscreteLaplace(settings.dp_epsilon, settings.dp_sensitivity, settings.dp_secret.encode())
            if settings.dp_epsilon is not None and settings.dp_secret
            else None
        )
        self.book = WindowBook(
            areas, settings.windows_s, settings.min_count, settings.bucket_ms, keep, people_model(settings, areas), settings.segments
        )
        self.sealed = SealedCounts(settings.bucket_s)
        self._ahead_done: int | None = None  # the window end whose sealed spans are all counted
        self.last_publish_wall: float | None = None
        #: Stream time within the grace period of the wall clock at the last pass: a live feed,
        #: not a replay or a backlog (the estimator's cadence depends on it, app.next_pass_at).
        self.live = True

    @property
    def store(self) -> HllStore:
        # Created lazily, inside the worker's event loop.
        if self._store is None:
            if not self.settings.redis_url:
                raise RuntimeError("no Redis configured (CROWDPULSE_REDIS)")
            self._store = HllStore(connect(self.settings.redis_url), self.keys)
        return self._store

    async def ingest(self, messages: list[Message]) -> tuple[list[Output], list[Output]]:
        """Plan and write one batch; returns (dead letters, late events) to publish.

        Planning is pure and only fails on a bug: then the batch is dead-lettered whole
        (processing_error) so nothing is lost and the stream goes on. Writing retries until
        Redis answers: the batch is acknowledged to Kafka only after it is written.
        """
        started = time.perf_counter()
        plan = await self.plan_batch(messages)
        return await self.write_batch(plan, len(messages), started)

    async def plan_batch(self, messages: list[Message]) -> BatchPlan:
        """Plan one batch and adopt its partition states and sequences right away, so the next
        batch can be planned while this one is still being written (see write_batch)."""
        for partition in {m.partition for m in messages}:
            if not self.ingestor.known(partition):
                state, sequences = await self._with_retry(lambda p=partition: self.store.load_partition(p))
                self.ingestor.restore(partition, state, sequences)
        try:
            plan = self.ingestor.plan(messages, wall_now_ms())
        except Exception as exc:
            log.exception("planning a batch of %d messages failed; dead-lettering it", len(messages))
            plan = self.ingestor.quarantine(messages, f"{type(exc).__name__}: {exc}"[:200])
        self.ingestor.commit(plan)
        return plan

    async def write_batch(self, plan: BatchPlan, messages: int, started: float) -> tuple[list[Output], list[Output]]:
        """Write a planned batch (retrying while Redis is unreachable); returns (dead letters,
        late events) to publish. A write that fails for good leaves Redis behind the states the
        plan adopted: every partition is then forgotten, so the next batch reloads them from
        Redis and nothing unwritten is ever taken as applied."""
        try:
            await self._with_retry(lambda: self.store.apply(plan))
        except BaseException:
            self.ingestor.forget_all()
            raise
        self._observe_batch(plan, messages, time.perf_counter() - started)
        return plan.deadletters, plan.late

    async def _with_retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await operation()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
                self.metrics.redis_retries.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _observe_batch(self, plan: BatchPlan, messages: int, seconds: float) -> None:
        m = self.metrics
        m.events.labels("counted").inc(plan.counted)
        m.events.labels("deadletter").inc(plan.deadlettered)
        m.events.labels("late").inc(plan.late_events)
        for reason, n in plan.reasons.items():
            m.deadletters.labels(reason).inc(n)
        m.frames.inc(plan.frames)
        m.sequence_gaps.inc(plan.sequence_gaps)
        m.sequence_repeats.inc(plan.sequence_repeats)
        m.replayed.inc(plan.replayed)
        m.batch_messages.observe(messages)
        m.batch_events.observe(plan.events_in)
        m.batch_seconds.observe(seconds)

    async def estimate(self) -> list[dict]:
        """Recompute the window points that changed; see estimator.points_to_refresh."""
        started = time.perf_counter()
        settings = self.settings
        store = self.store
        watermarks = await store.watermarks()
        stream_now = stream_time(watermarks)
        if stream_now is None:
            return []
        self.live = wall_now_ms() - stream_now <= settings.grace_s * 1000
        newest = stream_now // settings.bucket_ms
        dirty = await store.pop_dirty()
        published_through = await store.published_through()
        points, skipped = points_to_refresh(
            self.areas.area_ids,
            dirty,
            published_through,
            newest,
            max(settings.windows_s) // settings.bucket_s,
            settings.max_catchup_buckets,
        )
        self.metrics.skipped_points.inc(skipped)
        if not points:
            return []
        needed = self.book.needed(points)
        counts = await self._span_counts(needed, newest, stream_now, watermarks)
        data_from = await store.data_since(self.book.history_area, {b for _, b in needed}, self.book.history_s)
        estimates = self.book.update(counts, newest, data_from)
        if self.noise is not None:
            # Budget check and charge happen before anything is published: a crash in between
            # can only overcharge, never release unpaid.
            spent = await store.dp_spent((e["area"], e["as_of"] // DAY_MS) for e in estimates)
            estimates, charges = private_releases(estimates, self.noise, spent, settings.dp_daily_budget)
            await store.dp_charge(charges)
        await store.save_estimates(estimates, as_of_ms(newest, settings.bucket_ms), settings.series_points * settings.bucket_ms)
        await store.set_published_through(max(newest, published_through or newest))
        self._observe(estimates, stream_now, as_of_ms(newest, settings.bucket_ms))
        self.metrics.publish_seconds.observe(time.perf_counter() - started)
        return estimates

    async def _span_counts(self, needed: list[tuple[str, int]], newest: int, stream_now: int,
                           watermarks: dict[int, int | None]) -> dict[tuple[str, int, tuple], int]:
        """The needed points' span counts: sealed ones kept from earlier passes, the rest merged
        in Redis. On a live feed a pass also counts a share of the next window end's sealed
        spans ahead of need (estimator.ahead_share: spread over the passes left in the minute),
        so the pass that opens a new minute merges only what can still change. Ahead counts
        are kept, not returned."""
        settings = self.settings
        through = sealed_through(watermarks, settings.partitions, settings.grace_s * 1000, settings.bucket_ms)
        spans = self.book.spans
        known, todo = self.sealed.split(needed, spans)
        ahead: list = []
        if self.live and self._ahead_done != newest + 1:
            ahead = self.sealed.missing([(a, newest + 1) for a in self.areas.area_ids], spans, through)
            if not ahead:
                self._ahead_done = newest + 1
            ahead = ahead[: ahead_share(len(ahead), stream_now, newest, settings.bucket_ms, settings.publish_interval_s)]
        counted = await self.store.count_spans(todo + ahead)
        self.sealed.keep(counted, through)
        self.sealed.forget(newest - self.book.keep_buckets + 1)
        self.metrics.span_counts.labels("redis").inc(len(counted))
        self.metrics.span_counts.labels("kept").inc(len(known))
        if ahead:
            counted = {k: n for k, n in counted.items() if k[1] <= newest}
        return {**known, **counted}

    def _observe(self, estimates: list[dict], stream_now: int, current_as_of: int) -> None:
        m = self.metrics
        m.windows_published.inc(len(estimates))
        m.stream_time.set(stream_now / 1000)
        current = [e for e in estimates if e["as_of"] == current_as_of]
        if current:
            m.warming_up.set(int(any(e["warming_up"] for e in current)))
        self.last_publish_wall = time.time()
        for e in current:
            labels = (e["area"], str(e["window_s"]))
            if e["suppressed"]:
                # A suppressed count must not linger on /metrics from an earlier, larger value.
                for gauge in (m.people, m.capacity_ratio):
                    try:
                        gauge.remove(*labels)
                    except KeyError:
                        pass
            else:
                m.people.labels(*labels).set(e["people"])
                m.capacity_ratio.labels(*labels).set(e["people"] / e["capacity"])


def next_pass_at(deadline: float, now: float, interval: float, live: bool = True) -> float:
    """When the next estimator pass starts (`now`: the last pass just ended, which started at
    `deadline`).

    Live (stream time close to the wall clock, Pipeline.live): at a fixed rate, one interval
    after the last start, so a long pass (every area at a minute boundary) does not delay the
    next by its own length; one that overran is followed at once (the lost tick is not made
    up). Catching up (a replay or a backlog): a whole interval after the pass ended, so ingest,
    which shares the event loop and Redis with the estimator, gets most of them."""
    if not live:
        return now + interval
    return max(deadline + interval, now)


def people_model(settings: Settings, areas: AreaMap) -> PeopleModel | None:
    """The visibility model with the areas' market shares, or None for the naive model."""
    if settings.people_model == "devices":
        return None
    model = VisibilityModel.load(settings.visibility_model_path)
    return PeopleModel.for_areas(model, areas, settings.market_share, settings.sims_per_person, settings.scaling_se)


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


def wall_now_ms() -> int:
    return int(time.time() * 1000)


def create_app(settings: Settings, areas: AreaMap | None = None) -> faust.App:
    """Build the Faust app with its topics, agent, timer and web views."""
    if not settings.kafka:
        raise RuntimeError("no Kafka configured (CROWDPULSE_KAFKA)")
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
        broker_credentials=settings.kafka_security.faust_credentials(),
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
    pipeline = Pipeline(settings, areas)
    app.pipeline = pipeline  # type: ignore[attr-defined]

    events_topic = app.topic(topics.events, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    occupancy_topic = app.topic(topics.occupancy, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    deadletter_topic = app.topic(topics.deadletter, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    late_topic = app.topic(topics.late, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    alerts_topic = app.topic(topics.alerts, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")

    @app.agent(events_topic, concurrency=1)
    async def record_events(stream: faust.StreamT) -> None:
        # noack_take: a batch is acknowledged (and so its offsets committed) only after it is
        # written to Redis and its outputs are sent; a crash or stop before that redelivers it.
        # Two batches overlap: the next one is planned (CPU, here) while Redis applies the one
        # before (CPU, in Redis). Writes, outputs and acks stay in batch order, one in flight.
        in_flight: asyncio.Future | None = None

        async def finish(events: list, plan: BatchPlan, started: float) -> None:
            deadletters, late = await pipeline.write_batch(plan, len(events), started)
            for out in deadletters:
                await deadletter_topic.send(key=out.key, value=out.value, headers=list(out.headers))
            for out in late:
                await late_topic.send(key=out.key, value=out.value, headers=list(out.headers))
            for event in events:
                await stream.ack(event)

        try:
            async for taken in stream.noack_take(settings.batch_messages, within=settings.batch_within_s):
                for events in batches_of_bytes(taken, settings.batch_max_bytes):
                    started = time.perf_counter()
                    messages = [
                        Message(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value or b"")
                        for e in events
                    ]
                    plan = await pipeline.plan_batch(messages)
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
            deadline = next_pass_at(deadline, loop.time(), settings.publish_interval_s, pipeline.live)
            await app.sleep(deadline - loop.time())
            if not app.should_stop and app.is_leader():
                await publish_estimates()

    async def publish_estimates() -> None:
        estimates = await pipeline.estimate()
        for estimate in estimates:
            await occupancy_topic.send(
                key=estimate["area"].encode(), value=json.dumps(estimate, separators=(",", ":")).encode()
            )
        if estimates:
            log.debug("published %d window estimates", len(estimates))
        # Alerts run after the estimates are out, so a failing alert pass never holds them up;
        # it is counted and logged, and the next pass evaluates the next points.
        try:
            await pipeline.alerting.evaluate(estimates)
            await pipeline.alerting.publish_outbox(
                lambda e: alerts_topic.send(key=e["area"].encode(), value=json.dumps(e, separators=(",", ":")).encode())
            )
        except Exception:
            pipeline.metrics.alert_errors.inc()
            log.exception("alert pass failed")

    if pipeline.webhook is not None:
        webhook = pipeline.webhook

        # Its own timer: a slow or dead receiver (retries, backoff) delays only the webhook.
        @app.timer(interval=1.0, on_leader=True)
        async def deliver_webhooks() -> None:
            try:
                await webhook.drain(pipeline.alerting.store, keep_going=app.is_leader)
            except Exception:
                log.exception("webhook delivery failed")

        @app.on_before_shutdown.connect
        async def close_webhook(sender: Any, **kwargs: Any) -> None:
            await webhook.close()

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.events:
                pipeline.ingestor.forget(tp.partition)

    add_views(app, pipeline)
    return app


def faust_datadir(settings: Settings) -> Path:
    """Faust's data directory: the configured one, else a temporary one removed at exit."""
    if settings.datadir is not None:
        settings.datadir.mkdir(parents=True, exist_ok=True)
        return settings.datadir
    path = Path(tempfile.mkdtemp(prefix="crowdpulse-faust-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
