"""From window distinct counts to published estimates: people and their range, privacy
suppression and the capacity level. Pure: the Faust timer in streams/runtime/app.py does the I/O.

`devices` is each window's distinct count of the operator's phones (HyperLogLog: 2^14
registers, a standard error of 1.04 / sqrt(16384) = 0.81%). `people` is the estimate of
everyone present at the window end, customers of other operators included (docs/estimation.md):
the visibility model (streams/estimate/visibility.py) turns the area's window curve into phones present,
the market share and SIMs per person turn phones into people, and the range combines the
model's, HyperLogLog's and the scaling's errors. The estimates of an area and of the parts that
divide it are then made to agree (reconcile). With people_model "devices" (the naive model),
people = the window's devices and the range is HyperLogLog's alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypedDict, cast

import numpy as np

from streams.core.areas import Area, AreaMap
from streams.core.segments import BANDS, PUBLISHED, RESIDENTS, STORED
from streams.core.windows import Span
from streams.estimate.privacy import AnyItem, DiscreteLaplace, Item, containment_pairs, noisy_release, segment_pairs, suppressed_items
from streams.estimate.visibility import (
    CURVE_SPANS_S,
    N60,
    VisibilityModel,
    count_bounds,
    curve_features,
    log_half_width,
    people_from,
    recent_log_share,
)

HLL_STANDARD_ERROR = 1.04 / math.sqrt(16384)
DAY_MS = 86_400_000
# Two-sided 90% range of a normal error: +-1.645 standard errors.
Z_90 = 1.6449
WARN_SHARE = 0.80
CRITICAL_SHARE = 0.95
#: A range wider than this (high / low) that spans ok to critical leaves the level `uncertain`.
UNCERTAIN_RATIO = 2.0


@dataclass(frozen=True)
class EstimateRange:
    people: int
    low: int
    high: int
    #: The area's estimate from its own counts, before its division was reconciled (reconcile);
    #: None for an area in no reconciled division. The level says `uncertain` when the two
    #: disagree about whether the area is critical (level).
    own: int | None = None
    #: The area's people by each of the table's two estimators alone, before they are weighed
    #: (VisibilityModel.predict_readings: the local fit's, the companion's); () when not known.
    #: The level says `uncertain` when they disagree about whether the area is critical.
    readings: tuple[int, ...] = ()


def hll_range(devices: int, z: float = Z_90) -> EstimateRange:
    """The 90% range of a HyperLogLog count (relative error ~ N(0, 0.81%))."""
    spread = z * HLL_STANDARD_ERROR * devices
    return EstimateRange(devices, max(0, math.floor(devices - spread)), math.ceil(devices + spread))


def corrected(z: np.ndarray, half: np.ndarray, alone: np.ndarray, recent: np.ndarray,
              corrections: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z, 90% half-width and each estimator's z (alone) of each area, corrected as a deployment's
    own counts chose for it (`crowdpulse calibrate --truth`: calibrate_truth.choose_correction;
    {} for an area they do not cover):

    - `dz`: a shift of log(people), the model's bias there, with the standard error `se` of
      that bias added to the range;
    - with a `weight` w, the estimate leans towards the area's recent count: z becomes
      (1 - w) z + w log(N(5) / N(60)) + dz (`recent`: that log ratio), the 5-minute count
      scaled by how many of the phones present the counts say it sees. Its range is the
      model's, weighed by 1 - w, and `half`, the 90% error that reading had on counts it was
      not fitted on, together."""
    dz = np.array([c.get("dz", 0.0) for c in corrections])
    weight = np.array([c.get("weight", 0.0) for c in corrections])
    own_half = np.array([c.get("half", Z_90 * c.get("se", 0.0)) for c in corrections])
    z = (1 - weight) * z + weight * recent + dz
    alone = (1 - weight[:, None]) * alone + (weight * recent + dz)[:, None]
    return z, np.hypot((1 - weight) * half, own_half), alone


def describe_correction(c: dict) -> str:
    """One area's correction (corrected; calibrate_truth.choose_correction) in words. Tables
    written before the choice carry a shift without its kind."""
    kind = c.get("kind", "shift")
    if kind == "none":
        what = "none"
    elif kind == "shift":
        what = f"shift {c['dz']:+.3f} (se {c['se']:.3f})"
    else:
        what = (f"blend: {c['weight']:.2f} of the {c['window_min']}-minute count, shift {c['dz']:+.3f}, "
                f"90% error {c['half']:.3f}")
    tried = [f"{k} {100 * c[f'cv_mape_{k}']:.1f}%" for k in ("none", "shift", "blend") if f"cv_mape_{k}" in c]
    return f"{what} ({c['counts']} counts" + (f"; {', '.join(tried)}" if tried else "") + ")"


def reconcile(whole: EstimateRange, parts: list[EstimateRange]) -> tuple[EstimateRange, list[EstimateRange]]:
    """Make the estimates of an area and of the parts that divide it agree: the people in the
    parts add up to the whole's.

    Each estimate takes a share of their disagreement in proportion to its own variance
    (weighted least squares under the sum constraint, in people: a range of x1.1 barely moves, a
    range of x3 takes most of it), read from its 90% range as a log-normal error. Each estimate
    stays inside its own range: that range is what its own counts allow, and where the parts'
    ranges cannot meet the whole's, the sum is left short rather than an estimate moved past
    what its counts say. The ranges are not changed; each estimate keeps its own figure (`own`)
    for the level. Why: a district the crowd walks home
    through reads, from its own counts, like a stadium in play (docs/operations.md, "Levels");
    the whole city and the other district say how many people it can hold."""
    members = [whole, *parts]
    people = np.array([e.people for e in members], dtype=np.float64)
    sd = people * np.log(np.array([max(e.high, 1) / max(e.low, 1) for e in members])) / (2 * Z_90)
    variance = sd**2
    total = variance.sum()
    if total <= 0:
        return whole, list(parts)
    gap = people[0] - people[1:].sum()
    moved = people + np.concatenate([[-1.0], np.ones(len(parts))]) * gap * variance / total
    out = [replace(e, people=int(np.clip(round(m), e.low, e.high)), own=e.people) for m, e in zip(moved, members)]
    return out[0], out[1:]


