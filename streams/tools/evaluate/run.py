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

Two checks of the privacy machinery ride on the same run (docs/privacy.md):
- rotation (`rotation_check`): the run crosses a pseudonym-key rotation (by default at its
  middle, `--rotate-at` to choose), and the HyperLogLog error of the points whose window spans
  it is reported apart from the others, with the largest minute-to-minute change of the
  city-wide count across the rotation and elsewhere: a double count would show as +100%;
- differential privacy (`--dp EPSILON`, `evaluate_dp`): the run is made twice, without and
  with noise (same seed, same events), and `dp_cost` sets the noisy error beside HLL's alone.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from streams.core.areas import load_areas
from streams.core.rotation import Rotation
from streams.estimate.privacy import DiscreteLaplace
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.core.errors import ConfigError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
WEEK_MS = 7 * 86_400_000
NAIVE_WINDOW_S = 900
#: `--dp` without CROWDPULSE_DP_DAILY_BUDGET: the budget allows this many releases of every
#: point (area, window, minute) of a day.
DP_RELEASES_PER_POINT = 2


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
    #: When the pseudonym key rotates, in seconds after 00:00 UTC of stream time (the schedule's
    #: offset; period and overlap come from CROWDPULSE_ROTATION_*). None: at the middle of the
    #: run, so that every evaluation crosses a rotation.
    rotate_at_s: int | None = None
    #: Differential privacy: epsilon per release (None: off). See `evaluate_dp`.
    dp_epsilon: float | None = None


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
        raise ConfigError(f"window {window_s}s is not one of the published windows {windows}")
    rows: list[dict] = []
    hll_all: list[float] = []
    pooled: dict[str, list] = {"ape": [], "signed": [], "inside": [], "naive": []}
    # Points marked warming_up (the stream behind them shorter than the estimate needs) are
    # scored apart: the headline is the steady state; the warm-up is reported next to it.
    warming: dict[str, list] = {"ape": [], "signed": [], "inside": []}
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
                if est.get("warming_up"):
                    if w == window_s:
                        warming["ape"].append(abs(est["people"] - people) / people)
                        warming["signed"].append((est["people"] - people) / people)
                        warming["inside"].append(est["people_low"] <= people <= est["people_high"])
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
    # The naive model's lag, side by side: its people are the 15-minute window's devices.
    naive_estimates = {key: {**e, "people": e["devices"]} for key, e in estimates.items() if key[1] == NAIVE_WINDOW_S}
    naive_lags = surge_lags(truth, naive_estimates, focus, NAIVE_WINDOW_S, episodes or [])
    naive_lag_values = [e["lag_min"] for e in naive_lags if e["lag_min"] is not None]
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
        "naive_surge_lag_min": float(np.mean(naive_lag_values)) if naive_lag_values else None,
        "naive_surge_episodes": naive_lags,
        "range_coverage": _mean(pooled["inside"]),
        "warming_minutes": len(warming["ape"]),
        "warming_mape": _mean(warming["ape"]),
        "warming_bias": _mean(warming["signed"]),
        "warming_coverage": _mean(warming["inside"]),
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


# --- rotation and differential-privacy checks (pure) ------------------------------------------

def evaluation_rotation(rotation: Rotation, start_ms: int, end_ms: int, rotate_at_s: int | None, bucket_s: int) -> Rotation:
    """The schedule of an evaluation run: the configured period and overlap, rotating at
    `rotate_at_s` (the offset) or, when None, at the middle of the run rounded down to a whole
    bucket. A schedule that is off (period 0) stays off."""
    if not rotation.enabled:
        return rotation
    if rotate_at_s is None:
        middle_s = (start_ms + end_ms) // 2 // 1000
        rotate_at_s = middle_s % rotation.period_s // bucket_s * bucket_s
    return Rotation(rotation.period_s, rotate_at_s, rotation.overlap_s)


def rotations_between(rotation: Rotation, start_ms: int, end_ms: int) -> list[int]:
    """Rotation instants (epoch ms) strictly inside (start_ms, end_ms)."""
    if not rotation.enabled:
        return []
    first, last = int(rotation.epoch(start_ms)) + 1, int(rotation.epoch(end_ms - 1))
    return [rotation.boundary_ms(e) for e in range(first, last + 1) if start_ms < rotation.boundary_ms(e) < end_ms]


def spans_rotation(as_of_ms: np.ndarray, window_s: int, rotation: Rotation) -> np.ndarray:
    """Per window end: does the window [as_of - W, as_of) hold buckets of two key epochs, i.e.
    lie across a rotation? (A window that starts at the rotation, or ends at it, does not.)"""
    as_of = np.asarray(as_of_ms, dtype=np.int64)
    return np.asarray(rotation.epoch(as_of - window_s * 1000)) != np.asarray(rotation.epoch(as_of - 1))


