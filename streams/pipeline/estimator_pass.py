"""One estimator pass, in two sides. Counting (CountPass, every worker, for the areas of the
crowd.events partitions it owns): which window points changed (its shards' dirty sets in
Redis), their span counts (sealed ones kept from earlier passes, the rest merged in Redis) and
people estimates, written as point records (streams/pipeline/stage_store.py). Publishing
(PublishPass, the leader): the records that changed, the privacy rule over every area of a
window end, and what is published (the snapshot, series and progress in
streams/pipeline/estimate_store.py). Every publish interval each worker counts and the leader
then publishes (streams/runtime/app.py sends the estimates to Kafka and the alert pass)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from streams.core.areas import AreaMap, area_shard
from streams.core.blocks import BlockBook, block_of, block_range
from streams.core.metrics import Metrics
from streams.core.segments import STORED
from streams.core.settings import Settings
from streams.core.windows import Span, as_of_ms, expire_at_ms
from streams.estimate.estimator import (
    DAY_MS,
    Estimate,
    PartitionMotion,
    PeopleModel,
    PointBook,
    SealedCounts,
    WindowBook,
    ahead_share,
    backlogged,
    describe_correction,
    moving_through,
    points_to_refresh,
    private_releases,
    sealed_through,
    venue_network,
)
from streams.estimate.privacy import mechanism_for
from streams.estimate.visibility import VisibilityModel
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.history_writer import HistoryWriter
from streams.pipeline.hll_store import HllStore, stream_time
from streams.pipeline.ingest_service import wall_now_ms
from streams.pipeline.stage_store import StageStore

#: Buckets whose keys one pass may drop at most (a first pass, or one after a jump in stream time).
DROP_AT_MOST_BUCKETS = 120
#: A partition whose watermark has not moved for this many publish intervals (wall clock) no
#: longer holds a catching-up pass back (estimator.moving_through): the newest minutes of a
#: backlog are counted this long after it is consumed (2 s at the default interval).
MOTION_IDLE_INTERVALS = 2
#: A partition's recorded log end (HllStore.record_highwaters) older than this many publish
#: intervals is ignored (estimator.backlogged): its worker is gone or stalled for that long.
HIGHWATER_FRESH_INTERVALS = 30
SpanCounts = dict[tuple[str, int, Span], int]
log = logging.getLogger(__name__)


def people_model(settings: Settings, areas: AreaMap) -> PeopleModel | None:
    """The visibility model with the areas' market shares, or None for the naive model."""
    if settings.people_model == "devices":
        return None
    model = VisibilityModel.load(settings.visibility_model_path)
    if not areas.reference_covers_network:
        covered = len(areas.area_by_id[areas.reference].cells)
        log.warning("the people model's reference area %r covers %d of the %d cells: it cannot carry the network's "
                    "activity, and estimates off the calibrated map get wide ranges; name an area that covers the "
                    "network as \"reference\" in the areas file (docs/areas.md)", areas.reference, covered, len(areas.cells))
    if (network := venue_network(areas)) is not None:
        log.warning("area %r covers the whole network and is of kind venue: the people model reads it as the network "
                    "(no calibrated network is a venue) and ignores its kind; the areas inside it keep theirs "
                    "(docs/areas.md, \"Venues\")", network)
    # A table fitted on a deployment's own counts (crowdpulse calibrate --truth) corrects the
    # areas they covered, by id: say which and how, and which ids this areas file lacks.
    corrections = model.meta.get("area_corrections") or {}
    if corrections:
        log.info("the people model corrects %d areas by the deployment's own counts: %s", len(corrections),
                 "; ".join(f"{a}: {describe_correction(c)}" for a, c in sorted(corrections.items())))
    if unknown := sorted(set(corrections) - set(areas.area_ids)):
        log.warning("the people model's table corrects areas this areas file does not have, and those corrections are "
                    "unused: %s (was it fitted with another areas file? docs/estimation.md, \"Calibrating on your own "
                    "counts\")", ", ".join(unknown))
    return PeopleModel.for_areas(model, areas, settings.market_share, settings.sims_per_person, settings.scaling_se)