def area_shares(areas: AreaMap, default_share: float) -> dict[str, float]:
    """Each area's market share: its own from the areas file, else the deployment's."""
    return {a.id: a.market_share or default_share for a in areas.areas}


@dataclass(frozen=True)
class PeopleModel:
    """Phones present from the visibility model, then people by market share and SIMs."""

    visibility: VisibilityModel
    #: The area every curve is compared with (AreaMap.reference: the whole network).
    reference: str
    share: dict[str, float]
    sims_per_person: float
    scaling_se: float = 0.0
    #: The area whose curve is the network's own (AreaMap.network_area: curve_features' `network`
    #: flag); None for a venue as its own reference.
    network_area: str | None = None
    #: Areas divided into parts (AreaMap.divisions): their estimates are made to agree (reconcile).
    divisions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Areas of kind venue (AreaMap.venues: curve_features' `venue` flag).
    venues: frozenset[str] = frozenset()

    @classmethod
    def for_areas(cls, visibility: VisibilityModel, areas: AreaMap, default_share: float, sims: float,
                  scaling_se: float = 0.0) -> PeopleModel:
        """The model of an areas file. The area that covers the whole network is read as the
        network even if its kind is venue (a festival site with nothing around it): no
        calibrated network is a venue, and the two flags together put it off the table's map
        (venue_network; the worker warns)."""
        share = area_shares(areas, default_share)
        return cls(visibility, areas.reference, share, sims, scaling_se, areas.network_area, tuple(areas.divisions),
                   areas.venues - {venue_network(areas)})

    def estimate(self, curves: dict[str, np.ndarray], only: set[str] | None = None) -> dict[str, EstimateRange]:
        """People and 90% range per area (of `only`, or all), from the curves of one window end
        (which must include the reference area's; without it nothing can be said and nothing is
        returned). An area of a division whose every member's curve is there is estimated with
        them and reconciled; one whose division is incomplete, alone."""
        if self.reference not in curves:
            return {}
        wanted = set(curves if only is None else only & curves.keys())
        if not wanted:
            return {}
        whole_divisions = [(w, parts) for w, parts in self.divisions
                           if all(a in curves for a in (w, *parts)) and wanted & {w, *parts}]
        ids = sorted(wanted.union(*({w, *parts} for w, parts in whole_divisions)))
        estimates = self._estimate(curves, ids)
        for whole, parts in whole_divisions:
            estimates[whole], reconciled = reconcile(estimates[whole], [estimates[p] for p in parts])
            estimates.update(zip(parts, reconciled))
        return {a: estimates[a] for a in sorted(wanted)}

    def divided_with(self, areas: Iterable[str]) -> set[str]:
        """Every member of the divisions any of `areas` is in (the ones of `areas` included)."""
        areas = set(areas)
        return {a for whole, parts in self.divisions if areas & {whole, *parts} for a in (whole, *parts)}

    def _estimate(self, curves: dict[str, np.ndarray], ids: list[str]) -> dict[str, EstimateRange]:
        """Each area's own estimate, from its curve and the reference's."""
        matrix = np.array([curves[a] for a in ids], dtype=np.float64)
        network = np.array([a == self.network_area for a in ids])
        venue = np.array([a in self.venues for a in ids])
        z, half, alone = self.visibility.predict_readings(curve_features(matrix, curves[self.reference], network, venue),
                                                          matrix[:, N60])
        # A deployment's own counts (`crowdpulse calibrate --truth`) correct each area they cover
        # as they chose: by the model's bias there, or leaning towards the area's recent count.
        corrections = self.visibility.meta.get("area_corrections") or {}
        if corrections:
            z, half, alone = corrected(z, half, alone, recent_log_share(matrix), [corrections.get(a, {}) for a in ids])
        # A table calibrated on HyperLogLog counts (meta "counts": "hll", streams/tools/calibrate.py)
        # already holds HyperLogLog's error in its ranges; for one calibrated on exact counts
        # it enters here, through N(60), the scale of the estimate.
        hll_se = 0.0 if self.visibility.meta.get("counts") == "hll" else HLL_STANDARD_ERROR
        half = log_half_width(half, hll_se, self.scaling_se, Z_90)
        share = np.array([self.share[a] for a in ids])
        # No bound the counts themselves make impossible (docs/estimation.md, "Honest ranges").
        bounds = count_bounds(matrix, HLL_STANDARD_ERROR, Z_90)
        people, low, high = people_from(matrix[:, N60], z, half, share, self.sims_per_person, bounds, Z_90 * self.scaling_se)
        # Each estimator's reading, inside the same count bounds.
        readings = np.stack([people_from(matrix[:, N60], alone[:, j], half, share, self.sims_per_person, bounds,
                                         Z_90 * self.scaling_se)[0] for j in range(alone.shape[1])], axis=1)
        return {a: EstimateRange(int(p), max(0, int(lo)), int(hi), readings=tuple(int(r) for r in rs))
                for a, p, lo, hi, rs in zip(ids, people, low, high, readings)}


def venue_network(areas: AreaMap) -> str | None:
    """The area that covers the whole network and is of kind venue, or None (PeopleModel.for_areas).

    Measured on the outside festival (tests/outside; docs/estimation.md, "An outside corpus"),
    whose site is both: read as a network and a venue, the site's MAPE was 23.0% (bias -16.4%)
    and the festival's 32.5%; as the network alone, 15.3% (-1.7%) and 29.8%."""
    network = areas.network_area
    return network if network is not None and network in areas.venues else None


def level(people: EstimateRange, capacity: int) -> str:
    """The capacity level: what is likely decides, not the far end of the range.

    `critical` when the estimate is at or above 95% of capacity, `warn` at or above 80%, else
    `ok`; but `uncertain` (level_reason says why) rather than a guess either way:
    - when the 90% range reaches the critical line from under the warn line and is wider than
      x`UNCERTAIN_RATIO`: the counts cannot tell a three-quarters-full area from a full one,
      whichever side the estimate falls;
    - when the readings of the area's counts disagree about whether it is critical (one at or
      over 95%, another under): its own and its division's (reconcile: the whole and its parts
      add up), or the table's two estimators' (EstimateRange.readings).
    (docs/operations.md, "Levels".)"""
    share = people.people / capacity
    if is_uncertain(people, capacity) or readings_disagree(people, capacity):
        return "uncertain"
    if share >= CRITICAL_SHARE:
        return "critical"
    if share >= WARN_SHARE:
        return "warn"
    return "ok"


def is_uncertain(people: EstimateRange, capacity: int) -> bool:
    """Is the range too wide to decide between ok and critical? (level)"""
    return (people.high >= CRITICAL_SHARE * capacity and people.low < WARN_SHARE * capacity
            and people.high > UNCERTAIN_RATIO * max(people.low, 1))


def readings_disagree(people: EstimateRange, capacity: int) -> bool:
    """Do the readings of the area's counts disagree about whether it is critical? (level)

    Its own counts and its division's: the division moves an area towards what the areas
    around it read, which is right on average and wrong when they are the ones misread. In the
    robustness matrix's chatty network the whole city read 15-42% high as the match's visitors
    left the network, and the division passed that on to the districts: 10 false criticals, 5
    of them where the district's own counts did not say critical (docs/estimation-history.md,
    "Studies after the venue flag").

    The table's two estimators (the local fit and the mean of the nearest rows): they read the
    same counts against different neighbours, and where one says critical and the other does not,
    the weighed answer between them is a guess (docs/estimation-history.md, "When the table's
    two estimators disagree")."""
    return _disagreeing_reading(people, capacity) is not None


def _disagreeing_reading(people: EstimateRange, capacity: int) -> tuple[str, int] | None:
    """The first reading on the other side of the critical line from the estimate, and what it is."""
    line = CRITICAL_SHARE * capacity
    critical = people.people >= line
    candidates = ([("own", people.own)] if people.own is not None else []) + [("estimator", r) for r in people.readings]
    return next(((kind, r) for kind, r in candidates if (r >= line) != critical), None)


def level_reason(people: EstimateRange, capacity: int) -> str:
    """Why an estimate's level is `uncertain`, in words an operations room can act on."""
    if is_uncertain(people, capacity):
        return (f"90% range {people.low:,}-{people.high:,} spans {round(100 * people.low / capacity)}%-"
                f"{round(100 * people.high / capacity)}% of capacity: too wide to tell ok from critical")
    kind, reading = _disagreeing_reading(people, capacity) or ("own", people.people)
    if kind == "own":
        return (f"its own counts read {reading:,} ({round(100 * reading / capacity)}% of capacity), with the areas it adds up "
                f"with {people.people:,} ({round(100 * people.people / capacity)}%): they disagree whether it is critical")
    return (f"two readings of its counts disagree whether it is critical: {reading:,} ({round(100 * reading / capacity)}% "
            f"of capacity) against {people.people:,} ({round(100 * people.people / capacity)}%)")


def points_to_refresh(
    area_ids: list[str],
    dirty: set[tuple[str, int]],
    published_through: int | None,
    newest: int,
    window_buckets: int,
    max_catchup: int,
) -> tuple[list[tuple[str, int]], int]:
    """Which (area, newest bucket) window points to (re)compute, and how many were skipped.

    - Every bucket that stream time entered since the last pass gets a point for every area,
      so an accelerated replay yields the same per-minute series as a live run (at most
      `max_catchup` buckets back; older ones are skipped and counted).
    - A bucket that received events (dirty) changes every window that contains it: the points
      from that bucket up to `window_buckets - 1` later, as far as stream time has reached.
      That is how late events within grace republish the windows they belong to.
    """
    oldest_allowed = newest - max_catchup + 1
    first_new = newest if published_through is None else published_through + 1
    skipped = max(0, oldest_allowed - first_new)
    points = {(a, b) for b in range(max(first_new, oldest_allowed), newest + 1) for a in area_ids}
    for area, bucket in dirty:
        last = min(newest, bucket + window_buckets - 1)
        points.update((area, b) for b in range(max(bucket, oldest_allowed), last + 1))
    return sorted(points, key=lambda p: (p[1], p[0])), skipped


def sealed_through(watermarks: dict[int, int | None], partitions: int, grace_ms: int, bucket_ms: int) -> int | None:
    """The newest bucket no event can enter any more, or None.

    Ingest takes an event from a partition only if it is no older than that partition's
    watermark - grace (streams/pipeline/ingest.py), and a watermark never goes back. So once every
    partition's watermark (as applied in Redis: a batch still being written was planned against
    a watermark at least as high) is past a bucket's end by the grace, the bucket is final. A
    partition without a watermark yet could still bring anything: then nothing is sealed."""
    marks = [watermarks.get(p) for p in range(partitions)]
    if not marks or any(m is None for m in marks):
        return None
    return (min(marks) - grace_ms) // bucket_ms - 1  # type: ignore[type-var, operator]


def moving_through(watermarks: dict[int, int | None], moving: Iterable[int], bucket_ms: int) -> int | None:
    """Catching up (a replay or a backlog): the newest window end every moving partition's
    watermark has left behind, or None when no partition moves.

    Consumers read partitions unevenly (one of the example city's replays had a partition 41
    minutes of event time behind the others): a window end ahead of the slowest partition
    still fills, and counting it on every pass until that partition passes it counts the same
    points again and again (most of a two-worker replay's Redis work). A partition that stopped
    moving (caught up, or never written to) holds nothing back: if it wakes up behind, what
    its events change is counted again as far as it had been counted (CountPass never counts
    fewer window ends than it did), as any late event's."""
    marks = [mark for p in moving if (mark := watermarks.get(p)) is not None]
    if not marks:
        return None
    return min(marks) // bucket_ms - 1


def backlogged(highwaters: dict[int, tuple[int, int]], applied: dict[int, int], now_ms: int, fresh_ms: int) -> set[int]:
    """The partitions with messages in their log not yet applied, by their owners' recorded log
    ends (highwaters: partition -> (log end, recorded at wall ms); applied: partition -> newest
    applied offset). Such a partition still moves while catching up, even when its watermark
    has stood still for a while: its worker is busy elsewhere (a long counting pass on two
    cores), not done, and counting past it would count the same window ends again when it
    resumes (a 12,000,000-event two-worker replay counted 8,410 points where one worker counted
    3,504). A record older than `fresh_ms` (its worker gone, say) says nothing."""
    return {
        p for p, (end, at) in highwaters.items()
        if now_ms - at <= fresh_ms and end - applied.get(p, -1) - 1 > 0
    }


class PartitionMotion:
    """Which partitions' watermarks moved lately (wall clock), for moving_through: a partition
    that has not moved for `idle_s` is treated as caught up. A partition without a watermark
    counts as moving for `idle_s` from when it was first found without one: a replay's first
    passes come before the consumers have read from every partition, and whatever such a
    partition brings could change every window end counted so far."""

    def __init__(self, idle_s: float, partitions: int) -> None:
        self.idle_s = idle_s
        self.partitions = partitions
        # partition -> (watermark or None, when it last changed or was first found without one)
        self._seen: dict[int, tuple[int | None, float]] = {}

    def moving(self, watermarks: dict[int, int | None], now_s: float) -> set[int]:
        for partition in range(self.partitions):
            mark = watermarks.get(partition)
            if partition not in self._seen or self._seen[partition][0] != mark:
                self._seen[partition] = (mark, now_s)
        return {p for p, (_, changed) in self._seen.items() if now_s - changed <= self.idle_s}

    def unread(self, watermarks: dict[int, int | None], moving: set[int]) -> set[int]:
        """The moving partitions without a watermark: nothing is behind them yet."""
        return {p for p in moving if watermarks.get(p) is None}


def ahead_share(remaining: int, stream_now_ms: int, newest: int, bucket_ms: int, interval_s: float) -> int:
    """How many of the `remaining` areas a live pass counts the next window end's sealed spans
    for: spread evenly over the passes left before stream time reaches it (at one pass per
    `interval_s`), keeping the last of them free, so the pass that opens the minute finds them
    all counted. At least one, and never more than remain."""
    left_s = ((newest + 1) * bucket_ms - stream_now_ms) / 1000
    passes = max(1, int(left_s // interval_s) - 1)
    return min(remaining, max(1, -(-remaining // passes)))


class SealedCounts:
    """Counts of spans whose buckets are all sealed (sealed_through): they can never change, so
    each is counted once and kept. The visibility model's older spans (the hour older than 5, 15
    and 30 minutes: 130 of an area's 241 bucket-key merges with the three windows) are sealed a
    few minutes after they begin, and a live estimator re-counts every area's current window end
    on every pass: they would otherwise be merged again each time.

    Pure bookkeeping; a count comes from Redis (HllStore.count_spans) like any other, so an
    estimate is the same with or without it."""

    def __init__(self, bucket_s: int) -> None:
        self.bucket_s = bucket_s
        self.by_bucket: dict[int, dict[tuple[str, Span], int]] = {}  # window end -> (area, span) -> count
        self.through: int | None = None  # the newest sealed bucket when counts were last kept

    def sealed(self, bucket: int, span: Span, through: int | None) -> bool:
        """Are all of the span's buckets (it ends `span.skip_s` before window end `bucket`) sealed?"""
        return through is not None and bucket - span.skip_s // self.bucket_s <= through

    def split(self, points: list[tuple[str, int]], spans: list[Span]) -> tuple[dict, list[tuple[tuple[str, int], list[Span]]]]:
        """The counts already kept for these points' spans, and per point the spans to count."""
        known: dict[tuple[str, int, Span], int] = {}
        todo: list[tuple[tuple[str, int], list[Span]]] = []
        for area, bucket in points:
            kept = self.by_bucket.get(bucket, {})
            missing = []
            for span in spans:
                count = kept.get((area, span))
                if count is None:
                    missing.append(span)
                else:
                    known[(area, bucket, span)] = count
            if missing:
                todo.append(((area, bucket), missing))
        return known, todo

    def missing(self, points: list[tuple[str, int]], spans: list[Span], through: int | None) -> list[tuple[tuple[str, int], list[Span]]]:
        """Per point, its sealed spans not kept yet (to count ahead of need)."""
        out = []
        for area, bucket in points:
            kept = self.by_bucket.get(bucket, {})
            wanted = [s for s in spans if self.sealed(bucket, s, through) and (area, s) not in kept]
            if wanted:
                out.append(((area, bucket), wanted))
        return out

    def invalidate(self, dirty: Iterable[tuple[str, int]]) -> int:
        """Forget the kept counts of spans over a bucket that received events after it was
        sealed: it cannot happen in a stream (sealed means past grace), only when Redis lost its
        data and the windows are being rebuilt from Kafka (streams/pipeline/rebuild.py), when the
        counts kept meanwhile were partial. Returns how many were forgotten."""
        if self.through is None:
            return 0
        changed: dict[str, list[int]] = {}
        for area, bucket in dirty:
            if bucket <= self.through:
                changed.setdefault(area, []).append(bucket)
        if not changed:
            return 0
        dropped = 0
        for end, kept in self.by_bucket.items():
            for area, span in [k for k in kept if k[0] in changed]:
                last = end - span.skip_s // self.bucket_s
                first = last - span.length_s // self.bucket_s + 1
                if any(first <= b <= last for b in changed[area]):
                    del kept[(area, span)]
                    dropped += 1
        return dropped

    def keep(self, counts: dict[tuple[str, int, Span], int], through: int | None) -> None:
        """Keep the new counts of sealed spans."""
        if through is not None:
            self.through = through if self.through is None else max(self.through, through)
        for (area, bucket, span), n in counts.items():
            if self.sealed(bucket, span, through):
                self.by_bucket.setdefault(bucket, {})[(area, span)] = n

    def forget(self, before_bucket: int) -> None:
        """Drop the counts of window ends older than `before_bucket`."""
        for bucket in [b for b in self.by_bucket if b < before_bucket]:
            del self.by_bucket[bucket]


#: A count in the window book: (area, window_s) for a total, (area, window_s, segment) for a segment.
BookKey = AnyItem

class SegmentEstimate(TypedDict):
    """One subscriber segment's share of a published estimate."""

    devices: int
    people: int


class _EstimateExtras(TypedDict, total=False):
    segments: dict[str, SegmentEstimate | None] | None  # only with segments configured
    suppressed_reason: str  # why it is withheld: "below_min_count", "differencing" or "privacy_budget"
    noise: str  # the differential-privacy mechanism that noised it ("discrete-laplace")
    level_reason: str  # why the level is "uncertain"


class Estimate(_EstimateExtras):
    """The published estimate of one area and window, as every channel carries it (Kafka
    crowd.occupancy, /api/areas, SSE, the Redis snapshot): docs/estimation.md. A suppressed
    estimate has every count None."""

    area: str
    window_s: int
    as_of: int  # epoch ms of the window end (exclusive)
    devices: int | None
    people: int | None
    people_low: int | None
    people_high: int | None
    suppressed: bool
    capacity: int
    level: str  # "ok" | "warn" | "critical" | "uncertain"
    warming_up: bool


def build_estimate(
    area: Area, window_s: int, as_of_ms: int, devices: int, min_count: int, suppressed: bool = False,
    people: EstimateRange | None = None, segments: dict[str, int | None] | None = None,
    warming_up: bool = False,
) -> Estimate:
    """The published JSON estimate (Estimate; docs/estimation.md). Below min_count, or when the privacy
    rule withholds it (streams/estimate/privacy.py), every count is null. `people`: the model's estimate
    (None: the naive model, people = devices with HyperLogLog's range). `segments`: each
    segment's device count, None where the privacy rule withholds it; published with its share
    of the people estimate. `warming_up`: the stream behind it is shorter than what the
    estimate needs (WindowBook.warming_up); always present, so a consumer can rely on it."""
    if suppressed or devices < min_count:
        # Why it is withheld: its own count is under the threshold, or a difference between it
        # and a count that contains it (or that it contains) would be (streams/estimate/privacy.py).
        reason = "below_min_count" if devices < min_count else "differencing"
        withheld: Estimate = {
            "area": area.id,
            "window_s": window_s,
            "as_of": as_of_ms,
            "devices": None,
            "people": None,
            "people_low": None,
            "people_high": None,
            "suppressed": True,
            "capacity": area.capacity,
            "level": "ok",
            "warming_up": warming_up,
            "suppressed_reason": reason,
        }
        if segments is not None:
            withheld["segments"] = None
        return withheld
    estimate = people if people is not None else hll_range(devices)
    published: Estimate = {
        "area": area.id,
        "window_s": window_s,
        "as_of": as_of_ms,
        "devices": devices,
        "people": estimate.people,
        "people_low": estimate.low,
        "people_high": estimate.high,
        "suppressed": False,
        "capacity": area.capacity,
        "level": level(estimate, area.capacity),
        "warming_up": warming_up,
    }
    if published["level"] == "uncertain":
        published["level_reason"] = level_reason(estimate, area.capacity)
    if segments is not None:
        published["segments"] = {
            name: None if count is None else {
                "devices": count, "people": round(estimate.people * count / devices) if devices else 0,
            }
            for name, count in segments.items()
        }
    return published


def segment_counts(totals: dict[int, int], stored: dict[tuple[int, str], int]) -> dict[tuple[int, str], int]:
    """Published segment counts per (window, segment) from the stored HyperLogLogs: residents
    and the bands as counted (never above the total), visitors = total - residents."""
    out: dict[tuple[int, str], int] = {}
    for window, total in totals.items():
        residents = min(stored.get((window, RESIDENTS), 0), total)
        out[(window, "residents")] = residents
        out[(window, "visitors")] = total - residents
        for name in BANDS.values():
            out[(window, name)] = min(stored.get((window, name), 0), total)
    return out


@dataclass(frozen=True)
class PointRecord:
    """One area's counts at one window end as its counter hands them to the publisher: each
    window's devices (and segments' devices), keyed as in the window book, and the people range
    (None with the naive model, or before the reference's curve is known). The counter is
    whichever worker owns the area (streams/pipeline/estimator_pass.py); the publisher applies
    the privacy rule over every area's records of a window end at once."""

    counts: dict[BookKey, int]
    people: EstimateRange | None

    def encode(self) -> bytes:
        p = self.people
        body: dict = {"c": [[key[1], key[2] if len(key) == 3 else "", n] for key, n in sorted(self.counts.items())],
                      "p": None if p is None else [p.people, p.low, p.high] + ([] if p.own is None else [p.own])}
        if p is not None and p.readings:
            body["r"] = list(p.readings)  # a key of its own: a record without it reads as before
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, area: str, raw: bytes | str) -> PointRecord:
        body = json.loads(raw)
        counts: dict[BookKey, int] = {((area, int(w), seg) if seg else (area, int(w))): int(n) for w, seg, n in body["c"]}
        p = body["p"]
        readings = tuple(int(r) for r in body.get("r", ()))
        return cls(counts, None if p is None else EstimateRange(int(p[0]), int(p[1]), int(p[2]), int(p[3]) if len(p) > 3 else None,
                                                               readings))


class PointBook:
    """The counting side of the estimator: span counts of the points a worker owns, turned into
    each point's window counts and people range (PointRecord).

    An area's people estimate is a function of its own curve and the reference area's of the
    same window end, and, for an area of a division (AreaMap.divisions), of the curves of the
    division's other members. So a point is re-estimated when its counts come in, every area of
    its division with it, and every area of a window end when the reference's do (an area
    estimated against a reference still filling is re-estimated once the reference is complete,
    whatever the order the partitions came in). Each counter counts the reference and the other
    members of its areas' divisions itself (it need not own them).

    The newest window end is still filling (stream time is inside its last minute): its curve
    is short in the newest minute by however much of the minute has passed, a shape no
    situation of the table has, and the estimate would swing with machine load. Until the
    minute is over, its people are those of the previous window end, complete or nearly; once
    the minute is over, its own curve decides: it is estimated again from the counts it has,
    whether or not new ones come in. (A feed that delivers each minute whole, as an accelerated
    replay can, sends nothing more for a minute once stream time is in it; when only new counts
    re-estimated a window end, such a minute kept the copy for good, and each next minute copied
    it: a demo's every estimate stood still at its first for two hours.)"""

    def __init__(self, areas: AreaMap, windows_s: tuple[int, ...], keep_buckets: int,
                 people: PeopleModel | None = None, segments: bool = False) -> None:
        self.areas = areas
        self.windows_s = windows_s
        self.keep_buckets = keep_buckets
        self.people = people
        self.segments = segments
        # Per window end: area -> its window (and segment) counts; area -> curve; area -> people.
        self.counts: dict[int, dict[str, dict[BookKey, int]]] = {}
        self.curves: dict[int, dict[str, np.ndarray]] = {}
        self.people_of: dict[int, dict[str, EstimateRange]] = {}
        # Per window end estimated while it was filling: the areas whose people are the previous
        # window end's, to estimate from their own curve once it no longer is.
        self.held: dict[int, set[str]] = {}

    @property
    def spans(self) -> list[Span]:
        """The spans (skip_s, length_s) to count per point: the published windows, and the
        visibility model's curve."""
        spans: list[Span] = [Span.window(w) for w in self.windows_s]
        if self.people is not None:
            spans += [span for span in CURVE_SPANS_S if span not in spans]
        if self.segments:
            spans += [Span.window(w, name) for w in self.windows_s for name in STORED]
        return spans

    def _is_window(self, span: Span) -> bool:
        """A published window's total (skip 0, one of the windows, no segment)."""
        return not span.segment and span.skip_s == 0 and span.length_s in self.windows_s

    def needed(self, points: list[tuple[str, int]], owned: Iterable[str]) -> list[tuple[str, int]]:
        """The points to count: the given ones, every owned area of their window ends that the
        book has no counts of (a new window end, or areas just taken over), and the reference
        where its curve is not known."""
        owned = set(owned)
        out: list[tuple[str, int]] = []
        by_bucket: dict[int, set[str]] = {}
        for area, bucket in points:
            by_bucket.setdefault(bucket, set()).add(area)
        for bucket in sorted(by_bucket):
            areas = by_bucket[bucket] | (owned - self.counts.get(bucket, {}).keys())
            if self.people is not None:
                known = self.curves.get(bucket, {})
                # The reference, and the other members of the divisions of the areas counted
                # (their estimates are reconciled together), where their curves are not known.
                areas |= {a for a in self.people.divided_with(areas) if a not in known}
                if self.people.reference not in known:
                    areas.add(self.people.reference)
            out.extend((area, bucket) for area in sorted(areas))
        return out

    def forget_areas(self, keep: Iterable[str]) -> None:
        """Drop what the book holds of areas not in `keep` (given away to another worker): if
        they come back, they are counted afresh. The reference's curves stay, and those of the
        divisions the kept areas are in."""
        keep = set(keep)
        if self.people is not None:
            keep |= self.people.divided_with(keep) | {self.people.reference}
        for counts in self.counts.values():
            for area in [a for a in counts if a not in keep]:
                del counts[area]
        for curves in self.curves.values():
            for area in [a for a in curves if a not in keep]:
                del curves[area]
        for people in self.people_of.values():
            for area in [a for a in people if a not in keep]:
                del people[area]
        for held in self.held.values():
            held &= keep

    def _people_at(self, bucket: int, filling: int | None, came_in: set[str]) -> tuple[dict[str, EstimateRange], set[str]]:
        """The people estimates of one window end, re-estimating what its new counts change
        (class notes); and the areas re-estimated."""
        assert self.people is not None
        people = self.people_of.setdefault(bucket, {})
        curves = self.curves.get(bucket, {})
        todo = set(curves) if self.people.reference in came_in else (came_in | self.people.divided_with(came_in)) & curves.keys()
        if bucket != filling:  # the minute is over: what was held is estimated from its own curve
            held = self.held.pop(bucket, set())
            todo |= (held | self.people.divided_with(held)) & curves.keys()
        redone = set(todo)
        previous = self.people_of.get(bucket - 1, {})
        if bucket == filling and previous:
            copied = {a for a in todo if a in previous}
            people.update({a: previous[a] for a in copied})
            self.held.setdefault(bucket, set()).update(copied)
            todo -= copied
        people.update(self.people.estimate(curves, todo))
        return people, redone

    def update(self, counts: dict[tuple[str, int, Span], int], newest: int,
               filling: int | None) -> dict[tuple[str, int], PointRecord]:
        """Merge new span counts (area, bucket, span); return the record of every point whose
        counts came in or whose people were re-estimated. `newest`: the newest window end the
        pass counts; `filling`: the one stream time is in (`newest` on a live feed, None when a
        catching-up pass counts only window ends every partition left behind, moving_through)."""
        fresh: dict[tuple[str, int], dict[Span, int]] = {}
        for (area, bucket, span), devices in counts.items():
            if self._is_window(span):
                self.counts.setdefault(bucket, {}).setdefault(area, {})[(area, span.length_s)] = devices
            fresh.setdefault((area, bucket), {})[span] = devices
        if self.segments:
            for (area, bucket), spans in fresh.items():
                totals = {span.length_s: n for span, n in spans.items() if self._is_window(span)}
                stored = {(span.length_s, span.segment): n for span, n in spans.items() if span.segment}
                book = self.counts.setdefault(bucket, {}).setdefault(area, {})
                for (window, name), n in segment_counts(totals, stored).items():
                    book[(area, window, name)] = n
        if self.people is not None:
            for (area, bucket), spans in fresh.items():
                if all(span in spans for span in CURVE_SPANS_S):
                    self.curves.setdefault(bucket, {})[area] = np.array([spans[span] for span in CURVE_SPANS_S])
        records: dict[tuple[str, int], PointRecord] = {}
        # Window ends whose counts came in, and those held while filling that no longer are
        # (estimated here, they leave `held`: only the one filling stays in it).
        released = {b for b in self.held if filling is None or b < filling}
        for bucket in sorted({b for _, b in fresh} | released):
            came_in = {a for a, b in fresh if b == bucket}
            people: dict[str, EstimateRange] = {}
            redone: set[str] = set()
            if self.people is not None:
                people, redone = self._people_at(bucket, filling, came_in)
            by_area = self.counts.get(bucket, {})
            for area in sorted((came_in | redone) & by_area.keys()):
                records[(area, bucket)] = PointRecord(dict(by_area[area]), people.get(area))
        for bucket in [b for b in self.counts if b <= newest - self.keep_buckets]:
            del self.counts[bucket]
            self.curves.pop(bucket, None)
            self.people_of.pop(bucket, None)
        return records


class WindowBook:
    """The publishing side of the estimator: the records of recent window ends (each area's
    window counts and people, PointBook), the privacy rule over them, and the estimates.

    A pass republishes only the points that changed, yet the privacy rule must see every area of
    a window end at once (a neighbour's change can withhold or release an unchanged area). The
    book keeps each recent window end's records, applies the rule over all of them, and returns
    only the estimates whose published form changed. It forgets window ends older than
    `keep_buckets`.

    Warming up: a window is only as full as the stream behind it. After a cold start (or a
    silence longer than the span) the first hour's curves are truncated, which the visibility
    model has never seen, and the windows grow as they fill, which is no crowd arriving. The
    caller says, per window end, from which bucket the whole network has data (`data_from`,
    HllStore.data_since over `history_s`); an estimate with less behind it than it needs is
    marked `warming_up` (and the alert engine computes no trend from it).

    `update` runs both sides in one process (a PointBook of every area): the estimator as one
    piece, for tests and offline tools.
    """

    def __init__(self, areas: AreaMap, windows_s: tuple[int, ...], min_count: int, bucket_ms: int, keep_buckets: int,
                 people: PeopleModel | None = None, segments: bool = False) -> None:
        self.areas = areas
        self.windows_s = windows_s
        self.min_count = min_count
        self.bucket_ms = bucket_ms
        self.keep_buckets = keep_buckets
        self.people = people
        self.segments = segments
        self.points = PointBook(areas, windows_s, keep_buckets, people, segments)
        area_cells = {a.id: a.cells for a in areas.areas}
        self.pairs: list[tuple[BookKey, BookKey]] = list(containment_pairs(area_cells, windows_s))
        if segments:
            self.pairs += segment_pairs(area_cells, windows_s, PUBLISHED, nested=("residents", *BANDS.values()))
        # Per window end: (area, window) -> devices, and (area, window, segment) -> devices.
        self.counts: dict[int, dict[BookKey, int]] = {}
        self.people_of: dict[int, dict[str, EstimateRange]] = {}
        self.published: dict[int, dict[Item, Estimate]] = {}
        self.data_from: dict[int, int | None] = {}

    @property
    def history_area(self) -> str:
        """The area whose data tells how far back the stream reaches: the whole network."""
        return self.people.reference if self.people is not None else self.areas.reference

    @property
    def history_s(self) -> int:
        """The stream an estimate needs behind it: the visibility model reads the last hour's
        curve for every window; the naive model, the window alone (the longest of them)."""
        if self.people is not None:
            return max(span.skip_s + span.length_s for span in CURVE_SPANS_S)
        return max(self.windows_s)

    def warming_up(self, bucket: int, window_s: int) -> bool:
        """Is the stream behind this window end shorter than the estimate needs? Unknown
        (no `data_from` given for it) is not warming up."""
        if bucket not in self.data_from:
            return False
        first = self.data_from[bucket]
        needs_s = self.history_s if self.people is not None else window_s
        return first is None or (bucket - first + 1) * self.bucket_ms < needs_s * 1000

    @property
    def spans(self) -> list[Span]:
        return self.points.spans

    @property
    def curves(self) -> dict[int, dict[str, np.ndarray]]:
        return self.points.curves

    def needed(self, points: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The points to count in one process: the given ones, plus every area of a window end
        not in the book."""
        return self.points.needed(points, self.areas.area_ids)

    def update(self, counts: dict[tuple[str, int, Span], int], newest: int,
               data_from: dict[int, int | None] | None = None) -> list[Estimate]:
        """Both sides in one process: new span counts (area, bucket, span) to the estimates to
        publish (new or changed), oldest first."""
        return self.update_records(self.points.update(counts, newest, newest), newest, data_from)

    def update_records(self, records: dict[tuple[str, int], PointRecord], newest: int,
                       data_from: dict[int, int | None] | None = None) -> list[Estimate]:
        """Merge new point records; return the estimates to publish (new or changed), oldest
        first. `data_from`: per window end, the oldest bucket of the last `history_s` with data
        of `history_area` (see the class notes)."""
        self.data_from.update(data_from or {})
        touched: set[int] = set()
        for (area, bucket), record in records.items():
            self.counts.setdefault(bucket, {}).update(record.counts)
            people = self.people_of.setdefault(bucket, {})
            if record.people is None:
                people.pop(area, None)
            else:
                people[area] = record.people
            touched.add(bucket)
        changed: list[Estimate] = []
        for bucket in sorted(touched):
            book = self.counts[bucket]
            withheld = suppressed_items(book, self.pairs, self.min_count)
            people = self.people_of.get(bucket, {}) if self.people is not None else {}
            before = self.published.setdefault(bucket, {})
            as_of = (bucket + 1) * self.bucket_ms
            for item, devices in sorted(book.items()):
                if len(item) != 2:
                    continue  # a segment: published inside its total's estimate
                area, window = item
                segments = None
                if self.segments:
                    segments = {
                        name: None if (area, window, name) in withheld else book.get((area, window, name))
                        for name in PUBLISHED
                    }
                estimate = build_estimate(
                    self.areas.area_by_id[area], window, as_of, devices, self.min_count, (area, window) in withheld,
                    people.get(area), segments, self.warming_up(bucket, window),
                )
                if before.get((area, window)) != estimate:
                    before[(area, window)] = estimate
                    changed.append(estimate)
        for bucket in [b for b in self.counts if b <= newest - self.keep_buckets]:
            del self.counts[bucket]
            self.people_of.pop(bucket, None)
            self.published.pop(bucket, None)
        for bucket in [b for b in self.data_from if b <= newest - self.keep_buckets]:
            del self.data_from[bucket]
        return changed


def private_releases(
    estimates: list[Estimate],
    mechanism: DiscreteLaplace,
    spent: dict[tuple[str, int], float],
    daily_budget: float,
) -> tuple[list[Estimate], dict[tuple[str, int], float]]:
    """Differential privacy at publication, with a per-area daily epsilon budget.

    Each release of a (changed) point costs `mechanism.epsilon` from its area's budget for the
    stream-time day of its window end; `spent` is what was already spent. A release that would
    overspend is withheld instead (suppressed, reason privacy_budget). Returns the releases and
    the new charges to record.
    """
    charges: dict[tuple[str, int], float] = {}
    out: list[Estimate] = []
    for estimate in estimates:
        if estimate["suppressed"]:
            out.append(estimate)
            continue
        if estimate.get("segments") is not None:
            # Each segment would need noise and budget of its own: with DP on, none is released.
            estimate = {**estimate, "segments": None}
        key = (estimate["area"], estimate["as_of"] // DAY_MS)
        total = spent.get(key, 0.0) + charges.get(key, 0.0)
        if total + mechanism.epsilon > daily_budget + 1e-9:
            withheld: Estimate = {**estimate, "devices": None, "people": None, "people_low": None, "people_high": None,
                                  "suppressed": True, "level": "ok", "suppressed_reason": "privacy_budget"}
            out.append(withheld)
            continue
        charges[key] = charges.get(key, 0.0) + mechanism.epsilon
        noisy = noisy_release(estimate, mechanism)
        # The level from the released figures alone (post-processing keeps the guarantee): the
        # area's own reading before its division (EstimateRange.own) and the estimators' own
        # readings are not released, so they play no part here.
        noisy_range = EstimateRange(noisy["people"], noisy["people_low"], noisy["people_high"])
        noisy["level"] = level(noisy_range, noisy["capacity"])
        noisy.pop("level_reason", None)
        if noisy["level"] == "uncertain":
            noisy["level_reason"] = level_reason(noisy_range, noisy["capacity"])
        out.append(cast(Estimate, noisy))
    return out, charges