def max_minute_change(values: np.ndarray, selected: np.ndarray) -> float | None:
    """The largest |v[t] - v[t-1]| / v[t-1] over the changes into the points t where `selected`;
    changes from or to a missing value (NaN) or from 0 are left out. None if there is none."""
    values = np.asarray(values, dtype=float)
    previous, current = values[:-1], values[1:]
    usable = np.asarray(selected, dtype=bool)[1:] & np.isfinite(previous) & np.isfinite(current) & (previous > 0)
    if not usable.any():
        return None
    return float(np.max(np.abs(current[usable] - previous[usable]) / previous[usable]))


def rotation_check(
    truth: Any,
    estimates: Mapping[tuple[str, int, int], dict],
    rotation: Rotation,
    city: str,
    start_ms: int,
    min_count: int = 15,
) -> dict:
    """Distinct counts across a pseudonym-key rotation against the other points.

    - HyperLogLog relative error of published `devices` against the exact distinct counts
      (truth.distinct), over every area and window, for the points whose window spans a rotation
      (`rotation_*`) and for the others (`other_*`); same filter as `score` (published, at least
      `min_count` exact devices). Counting every device twice across a rotation shows as +100%.
    - Per window, the largest minute-to-minute relative change of `city`'s published devices
      into a point whose window, or its predecessor's, spans a rotation (`rotation_max_change`:
      the entry into and the exit from the spanning windows) and into any other point; only
      between windows wholly inside the run (from `start_ms`: the first ones fill from nothing);
      the exact distinct counts' largest changes in the same minutes beside them (`exact_*`).
    """
    windows = list(truth.windows_s)
    errors: dict[bool, list[float]] = {True: [], False: []}
    jumps: list[dict] = []
    for i, w in enumerate(windows):
        spans = spans_rotation(truth.as_of, w, rotation)
        for a, area in enumerate(truth.area_ids):
            for t, as_of in enumerate(truth.as_of.tolist()):
                est = estimates.get((area, w, as_of))
                exact = int(truth.distinct[t, a, i])
                if est is None or est["suppressed"] or exact < min_count:
                    continue
                errors[bool(spans[t])].append((est["devices"] - exact) / exact)
        if city in truth.area_ids:
            series = np.array([_devices(estimates.get((city, w, int(t)))) for t in truth.as_of])
            exact_series = truth.distinct[:, truth.area_ids.index(city), i]
            near = spans.copy()
            near[1:] |= spans[:-1]  # the change into the first point after the spanning ones too
            inside = truth.as_of - w * 1000 >= start_ms
            full = inside & np.r_[False, inside[:-1]]  # the change from a full window too
            jumps.append({"window_s": w, "rotation_max_change": max_minute_change(series, near & full),
                          "other_max_change": max_minute_change(series, ~near & full),
                          "exact_rotation_max_change": max_minute_change(exact_series, near & full),
                          "exact_other_max_change": max_minute_change(exact_series, ~near & full)})
    rotation_err, other_err = np.array(errors[True]), np.array(errors[False])

    def worst(key: str) -> float | None:
        values = [j[key] for j in jumps if j[key] is not None]
        return max(values) if values else None

    return {
        "rotation_points": len(rotation_err),
        "rotation_hll_p50_rel_error": _q(np.abs(rotation_err), 50),
        "rotation_hll_p95_rel_error": _q(np.abs(rotation_err), 95),
        "rotation_hll_max_rel_error": float(np.abs(rotation_err).max()) if len(rotation_err) else None,
        "rotation_hll_bias": float(rotation_err.mean()) if len(rotation_err) else None,
        "other_points": len(other_err),
        "other_hll_p95_rel_error": _q(np.abs(other_err), 95),
        "other_hll_bias": float(other_err.mean()) if len(other_err) else None,
        "rotation_jump_area": city,
        "rotation_max_minute_change": worst("rotation_max_change"),
        "other_max_minute_change": worst("other_max_change"),
        "rotation_jumps": jumps,
    }


