"""`crowdpulse calibrate --truth COUNTS --frames FILE`: fit and check the people model against a
deployment's own ground truth.

A real network never matches the simulator. What an operator does have is some counts of the
people truly present (turnstiles, gate counts, a manual count, a census of a closed site) and
the events of the same period (a frames file: `crowdpulse simulate --out` writes one, and a
recording of `crowd.events` in the same format is what a deployment keeps). This module:

1. reads the counts (CSV: `area,time,people`; time ISO 8601, UTC unless it says otherwise, or
   epoch milliseconds): the people present in the area at that moment;
2. replays the frames through calibrate's tracker, which counts each area's window curve per
   minute exactly as Redis does (streams/core/hll.py), and takes the curve of the
   window end at each count's minute (phones only; shadow records of a key rotation are left
   out, since a recording holds every event under its own key already);
3. checks the shipped model on those points (people, range, inside or not), and the model with
   the earlier half's counts added on the later half, which it has not seen (how a deployment
   uses it: last month's events calibrate this one's);
4. writes a table with all the counts added as rows (each row's error measured with its own
   area left out, as calibrate does for its own rows) and, per area, a correction for what
   those rows leave (each count against the table with the other counts added): the bias, or
   with `--blend` what the area's counts choose by what does best on the other half of the
   period (choose_correction), for `CROWDPULSE_VISIBILITY_MODEL`.

Counts less than an hour after the recording starts are skipped: the curve needs the hour.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streams.core.areas import AreaMap
from streams.core.clock import parse_time
from streams.core.errors import ConfigError
from streams.core.settings import Settings
from streams.core.wire import decode
from streams.estimate.estimator import PeopleModel, describe_correction, level
from streams.estimate.visibility import N5, N60, RECENT_MIN, VisibilityModel, curve_features, recent_log_share
from streams.tools.curves import BUCKET_MS, CurveTracker
from streams.tools.evaluate.score import NAIVE_WINDOWS_MIN, alarm_counts

if TYPE_CHECKING:
    from producers.edge import RawBatch

HOUR_BUCKETS = 60
#: Pseudo-counts of "no correction" the shift is shrunk towards (unless the counts choose it:
#: choose_correction).
SHRINK_COUNTS = 3
#: With --blend, the counts an area needs for its counts to choose its correction
#: (choose_correction: four in each half of the period, for the blend's two parameters).
MIN_CHOICE_COUNTS = 8
#: A correction must lower the mean error on the other half by more than this (MAPE) to be
#: chosen over a simpler one.
CHOICE_MARGIN = 0.01
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Lines of a raw events file parsed together (read_raw_events).
RAW_BATCH_LINES = 50_000
#: The key of the in-memory pseudonyms of a raw events file (read_raw_events).
OFFLINE_KEY = b"crowdpulse calibrate --truth --events: in memory only"


@dataclass(frozen=True)
class Count:
    """One ground-truth count: `people` present in `area` at `at_ms`."""

    area: str
    at_ms: int
    people: int
    line: int


def load_counts(path: Path, areas: AreaMap) -> list[Count]:
    """The counts file, checked line by line (a bad line is a ConfigError naming it)."""
    try:
        handle = open(path, newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read counts file {path}: {exc}") from None
    out: list[Count] = []
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"area", "time", "people"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: the header must name the columns area,time,people")
        for line, row in enumerate(reader, start=2):
            area, when, people = (row.get(k, "").strip() for k in ("area", "time", "people"))
            if area not in areas.area_by_id:
                raise ConfigError(f"{path}:{line}: unknown area {area!r} (not in the areas file {areas.name})")
            try:
                at_ms = int(when) if when.isdigit() else parse_time(when)
            except ConfigError:
                raise ConfigError(f"{path}:{line}: time {when!r} is neither ISO 8601 nor epoch milliseconds") from None
            if not people.isdigit() or int(people) <= 0:
                raise ConfigError(f"{path}:{line}: people must be a positive whole number, not {people!r}")
            out.append(Count(area, at_ms, int(people), line))
    if not out:
        raise ConfigError(f"{path}: no counts")
    return out


def read_events(path: Path) -> np.ndarray:
    """Every phone record of a frames file (or of a file of JSON messages in the same framing),
    shadow records of a key rotation left out, in event-time order."""
    from producers.publisher import read_frames_file

    parts = []
    for _, value in read_frames_file(path):
        decoded = decode(value, MAX_FRAME_BYTES)  # what the worker would reject is left out here too
        records = decoded.records[~decoded.shadow_mask()]
        parts.append(records[records["device_class"] == 0])
    if not parts:
        raise ConfigError(f"{path}: no events")
    events = np.concatenate(parts)
    return events[np.argsort(events["ts"], kind="stable")]


def read_raw_events(path: Path, areas: AreaMap, key: bytes = OFFLINE_KEY) -> tuple[np.ndarray, dict[str, int]]:
    """Every phone record of a file of raw events with subscriber identifiers (JSON lines, or
    CSV under a header: the format `crowdpulse publish` reads, producers/edge.py), in event-time
    order, M2M devices left out; and the lines refused, by reason (they are skipped, as publish
    skips them).

    Each identifier is replaced, in memory, by a keyed pseudonym (`key`, by default OFFLINE_KEY):
    the curves need only tell phones apart, and nothing of the events is kept or written. The key
    is fixed, so that the same file gives the same HyperLogLog counts and the same figures on
    every run (a random one moved the outside festival's MAPE by 0.1 point between two runs);
    with the edge's own key the pseudonyms are the ones `crowdpulse publish` sends. Rotation
    plays no part: a recording holds each phone under one identifier."""
    from producers.edge import csv_header, parse_lines
    from producers.pseudonyms import pseudonymise
    from streams.tools.publish import numbered_batches

    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read events file {path}: {exc.strerror}") from None
    parts: list[np.ndarray] = []
    identities: list[np.ndarray] = []
    refused: dict[str, int] = {}
    with handle:
        header = csv_header(handle.readline()) if path.suffix == ".csv" else None
        for batch in numbered_batches(handle, RAW_BATCH_LINES, first=1 if header is None else 2):
            _parse_raw(parse_lines(batch, areas, header), parts, identities, refused)
    if sum(len(p) for p in parts) == 0:
        raise ConfigError(f"{path}: no events")
    events = np.concatenate(parts)
    known, index = np.unique(np.concatenate(identities), return_inverse=True)
    events["device"] = pseudonymise(known, key)[index]
    return events[np.argsort(events["ts"], kind="stable")], refused


def _parse_raw(batch: RawBatch, parts: list[np.ndarray], identities: list[np.ndarray], refused: dict[str, int]) -> None:
    for _, reason in batch.rejected:
        refused[reason] = refused.get(reason, 0) + 1
    phones = batch.records["device_class"] == 0
    parts.append(batch.records[phones])
    identities.append(np.array(batch.identities, dtype=str)[phones])


def curves_from_events(events: np.ndarray, areas: AreaMap) -> tuple[int, np.ndarray]:
    """(first bucket, curves (buckets, areas, 8)): each area's window curve at the end of each
    minute of the recording, counted as Redis counts it."""
    devices, device_index = np.unique(events["device"], return_inverse=True)
    cell_index, known = areas.cell_index(events["cell"])
    first = int(events["ts"][0]) // BUCKET_MS
    last = int(events["ts"][-1]) // BUCKET_MS
    tracker = CurveTracker(areas, np.ones(len(devices), dtype=bool), first * BUCKET_MS,
                           members=np.ascontiguousarray(devices).view("<u8"))
    edges = np.searchsorted(events["ts"], (np.arange(first, last + 2) * BUCKET_MS))
    presence = np.zeros((len(areas.area_ids), 1))
    for i in range(last - first + 1):
        sl = slice(edges[i], edges[i + 1])
        ok = known[sl]
        tracker.add(device_index[sl][ok], events["ts"][sl][ok], cell_index[sl][ok])
        tracker.close(presence)
    return first, np.array(tracker.hll_curves)


def truth_rows(counts: list[Count], first: int, curves: np.ndarray, areas: AreaMap) -> tuple[list[Count], np.ndarray]:
    """The usable counts and, for each, every area's curve at the window end of its minute
    (count, area, 9). A count is usable with an hour of recording before its minute and at
    least one phone seen in its area in the hour."""
    used, at = [], []
    for c in counts:
        bucket = c.at_ms // BUCKET_MS - 1  # the window ending at the count's minute
        t = bucket - first
        if t < HOUR_BUCKETS or t >= len(curves):
            continue
        if curves[t, areas.area_ids.index(c.area), N60] < 1:
            continue
        used.append(c)
        at.append(t)
    return used, curves[np.array(at, dtype=np.int64)].astype(np.float64)


def _features(own: np.ndarray, reference: np.ndarray, network: np.ndarray, venue: np.ndarray) -> np.ndarray:
    return np.vstack([curve_features(own[i : i + 1], reference[i], network[i], venue[i]) for i in range(len(own))])


def area_corrections(area: np.ndarray, residual: np.ndarray, towards_recent: np.ndarray,
                     at: np.ndarray, blend: bool = False) -> dict[str, dict]:
    """Per area, the correction its counts choose (choose_correction): `residual` is each count's
    z less the table's estimate with the other counts added (residuals_with_rows),
    `towards_recent` the area's log(N(5) / N(60)) less that estimate, `at` the count's time. The
    worker applies it (estimator.corrected)."""
    return {str(name): choose_correction(residual[area == name], towards_recent[area == name], at[area == name], blend)
            for name in np.unique(area)}


def choose_correction(residual: np.ndarray, towards_recent: np.ndarray, at: np.ndarray, blend: bool = False) -> dict:
    """The correction a deployment's counts of one area give the model's estimate there.

    By default (and with fewer than `MIN_CHOICE_COUNTS` counts) a `shift`: the model's bias on
    the counts (their mean residual in log(people)), shrunk towards none by `SHRINK_COUNTS`
    pseudo-counts (a few counts say little, and a few small ones can say much that is wrong),
    its standard error in the range.

    With `blend` (`calibrate --truth --blend`) the counts choose, by what each choice does on
    counts of another time than those it was fitted on:

    - `none`: leave the estimate as it is;
    - `shift`: the model's bias on the counts (their plain mean: the choice is the check);
    - `blend`: lean the estimate towards the area's recent count
      (estimator.corrected): log(people) = (1 - weight) x the model's + weight x the 5-minute
      count's + a shift, the weight (0-1) and the shift fitted by least squares. Where the model
      reads this network's habits wrongly and the recent count does not (phones chattier than
      any calibrated network's: most present are seen within minutes), the counts measure how
      many of the phones present that count sees. But that share changes with what the crowd
      does (arriving idle, or phones in hand at a show), so a blend fitted on one kind of crowd
      can be far off on another its counts never covered: hence not by default
      (docs/estimation.md, "Calibrating on your own counts").

    The counts are split in two by time, each choice fitted on one half and scored on the other,
    both ways (a correction fitted on arrivals is then tested on what came after, as it will be
    used). The simplest choice within `CHOICE_MARGIN` of the lowest mean error wins (a blend
    that fits the noise of a steady bias is no better than the shift), and is then fitted on
    every count."""
    n = len(residual)
    se = (float(np.std(residual, ddof=1)) if n > 1 else float(abs(residual[0]))) / math.sqrt(n)
    if not blend or n < MIN_CHOICE_COUNTS:
        return {"kind": "shift", "dz": float(residual.sum() / (n + SHRINK_COUNTS)), "counts": n, "se": se}
    first = np.zeros(n, dtype=bool)
    first[np.argsort(at, kind="stable")[: n // 2]] = True
    kinds = ["none", "shift", "blend"]
    errors: dict[str, list[float]] = {k: [] for k in kinds}
    for fitted_on in (first, ~first):
        scored = ~fitted_on
        for kind in kinds:
            dz, weight = _fit(kind, residual[fitted_on], towards_recent[fitted_on])
            errors[kind].extend(residual[scored] - dz - weight * towards_recent[scored])
    mape = {k: float(np.mean(np.abs(np.expm1(np.asarray(e))))) for k, e in errors.items()}
    kind = next(k for k in kinds if mape[k] <= min(mape.values()) + CHOICE_MARGIN)
    cross_validated = {f"cv_mape_{k}": round(m, 4) for k, m in mape.items()}
    if kind == "none":
        return {"kind": "none", "dz": 0.0, "se": 0.0, "counts": n, **cross_validated}
    if kind == "shift":
        return {"kind": "shift", "dz": _fit("shift", residual, towards_recent)[0], "counts": n, "se": se, **cross_validated}
    dz, weight = _fit("blend", residual, towards_recent)
    return {"kind": "blend", "dz": dz, "weight": weight, "counts": n, "window_min": RECENT_MIN[N5],
            # The 90% error of the blend on the counts it was not fitted on.
            "half": float(np.quantile(np.abs(errors["blend"]), 0.90)), **cross_validated}


def _fit(kind: str, residual: np.ndarray, towards_recent: np.ndarray) -> tuple[float, float]:
    """(dz, weight) of a choice (choose_correction), fitted on these counts by least squares."""
    if kind == "none":
        return 0.0, 0.0
    if kind == "shift":
        return float(np.mean(residual)), 0.0
    x = np.stack([np.ones(len(residual)), towards_recent], axis=1)
    dz, weight = np.linalg.lstsq(x, residual, rcond=None)[0]
    if not 0.0 <= weight <= 1.0:  # at one end: the shift alone is then the mean
        weight = float(np.clip(weight, 0.0, 1.0))
        dz = float(np.mean(residual - weight * towards_recent))
    return float(dz), float(weight)


def _people(model: VisibilityModel, counts: list[Count], minute_curves: np.ndarray, areas: AreaMap,
            settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """People, low, high and level for each count, as the worker publishes them:
    PeopleModel.estimate on every area's curve at the count's minute, so that a count of an area
    in a division is scored on the reconciled estimate (estimator.reconcile), and an area's
    correction applies."""
    people = PeopleModel.for_areas(model, areas, settings.market_share, settings.sims_per_person, settings.scaling_se)
    out = np.zeros((3, len(counts)), dtype=np.int64)
    levels = []
    for i, (count, curves) in enumerate(zip(counts, minute_curves)):
        e = people.estimate(dict(zip(areas.area_ids, curves)), only={count.area})[count.area]
        out[:, i] = e.people, e.low, e.high
        levels.append(level(e, areas.area_by_id[count.area].capacity))
    return out[0], out[1], out[2], levels


def residuals_with_rows(model: VisibilityModel, features: np.ndarray, n60: np.ndarray, z: np.ndarray,
                        row_error: np.ndarray) -> np.ndarray:
    """Each count's z less the estimate of the table with every *other* count added: the bias
    the added rows leave. A correction is fitted on these, not on the shipped table's residuals:
    the added rows already pull the estimate towards their counts (most of the way, where the
    table fits locally), and a correction of the whole bias on top of them counted it twice (a
    unit test's stadium 30% above the model came out 24% over on the later counts)."""
    out = np.empty(len(z))
    for i in range(len(z)):
        others = np.arange(len(z)) != i
        table = with_rows(model, features[others], z[others], row_error[others]) if others.any() else model
        out[i] = z[i] - table.predict(features[i : i + 1], n60[i : i + 1])[0][0]
    return out


def with_rows(model: VisibilityModel, features: np.ndarray, z: np.ndarray, row_error: np.ndarray) -> VisibilityModel:
    """The table with these rows added (standardised like its own)."""
    table = model.standardised(features).astype(np.float32)
    errors = model.row_error if model.row_error is not None else np.zeros(len(model.z), dtype=np.float32)
    companion = None if model.companion is None else with_rows(model.companion, features, z, row_error)
    return replace(model, table=np.vstack([model.table, table]), z=np.concatenate([model.z, z]),
                   row_error=np.concatenate([errors, row_error.astype(np.float32)]), companion=companion)


def _score(people: int | np.ndarray, low: np.ndarray, high: np.ndarray, truth: np.ndarray) -> dict:
    p = np.asarray(people, dtype=np.float64)
    return {"points": int(len(truth)), "mape": float(np.mean(np.abs(p - truth) / truth)),
            "bias": float(np.mean((p - truth) / truth)), "coverage": float(np.mean((low <= truth) & (truth <= high)))}


def alarms(counts: list[Count], levels: list[str], areas: AreaMap) -> dict[str, int]:
    """The published level of each count's estimate (estimator.level) against its truth, scored
    as the evaluation and the robustness matrix score them (score.alarm_counts)."""
    return alarm_counts([c.people for c in counts], [areas.area_by_id[c.area].capacity for c in counts], levels)


def check(model: VisibilityModel, counts: list[Count], minute_curves: np.ndarray, areas: AreaMap,
          settings: Settings) -> dict:
    """The model as it is, on every count: error, range coverage and levels, in all and per area
    (no fitting: quick enough for a count of every area at every minute)."""
    return _checked(counts, *_people(model, counts, minute_curves, areas, settings), areas,
                    naive_people(counts, minute_curves, areas, settings))


def naive_people(counts: list[Count], minute_curves: np.ndarray, areas: AreaMap, settings: Settings) -> np.ndarray:
    """(counts, windows): each count's area's phones seen in each of NAIVE_WINDOWS_MIN, divided
    by its market share and the SIMs per person: what a fixed window alone would publish."""
    index = np.array([areas.area_ids.index(c.area) for c in counts])
    own = minute_curves[np.arange(len(counts)), index]
    share = np.array([areas.area_by_id[c.area].market_share or settings.market_share for c in counts])
    columns = [RECENT_MIN.index(w) for w in NAIVE_WINDOWS_MIN]
    return own[:, columns] / (share * settings.sims_per_person)[:, None]


def _checked(counts: list[Count], people: np.ndarray, low: np.ndarray, high: np.ndarray, levels: list[str],
             areas: AreaMap, naive: np.ndarray) -> dict:
    """Error, ranges and levels on every count, in all and per area, with each fixed window's
    error on the same counts beside them."""
    truth = np.array([c.people for c in counts], dtype=np.float64)
    area = np.array([c.area for c in counts])

    def naive_mape(m: np.ndarray) -> dict[str, float]:
        return {f"{w}min": float(np.mean(np.abs(naive[m, j] - truth[m]) / truth[m])) for j, w in enumerate(NAIVE_WINDOWS_MIN)}

    everything = np.ones(len(counts), dtype=bool)
    return {
        **_score(people, low, high, truth),
        "naive_mape": naive_mape(everything),
        "alarms": alarms(counts, levels, areas),
        "by_area": {str(name): {**_score(people[m], low[m], high[m], truth[m]), "naive_mape": naive_mape(m)}
                    for name in np.unique(area) for m in [area == name]},
    }


def fit_and_check(model: VisibilityModel, counts: list[Count], minute_curves: np.ndarray, areas: AreaMap,
                  settings: Settings, blend: bool = False) -> tuple[VisibilityModel, dict]:
    """Check the model on the counts (truth_rows: every area's curve at each count's minute),
    before and after; the table with every count added.

    "After" is measured the way a deployment would use it: the table with the counts of the
    earlier half of the period (by time) added, checked on the later half, which it has not
    seen. Each added row's own error (what the ranges are made of) is measured with its area
    left out, as calibrate does for its own rows. Each count is scored on the estimate the
    worker would publish (_people)."""
    index = np.array([areas.area_ids.index(c.area) for c in counts])
    own = minute_curves[np.arange(len(counts)), index]
    reference = minute_curves[:, areas.area_ids.index(areas.reference)]
    share = np.array([areas.area_by_id[c.area].market_share or settings.market_share for c in counts])
    truth = np.array([c.people for c in counts], dtype=np.float64)
    z = np.log(truth * share * settings.sims_per_person / own[:, N60])
    area = np.array([c.area for c in counts])
    features = _features(own, reference, area == areas.network_area, np.isin(area, sorted(areas.venues)))
    at = np.array([c.at_ms for c in counts])
    before = _people(model, counts, minute_curves, areas, settings)
    row_error = np.zeros(len(counts))
    for name in np.unique(area):
        mine = area == name
        others = with_rows(model, features[~mine], z[~mine], np.zeros(int((~mine).sum()))) if (~mine).any() else model
        z_hat, _ = others.predict(features[mine], own[mine, N60])
        row_error[mine] = np.abs(z[mine] - z_hat)
    later = at > np.median(at)
    earlier = ~later
    n60 = own[:, N60]
    # Each count's area's 5-minute count against its hour (the blend's reading: choose_correction).
    recent = recent_log_share(own)
    if later.any() and earlier.any():
        fitted_early = with_rows(model, features[earlier], z[earlier], row_error[earlier])
        residual = residuals_with_rows(model, features[earlier], n60[earlier], z[earlier], row_error[earlier])
        corrections = area_corrections(area[earlier], residual, recent[earlier] - (z[earlier] - residual), at[earlier], blend)
        fitted_early = replace(fitted_early, meta={**model.meta, "area_corrections": corrections})
        after = _people(fitted_early, [c for c, late in zip(counts, later) if late], minute_curves[later], areas, settings)
        checked = {
            "points": int(later.sum()),
            "before": _score(before[0][later], before[1][later], before[2][later], truth[later]),
            "after": _score(after[0], after[1], after[2], truth[later]),
            "by_area": {
                name: {"before": _score(before[0][later][m], before[1][later][m], before[2][later][m], truth[later][m]),
                       "after": _score(after[0][m], after[1][m], after[2][m], truth[later][m])}
                for name in np.unique(area[later]) for m in [area[later] == name]
            },
        }
    else:
        checked = {"points": 0}
    fitted = with_rows(model, features, z, row_error)
    residual = residuals_with_rows(model, features, n60, z, row_error)
    corrections = area_corrections(area, residual, recent - (z - residual), at, blend)
    fitted = replace(fitted, meta={**model.meta, "deployment_counts": len(counts), "area_corrections": corrections})
    summary = {
        "counts_used": len(counts),
        "before": _checked(counts, *before, areas, naive_people(counts, minute_curves, areas, settings)),
        "later_half": checked,
        "rows": int(len(fitted.z)),
        "area_corrections": corrections,
    }
    return fitted, summary


def run_truth(counts_path: Path, recording: Path, out: Path | None, as_json: bool, settings: Settings, areas: AreaMap,
              raw: bool = False, check_only: bool = False, min_people: int = 0, blend: bool = False) -> int:
    """The command (module notes). `recording`: a frames file, or with `raw` a file of raw
    events (read_raw_events); `check_only`: score the model on the counts and fit nothing;
    `min_people`: leave out counts of fewer people (the robustness matrix scores points of at
    least 200); `blend`: an area's counts may choose the blend (choose_correction)."""
    counts = [c for c in load_counts(counts_path, areas) if c.people >= min_people]
    if not counts:
        raise ConfigError(f"{counts_path}: no count of at least {min_people} people")
    refused: dict[str, int] = {}
    if raw:
        events, refused = read_raw_events(recording, areas)
    else:
        events = read_events(recording)
    first, curves = curves_from_events(events, areas)
    used, minute_curves = truth_rows(counts, first, curves, areas)
    if not used:
        raise ConfigError(f"{counts_path}: no count falls at least an hour into the recording {recording} "
                          f"(it covers {len(curves)} minutes from {first * BUCKET_MS} ms)")
    model = VisibilityModel.load(settings.visibility_model_path)
    if check_only:
        summary: dict = {"counts_used": len(used), "before": check(model, used, minute_curves, areas, settings)}
    else:
        fitted, summary = fit_and_check(model, used, minute_curves, areas, settings, blend)
    summary["counts_skipped"] = len(counts) - len(used)
    summary["events"] = int(len(events))
    if raw:
        summary["refused_lines"] = refused
    if out is not None and not check_only:
        fitted.save(out)
        summary["out"] = str(out)
    if as_json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"crowdpulse calibrate --truth: {len(used)} counts used ({summary['counts_skipped']} skipped: less than an hour "
          f"of recording before them, or no phone seen in their area in that hour), {len(events):,} phone events")
    if refused:
        print(f"  {sum(refused.values()):,} lines of {recording} refused and skipped: "
              + "; ".join(f"{n:,} {reason}" for reason, n in refused.items()))
    b = summary["before"]
    a = b["alarms"]
    print(f"  the model as shipped, on every count: MAPE {100 * b['mape']:.1f}% (bias {100 * b['bias']:+.1f}%), "
          f"90% range holds {100 * b['coverage']:.1f}%")
    print("    beside it, a fixed window's phones / (share x SIMs): " + ", ".join(
        f"{w} MAPE {100 * m:.1f}%" for w, m in b["naive_mape"].items()))
    print(f"    levels: {a['false_critical']} critical while under 80% of capacity, {a['missed_critical']} of "
          f"{a['truly_critical']} at or over 95% called ok or warn, {a['uncertain']} uncertain")
    for name, s in b["by_area"].items():
        print(f"    {name:<16} {s['points']:>5} counts: MAPE {100 * s['mape']:5.1f}% (bias {100 * s['bias']:+6.1f}%), "
              f"holds {100 * s['coverage']:5.1f}%; fixed windows {', '.join(f'{100 * m:.0f}%' for m in s['naive_mape'].values())}")
    if check_only:
        return 0
    half = summary["later_half"]
    if half["points"]:
        hb, ha = half["before"], half["after"]
        print(f"  the later half ({half['points']} counts), as shipped: MAPE {100 * hb['mape']:.1f}%, holds "
              f"{100 * hb['coverage']:.1f}%; with the earlier half's counts added: MAPE {100 * ha['mape']:.1f}%, holds "
              f"{100 * ha['coverage']:.1f}%")
        for name, s in half["by_area"].items():
            print(f"    {name:<16} {s['before']['points']:>4} counts: {100 * s['before']['mape']:5.1f}% -> {100 * s['after']['mape']:5.1f}%")
    chosen = any("cv_mape_none" in c for c in summary["area_corrections"].values())
    print("  per-area corrections (log people, from every count" + (
        "; each choice's MAPE on counts of the other half of the period):" if chosen else "):"))
    for name, c in summary["area_corrections"].items():
        print(f"    {name:<16} {describe_correction(c)}")
    if out is not None:
        print(f"  wrote {out} ({summary['rows']:,} rows); use it with CROWDPULSE_VISIBILITY_MODEL={out}")
    return 0