def keep_buckets(settings: Settings) -> int:
    """Window ends that can still change, which both sides of the estimator keep: grace, plus
    the current and one more bucket."""
    return settings.grace_s // settings.bucket_s + 3


def next_pass_at(deadline: float, now: float, interval: float, live: bool = True) -> float:
    """When the next estimator pass starts (`now`: the last pass just ended, which started at
    `deadline`).

    Live (stream time close to the wall clock, EstimatorPass.live): at a fixed rate, one
    interval after the last start, so a long pass (every area at a minute boundary) does not
    delay the next by its own length; one that overran is followed at once (the lost tick is
    not made up). Catching up (a replay or a backlog): a whole interval after the pass ended,
    so ingest, which shares the event loop and Redis with the estimator, gets most of them."""
    if not live:
        return now + interval
    return max(deadline + interval, now)


class CountPass:
    """The counting side, on every worker, for the areas of the shards it owns (the crowd.events
    partitions the Kafka group gave it; areas.area_shard): which of its points changed (its
    shards' dirty sets), their span counts (sealed ones kept from earlier passes, the rest
    merged in Redis), their people estimates (PointBook), written as point records for the
    publisher (StageStore)."""

    def __init__(self, settings: Settings, areas: AreaMap, hll: HllStore, stage: StageStore, metrics: Metrics,
                 model: PeopleModel | None) -> None:
        self.settings = settings
        self.areas = areas
        self.hll = hll
        self.stage = stage
        self.metrics = metrics
        self.book = PointBook(areas, settings.windows_s, keep_buckets(settings), model, settings.segments)
        self.sealed = SealedCounts(settings.bucket_s)
        #: Sealed five-minute blocks merged in Redis, read whole by later spans (None: off).
        lookback = max(span.skip_s + span.length_s for span in self.book.spans) // settings.bucket_s
        self.blocks = BlockBook(lookback) if settings.span_blocks else None
        self._ahead_done: int | None = None  # the window end whose sealed spans are all counted
        #: Dirty points taken from Redis by a pass that then failed (Redis went away, say): the
        #: next pass takes them up, so a failed pass loses no area's re-estimation.
        self._pending_dirty: set[tuple[str, int]] = set()
        self.owned: frozenset[int] = frozenset()
        self.shard_of = {a: area_shard(a, hll.shards) for a in areas.area_ids}
        #: Partitions whose watermark moved lately: while catching up, a pass counts only the
        #: window ends they have all left behind (estimator.moving_through).
        self.motion = PartitionMotion(MOTION_IDLE_INTERVALS * settings.publish_interval_s, settings.partitions)
        #: Stream time within the grace period of the wall clock at the last pass: a live feed,
        #: not a replay or a backlog (the estimator's cadence depends on it, next_pass_at).
        self.live = True

    def areas_of(self, shards: Iterable[int]) -> list[str]:
        wanted = set(shards)
        return [a for a in self.areas.area_ids if self.shard_of[a] in wanted]

    async def run(self, shards: Iterable[int], highwaters: dict[int, int] | None = None) -> int:
        """Count the changed points of the areas of `shards` and write their records; returns
        how many points were counted. `highwaters`: the log end of each crowd.events partition
        this worker owns, as its consumer last fetched it (recorded for every worker's passes)."""
        settings = self.settings
        shards = frozenset(shards)
        if highwaters:
            await self.hll.record_highwaters(highwaters, wall_now_ms())
        if shards != self.owned:
            # Shards given away: their areas are forgotten (counted afresh if they come back).
            self.book.forget_areas(self.areas_of(shards))
            if self.blocks is not None:
                self.blocks.keep_areas([*self.areas_of(shards), *self.hll.broadcast])  # the reference: every counter reads it
            self._pending_dirty = {(a, b) for a, b in self._pending_dirty if self.shard_of.get(a) in shards}
            self.owned = shards
            self.metrics.estimator_shards.set(len(shards))
        states = await self.hll.partition_states()
        watermarks = {p: state.watermark_ms for p, state in states.items()}
        # Windows read shadow keys across a rotation only if the feed declared it (docs/privacy.md).
        await self.hll.refresh_declared()
        stream_now = stream_time(watermarks)
        if stream_now is None or not shards:
            return 0
        self.live = wall_now_ms() - stream_now <= settings.grace_s * 1000
        newest = stream_now // settings.bucket_ms
        filling: int | None = newest
        moving = self.motion.moving(watermarks, time.monotonic())
        counted = await self.stage.counted(self.hll.shards)
        done = [c for s, c in counted.items() if s in shards and c is not None]  # these shards' progress
        if not self.live:
            # Catching up: only window ends every moving partition has left behind
            # (estimator.moving_through), but never fewer than these shards counted already: a
            # partition that wakes up behind (taken over from a worker gone, read late) changes
            # window ends counted already, and this pass counts them again as far as they go.
            # A partition with a backlog moves, however long its watermark has stood still.
            applied = {p: state.applied_offset for p, state in states.items()}
            moving |= backlogged(await self.hll.highwaters(), applied, wall_now_ms(),
                                 int(HIGHWATER_FRESH_INTERVALS * settings.publish_interval_s * 1000))
            if self.motion.unread(watermarks, moving):
                return 0  # a partition not read yet: its events could change any window end
            behind = moving_through(watermarks, moving, settings.bucket_ms)
            limit = None if behind is None else max([behind, *done])
            if limit is not None and limit < newest:
                newest, filling = limit, None
        self._pending_dirty |= await self.hll.pop_dirty(sorted(shards))
        dirty = set(self._pending_dirty)
        # Sealed buckets written again: the windows were rebuilt from Kafka (pipeline/rebuild.py).
        if self.sealed.invalidate(dirty):
            log.info("counts kept from before the rebuild were dropped; the points it touched are re-estimated")
        if self.blocks is not None:
            self.blocks.invalidate(dirty)
        dirty_of: dict[int, set[tuple[str, int]]] = {shard: set() for shard in shards}
        for area, bucket in dirty:
            if area in self.hll.broadcast:
                for mine in dirty_of.values():
                    mine.add((area, bucket))
            elif self.shard_of.get(area) in dirty_of:
                dirty_of[self.shard_of[area]].add((area, bucket))
        points: set[tuple[str, int]] = set()
        for shard in sorted(shards):
            since = counted[shard]
            if since is None and filling is None:
                # A shard's first pass, held back: the window ends it reaches are those its
                # changes reach (the limit itself may be the minute before the stream began).
                since = newest
            found, skipped = points_to_refresh(self.areas_of([shard]), dirty_of[shard], since, newest,
                                               max(settings.windows_s) // settings.bucket_s, settings.max_catchup_buckets)
            points.update(found)
            self.metrics.skipped_points.inc(skipped)
        owned_areas = self.areas_of(shards)
        if points:
            needed = self.book.needed(sorted(points, key=lambda p: (p[1], p[0])), owned_areas)
            counts = await self.span_counts(needed, newest, stream_now, watermarks, owned_areas)
            owned_set = set(owned_areas)
            records = {point: r for point, r in self.book.update(counts, newest, filling).items() if point[0] in owned_set}
            await self.stage.write(records)
            self.metrics.points_counted.inc(len(records))
        await self.stage.set_counted(shards, max([newest, *done]))
        self._pending_dirty.clear()
        return len(points)

    async def span_counts(self, needed: list[tuple[str, int]], newest: int, stream_now: int,
                          watermarks: dict[int, int | None], owned: Iterable[str] | None = None) -> SpanCounts:
        """The needed points' span counts: sealed ones kept from earlier passes, the rest merged
        in Redis. On a live feed a pass also counts a share of the next window end's sealed
        spans of the `owned` areas (default: all) ahead of need (estimator.ahead_share: spread
        over the passes left in the minute), so the pass that opens a new minute merges only
        what can still change. Ahead counts are kept, not returned."""
        settings = self.settings
        through = sealed_through(watermarks, settings.partitions, settings.grace_s * 1000, settings.bucket_ms)
        spans = self.book.spans
        known, todo = self.sealed.split(needed, spans)
        ahead: list[tuple[tuple[str, int], list[Span]]] = []
        if self.live and self._ahead_done != newest + 1:
            areas = self.areas.area_ids if owned is None else list(owned)
            ahead = self.sealed.missing([(a, newest + 1) for a in areas], spans, through)
            if not ahead:
                self._ahead_done = newest + 1
            ahead = ahead[: ahead_share(len(ahead), stream_now, newest, settings.bucket_ms, settings.publish_interval_s)]
        blocks = None
        if self.blocks is not None:
            areas = self.areas.area_ids if owned is None else list(owned)
            await self.merge_blocks([*areas, *sorted(self.hll.broadcast - set(areas))], through, newest, stream_now)
            blocks = {area: self.blocks.usable(area) for area in {point[0] for point, _ in todo + ahead}}
        counted = await self.hll.count_spans(todo + ahead, blocks)
        self.sealed.keep(counted, through)
        self.sealed.forget(newest - self.book.keep_buckets + 1)
        self.metrics.span_counts.labels("redis").inc(len(counted))
        self.metrics.span_counts.labels("kept").inc(len(known))
        if ahead:
            counted = {k: n for k, n in counted.items() if k[1] <= newest}
        return {**known, **counted}

    async def merge_blocks(self, areas: list[str], through: int | None, newest: int, stream_now: int) -> None:
        """Merge the newly sealed blocks of these areas whose bucket keys are dense
        (streams/core/blocks.py): first the totals, then, where a total's are, its segments'."""
        blocks = self.blocks
        assert blocks is not None
        settings = self.settings
        blocks.forget_before(block_of(newest - self.book.keep_buckets + 1 - blocks.lookback_buckets + 1))
        candidates = blocks.to_look_at(areas, through, newest)
        if not candidates:
            return
        dense = await self.hll.dense_blocks([(area, "", block) for area, block in candidates])
        segments = [s for s in STORED if any(span.segment == s for span in self.book.spans)]
        wanted = [(area, segment, block) for (area, block), ok in zip(candidates, dense) if ok for segment in segments]
        dense_segments = dict(zip(wanted, await self.hll.dense_blocks(wanted)))
        merged = {(area, "", block): ok for (area, block), ok in zip(candidates, dense)} | dense_segments
        to_merge = [key for key, ok in merged.items() if ok]
        # A block key must not vanish before the bucket keys it stands for (they expired on the
        # wall clock as laid out when they were written): it lives a window longer than its
        # last bucket would now. The publisher drops it with that bucket in any case.
        wall = wall_now_ms() + settings.longest_window_ms
        expiry = {block: expire_at_ms(block_range(block)[-1], settings.bucket_ms, settings.longest_window_ms,
                                      settings.grace_s * 1000, stream_now, wall) for _, _, block in to_merge}
        await self.hll.merge_blocks(to_merge, expiry)
        segments_of: dict[tuple[str, int], list[str]] = {}
        for area, segment, block in to_merge:
            segments_of.setdefault((area, block), []).append(segment)
        for area, block in candidates:
            blocks.record(area, block, segments_of.get((area, block), []))
        self.metrics.blocks_merged.inc(len(to_merge))


class PublishPass:
    """The publishing side, on the leader: the point records that changed, once every shard has
    counted their window end; the privacy rule over every area of a window end (WindowBook),
    differential privacy, the snapshot, series and progress (EstimateStore), the footfall
    history; then old buckets out. Privacy decisions that span areas counted by different
    workers are taken here, over one read of every area's records of a window end."""

    def __init__(self, settings: Settings, areas: AreaMap, hll: HllStore, stage: StageStore, published: EstimateStore,
                 metrics: Metrics, model: PeopleModel | None, history: HistoryWriter | None = None) -> None:
        self.settings = settings
        #: Writes the footfall history (None: CROWDPULSE_HISTORY_DB unset).
        self.history = history
        self.areas = areas
        self.hll = hll
        self.stage = stage
        self.published = published
        self.metrics = metrics
        self.book = WindowBook(areas, settings.windows_s, settings.min_count, settings.bucket_ms, keep_buckets(settings),
                               model, settings.segments)
        self.noise = mechanism_for(settings)
        #: Changed points read from Redis whose window end not every shard has counted yet.
        self._waiting: set[tuple[str, int]] = set()
        self.last_publish_wall: float | None = None
        self._dropped_through: int | None = None  # the newest bucket whose keys were dropped
        #: (area, window) -> the people and capacity-ratio gauges' children it set.
        self._gauges: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def run(self) -> list[Estimate]:
        """Publish the window points whose records changed (and whose window end every shard
        has counted); store what is published and return it."""
        started = time.perf_counter()
        settings = self.settings
        watermarks = await self.hll.watermarks()
        stream_now = stream_time(watermarks)
        if stream_now is None:
            return []
        newest = stream_now // settings.bucket_ms
        counted = await self.stage.counted(self.hll.shards)
        complete = None if any(c is None for c in counted.values()) else min(c for c in counted.values() if c is not None)
        self._waiting |= await self.stage.pop_changed()
        ready = {(a, b) for a, b in self._waiting if complete is not None and b <= complete}
        if not ready:
            await self._after_publishing(watermarks, complete)
            return []
        wanted: dict[int, list[str] | None] = {}
        for area, bucket in sorted(ready):
            if bucket not in self.book.counts:
                wanted[bucket] = None  # a window end new to the book: every area's record
            elif wanted.get(bucket, []) is not None:
                wanted.setdefault(bucket, []).append(area)  # type: ignore[union-attr]
        records = await self.stage.read(wanted)
        data_from = await self.hll.data_since(self.book.history_area, set(wanted), self.book.history_s)
        estimates = self.book.update_records(records, newest, data_from)
        if self.noise is not None:
            # Budget check and charge happen before anything is published: a crash in between
            # can only overcharge, never release unpaid.
            spent = await self.published.dp_spent((e["area"], e["as_of"] // DAY_MS) for e in estimates)
            estimates, charges = private_releases(estimates, self.noise, spent, settings.dp_daily_budget)
            await self.published.dp_charge(charges)
        assert complete is not None
        # The current window end is the newest every shard has counted: stream time may have
        # moved on (ingest runs beside the pass) since the counters read it, and a snapshot
        # keyed to a window end nothing was published for would stay empty.
        current_as_of = as_of_ms(min(newest, complete), settings.bucket_ms)
        await self.published.save_estimates(estimates, current_as_of, settings.series_points * settings.bucket_ms)
        if self.history is not None:
            await self.history.record(estimates)
        published_through = await self.published.published_through()
        await self.published.set_published_through(max(complete, published_through or complete), int(time.time() * 1000))
        self._waiting -= ready
        self._observe(estimates, stream_now, current_as_of)
        await self._after_publishing(watermarks, complete)
        self.metrics.publish_seconds.observe(time.perf_counter() - started)
        return estimates

    async def _after_publishing(self, watermarks: dict[int, int | None], complete: int | None) -> None:
        """Old buckets out (merged into the history's visitor days first), sealed hours and days
        into the history: also on a pass with nothing new to publish (the stream stopped).
        Only what every shard has counted (`complete`, all published by now) is let go: a
        counter behind the watermarks (catching up, estimator.moving_through, or slow) still
        needs the buckets and records of the window ends it has not counted."""
        s = self.settings
        through = sealed_through(watermarks, s.partitions, s.grace_s * 1000, s.bucket_ms)
        if through is not None:
            through = None if complete is None else min(through, complete)
        await self.drop_old_buckets(through)
        if self.history is not None:
            await self.history.after_pass(through)

    async def drop_old_buckets(self, through: int | None) -> None:
        """Delete the keys of buckets no window can read any more: older than the longest window
        before the newest sealed bucket (every partition's watermark past it plus grace, so no
        event can reach them), and their point records. Their expiry would remove them too, but
        it runs on the wall clock (windows.expire_at_ms): a stream replayed or simulated faster
        than real time would keep up to an hour of wall time of buckets, sixty simulated hours
        at 60x. `through`: the newest sealed bucket (estimator.sealed_through), None while
        nothing is."""
        settings = self.settings
        if through is None:
            return
        horizon = through - max(settings.windows_s) // settings.bucket_s - 1
        first = horizon - DROP_AT_MOST_BUCKETS + 1
        if self._dropped_through is not None:
            first = max(first, self._dropped_through + 1)
        if self.history is not None:
            # Into their visitor days first, from wherever the last merge stopped.
            first = await self.history.merge_days(first, horizon)
        if first > horizon:
            return
        keys = [k for b in range(first, horizon + 1)
                for k in self.hll.keys.bucket_keys(self.areas.area_ids, self.areas.cell_ids.tolist(), b, STORED)]
        dropped = await self.hll.drop(keys)
        await self.hll.drop(self.stage.keys_of(range(first, horizon + 1)))
        self._dropped_through = horizon
        self.metrics.buckets_dropped.inc(dropped)

    def _observe(self, estimates: list[Estimate], stream_now: int, current_as_of: int) -> None:
        m = self.metrics
        m.windows_published.inc(len(estimates))
        m.stream_time.set(stream_now / 1000)
        delay = time.time() - stream_now / 1000
        live = wall_now_ms() - stream_now <= self.settings.grace_s * 1000
        if live and estimates and delay >= 0:
            # A replay (behind the wall clock by more than grace) or a stream ahead of it (a
            # simulation run flat out) says nothing about latency: only a live feed's is observed.
            m.estimate_delay.observe(delay)
        current = [e for e in estimates if e["as_of"] == current_as_of]
        if current:
            m.warming_up.set(int(any(e["warming_up"] for e in current)))
        self.last_publish_wall = time.time()
        for e in current:
            labels = (e["area"], str(e["window_s"]))
            people = e["people"]
            if e["suppressed"] or people is None:
                # A suppressed count must not linger on /metrics from an earlier, larger value.
                if self._gauges.pop(labels, None) is not None:
                    for gauge in (m.people, m.capacity_ratio):
                        try:
                            gauge.remove(*labels)
                        except KeyError:
                            pass
            else:
                # The labelled children are kept: prometheus_client's labels() validates and
                # locks on every call (16 us; 300,000 calls a pass at 100,000 areas).
                children = self._gauges.get(labels)
                if children is None:
                    children = self._gauges[labels] = (m.people.labels(*labels), m.capacity_ratio.labels(*labels))
                children[0].set(people)
                children[1].set(people / e["capacity"])


class EstimatorPass:
    """Both sides in one process: the counter of every shard, then the publisher. What the
    in-process tools and tests run (and a worker's pass is: `counter.run(owned)`, then, on the
    leader, `publisher.run()`)."""

    def __init__(self, settings: Settings, areas: AreaMap, hll: HllStore, published: EstimateStore, metrics: Metrics,
                 model: PeopleModel | None, history: HistoryWriter | None = None) -> None:
        stage = StageStore(hll.redis, hll.keys)
        self.counter = CountPass(settings, areas, hll, stage, metrics, model)
        self.publisher = PublishPass(settings, areas, hll, stage, published, metrics, model, history)

    @property
    def book(self) -> PointBook:
        return self.counter.book

    @property
    def sealed(self) -> SealedCounts:
        return self.counter.sealed

    @property
    def live(self) -> bool:
        return self.counter.live

    @property
    def last_publish_wall(self) -> float | None:
        return self.publisher.last_publish_wall

    async def run(self) -> list[Estimate]:
        await self.counter.run(range(self.counter.hll.shards))
        return await self.publisher.run()