def dp_cost(
    truth: Any,
    noisy: Mapping[tuple[str, int, int], dict],
    plain: Mapping[tuple[str, int, int], dict],
    min_count: int = 15,
    large: int = 1000,
) -> dict:
    """The accuracy cost of differential privacy: the relative error of published `devices`
    against the exact distinct counts with noise (`noisy`) and without it (`plain`: the same
    run without noise, HyperLogLog alone), over the points published in both with at least
    `min_count` exact devices, and over those with at least `large` (the noise is absolute, so
    small counts bear most of it); and the points whose last message withheld them for the budget."""
    noisy_err: list[float] = []
    plain_err: list[float] = []
    exact_counts: list[int] = []
    withheld = 0
    for a, area in enumerate(truth.area_ids):
        for i, w in enumerate(truth.windows_s):
            for t, as_of in enumerate(truth.as_of.tolist()):
                with_noise, without = noisy.get((area, w, as_of)), plain.get((area, w, as_of))
                if with_noise is not None and with_noise.get("suppressed_reason") == "privacy_budget":
                    withheld += 1
                exact = int(truth.distinct[t, a, i])
                if with_noise is None or without is None or with_noise["suppressed"] or without["suppressed"] or exact < min_count:
                    continue
                noisy_err.append(abs(with_noise["devices"] - exact) / exact)
                plain_err.append(abs(without["devices"] - exact) / exact)
                exact_counts.append(exact)
    noisy_all, plain_all = np.array(noisy_err), np.array(plain_err)
    big = np.array(exact_counts) >= large
    return {
        "points": len(noisy_all),
        "dp_p50_rel_error": _q(noisy_all, 50),
        "dp_p95_rel_error": _q(noisy_all, 95),
        "hll_p50_rel_error": _q(plain_all, 50),
        "hll_p95_rel_error": _q(plain_all, 95),
        "large": large,
        "large_points": int(big.sum()),
        "large_dp_p50_rel_error": _q(noisy_all[big], 50),
        "large_dp_p95_rel_error": _q(noisy_all[big], 95),
        "large_hll_p95_rel_error": _q(plain_all[big], 95),
        "withheld_points": withheld,
    }


def _devices(est: dict | None) -> float:
    return float("nan") if est is None or est["suppressed"] else float(est["devices"])


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
        f"  occupancy is scored where >= {s['min_people']:,} people are truly present and the window lies inside the run;",
        "  estimates marked warming_up (less stream behind them than they need) are scored apart",
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
        f"warming up (not in the figures above): {s['warming_minutes']} scored minutes, occupancy_mape "
        f"{_pct(s['warming_mape'])} (bias {_pct(s['warming_bias'], True)}), range_coverage {_pct(s['warming_coverage'])}",
    ]
    if s["surge_episodes"]:
        parts = ", ".join(
            f"{e['episode']} {e['lag_min']:+.0f} min" if e["lag_min"] is not None else f"{e['episode']} n/a"
            for e in s["surge_episodes"]
        )
        lag = s["surge_lag_min"]
        naive = s.get("naive_surge_lag_min")
        lines.append(f"surge lag ({s['surge_area']}, 50% crossings): {parts} -> surge_lag_min "
                     f"{'n/a' if lag is None else f'{lag:+.1f}'} (naive model: {'n/a' if naive is None else f'{naive:+.1f}'})")
    lines += rotation_lines(s) + dp_lines(s)
    lines.append(f"plots and report: {s['out_dir']}")
    return "\n".join(lines)


def rotation_lines(report: dict) -> list[str]:
    """The rotation check of the table (report keys from `rotation_check`)."""
    s = report
    if not s.get("rotation_at"):
        return ["rotation: the run crosses no pseudonym-key rotation (CROWDPULSE_ROTATION_PERIOD_S=0?)"]
    lines = [
        f"rotation at {', '.join(s['rotation_at'])} (overlap {s['rotation_overlap_s'] // 60} min): "
        f"{s['rotation_points']} points span it, hll p95 {_pct(s['rotation_hll_p95_rel_error'])} "
        f"(max {_pct(s['rotation_hll_max_rel_error'])}, bias {_pct(s['rotation_hll_bias'], True)}) vs "
        f"{_pct(s['other_hll_p95_rel_error'])} over the other {s['other_points']} (bias {_pct(s['other_hll_bias'], True)}); "
        "a double count would be up to +100%",
    ]
    parts = ", ".join(f"{j['window_s']}s {_pct(j['rotation_max_change'])} vs {_pct(j['other_max_change'])} "
                      f"(exact {_pct(j['exact_rotation_max_change'])} vs {_pct(j['exact_other_max_change'])})"
                      for j in s["rotation_jumps"])
    lines.append(f"  largest minute-to-minute change of {s['rotation_jump_area']} devices, across the rotation vs elsewhere: {parts}")
    return lines


def dp_lines(report: dict) -> list[str]:
    """The differential-privacy cost of the table (`--dp`; report["dp"])."""
    dp = report.get("dp")
    if not dp:
        return []
    return [
        f"differential privacy: epsilon {dp['epsilon']:g} per release, sensitivity {dp['sensitivity']}, daily budget "
        f"{dp['daily_budget']:g} per area ({dp['budget_note']}); noise within +-{dp['noise_90']} devices 9 times in 10",
        f"  devices vs exact distinct over {dp['points']} points: with noise p50 {_pct(dp['dp_p50_rel_error'])} "
        f"p95 {_pct(dp['dp_p95_rel_error'])}; the same run without noise (HLL alone) p50 {_pct(dp['hll_p50_rel_error'])} "
        f"p95 {_pct(dp['hll_p95_rel_error'])}",
        f"  the {dp['large_points']} points with >= {dp['large']:,} exact devices: with noise p50 {_pct(dp['large_dp_p50_rel_error'])} "
        f"p95 {_pct(dp['large_dp_p95_rel_error'])}; without noise p95 {_pct(dp['large_hll_p95_rel_error'])}",
        f"  releases: {dp['released_messages']:,} noisy, {dp['withheld_messages']:,} withheld for budget; points whose "
        f"last message is withheld for budget: {dp['withheld_points']}",
    ]


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

    def __call__(self, now_ms: int) -> None:
        due = self.wall_start + (now_ms - self.start_ms) / 1000 / self.pace
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if now_ms - (self.estimator_ms or self.start_ms) <= self.max_ahead_ms:
            return
        stalled_since = time.monotonic()
        while True:
            if time.monotonic() - self.last_poll >= 0.25:
                self.last_poll = time.monotonic()
                seconds = _metric(self.base_url, "crowdpulse_stream_time_seconds")
                self.estimator_ms = int(seconds * 1000) if seconds else None
            if now_ms - (self.estimator_ms or self.start_ms) <= self.max_ahead_ms:
                return
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {self.worker.poll()}")
            if time.monotonic() - stalled_since > 180:
                raise RuntimeError("the worker's estimator made no progress for 180 s")
            time.sleep(0.05)


def _ingest(base_url: str) -> dict:
    from streams.tools.harness import http_json

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
        #: Differential privacy: noisy releases, and releases withheld for the budget.
        self.noisy = 0
        self.budget_withheld = 0

    def poll(self, timeout_ms: int = 500) -> int:
        got = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=50_000).values():
            for message in records:
                body = json.loads(message.value)
                self.points[(body["area"], int(body["window_s"]), int(body["as_of"]))] = body
                got += 1
                self.noisy += int("noise" in body)
                self.budget_withheld += int(body.get("suppressed_reason") == "privacy_budget")
        self.messages += got
        return got

    def close(self) -> None:
        self.consumer.close()


def evaluate(
    options: EvalOptions,
    environ: Mapping[str, str] | None = None,
    published: dict | None = None,
    baseline: Mapping[tuple[str, int, int], dict] | None = None,
) -> dict:
    """Run the scenario through the pipeline and score it; returns the report (also written).

    `published`, if given, receives the last published estimate of every point; `baseline` is
    that of the same run without noise, for the `dp` section of a run with `dp_epsilon`.
    """
    from producers.publisher import KafkaSink
    from producers.scenarios import configure
    from producers.simulate import Progress, SimulationRun, run_simulation
    from producers.simulator import Simulation

    from streams.core.keys import KeyLayout
    from streams.runtime.services import EmbeddedServices, ManagedProcess, ensure_topics, free_port, topic_partitions

    environ = dict(os.environ if environ is None else environ)
    settings = Settings.from_env(environ)
    areas = load_areas(settings.areas_path)
    config = configure(options.scenario, dict(options.overrides), quick=options.quick)
    scenario = config.scenario
    devices = options.devices or (scenario.quick_devices if options.quick else scenario.full_devices)
    duration_s = options.duration_s or scenario.duration_s
    pace = options.pace or 3600.0
    if devices <= 0 or duration_s <= 0 or pace <= 0:
        raise ConfigError("devices, duration and pace must be positive")
    start_ms = scenario.start_ms()
    # The worker rejects events far ahead of the wall clock: a scenario dated in the future is
    # moved back by whole weeks (same weekday and time of day) until it has happened.
    now_ms = int(time.time() * 1000)
    while start_ms + duration_s * 1000 > now_ms:
        start_ms -= WEEK_MS
    end_ms = start_ms + int(duration_s * 1000)
    rotation = evaluation_rotation(settings.rotation, start_ms, end_ms, options.rotate_at_s, settings.bucket_s)
    rotation.check(settings.bucket_s, max(settings.windows_s))  # --rotate-at on a whole bucket
    out_dir = options.out_dir or Path(tempfile.mkdtemp(prefix=f"crowdpulse-eval-{options.scenario}-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"

    sim = Simulation(areas, devices, options.seed, start_ms, config=config, rotation=rotation, truth=True,
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
            # The worker follows the simulator's pseudonym-key schedule (docs/privacy.md).
            CROWDPULSE_ROTATION_PERIOD_S=str(rotation.period_s),
            CROWDPULSE_ROTATION_OFFSET_S=str(rotation.offset_s),
            CROWDPULSE_ROTATION_OVERLAP_S=str(rotation.overlap_s),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH", "")) if p),
        )
        if options.dp_epsilon is not None:
            worker_env.update(dp_env(options.dp_epsilon, settings.windows_s, environ))
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
                            bucket_s=wsettings.bucket_s, windows_s=wsettings.windows_s, scenario=options.scenario,
                            rotation=rotation)
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
        "shadow_events": summary["shadow_events"],
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
    report["rotation_at"] = [_iso(b) for b in rotations_between(rotation, start_ms, end_ms)]
    report["rotation_offset_s"], report["rotation_overlap_s"] = rotation.offset_s, rotation.overlap_s
    city = areas.widest()  # the whole city
    report.update(rotation_check(truth, occupancy.points, rotation, city, start_ms, wsettings.min_count))
    if options.dp_epsilon is not None:
        mechanism = DiscreteLaplace(options.dp_epsilon, wsettings.dp_sensitivity, b"only-for-the-quantile")
        report["dp"] = {
            "epsilon": options.dp_epsilon,
            "sensitivity": wsettings.dp_sensitivity,
            "daily_budget": wsettings.dp_daily_budget,
            "budget_note": "CROWDPULSE_DP_DAILY_BUDGET" if environ.get("CROWDPULSE_DP_DAILY_BUDGET") else
                           f"evaluate's default: {DP_RELEASES_PER_POINT} releases of every point of a day",
            "noise_90": mechanism.quantile(0.90),
            "released_messages": occupancy.noisy,
            "withheld_messages": occupancy.budget_withheld,
            **dp_cost(truth, occupancy.points, baseline or {}, wsettings.min_count),
        }
    if published is not None:
        published.update(occupancy.points)
    title = f"{options.scenario}{' (quick)' if options.quick else ''}, estimate ({options.window_s // 60}-min window) vs truth"
    report["plots"] = [str(p) for p in plot_areas(truth, occupancy.points, options.window_s, out_dir, title, options.min_people)]
    report["wall_s"] = round(time.monotonic() - wall_started, 1)
    write_report(report, out_dir)
    with open(out_dir / "truth.jsonl", "w") as f:
        for row in truth.rows():
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return report


def dp_env(epsilon: float, windows_s: tuple[int, ...], environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's differential-privacy settings for `--dp`: the daily budget and noise secret
    from the environment if set; else a budget for DP_RELEASES_PER_POINT releases of every point
    of a day (a republished point with a changed count is charged again), so that a run shows
    the cost of the noise rather than of the budget, and a fresh secret."""
    budget = epsilon * len(windows_s) * (86_400 // 60) * DP_RELEASES_PER_POINT
    return {
        "CROWDPULSE_DP_EPSILON": repr(epsilon),
        "CROWDPULSE_DP_DAILY_BUDGET": environ.get("CROWDPULSE_DP_DAILY_BUDGET") or repr(budget),
        "CROWDPULSE_DP_SECRET": environ.get("CROWDPULSE_DP_SECRET") or secrets.token_hex(16),
    }


def evaluate_dp(options: EvalOptions, environ: Mapping[str, str] | None = None) -> dict:
    """`evaluate --dp EPSILON`: the run without noise (its report in <out_dir>/without-noise),
    then the same run (same seed: the same events, the same HyperLogLogs) with noise; returns
    the noisy run's report, whose `dp` section sets its error beside that of HLL alone."""
    if options.dp_epsilon is None or not options.dp_epsilon > 0:
        raise ConfigError("--dp needs an epsilon > 0")
    out_dir = options.out_dir or Path(tempfile.mkdtemp(prefix=f"crowdpulse-eval-{options.scenario}-dp-"))
    environ = dict(os.environ if environ is None else environ)
    without_noise = {k: v for k, v in environ.items() if k != "CROWDPULSE_DP_EPSILON"}
    plain: dict = {}
    evaluate(replace(options, dp_epsilon=None, out_dir=out_dir / "without-noise"), without_noise, published=plain)
    return evaluate(replace(options, out_dir=out_dir), environ, baseline=plain)


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
