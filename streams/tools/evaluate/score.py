"""The scoring of `crowdpulse evaluate`: published estimates against the simulator's ground truth
(a TruthTable, producers/truth.py). Pure: no I/O, no plotting, no broker; run.py feeds it the
last published estimate of every point (area, window_s, as_of).

The scoring (`score`):
- HyperLogLog fidelity: published `devices` against the exact distinct devices with an event
  in the same window (the pipeline's definition: event time [as_of - W, as_of));
- occupancy: published `people` against people truly present at `as_of`, only where at least
  `min_people` (1,000) are truly present and the window lies wholly inside the run; MAPE, bias,
  worst area; `naive_mape` scores the model people = distinct devices in the 15-minute window;
- surge lag: per fill/empty episode of the scenario's focus area, the estimate's 50% crossing
  (halfway between its own low and high in the episode) minus the truth's, in minutes;
- range coverage: the share of scored minutes whose truth lies in [people_low, people_high].

Two checks of the privacy machinery ride on the same run (docs/privacy.md):
- rotation (`rotation_check`): the run crosses a pseudonym-key rotation (by default at its
  middle, `--rotate-at` to choose; `evaluation_rotation` sets the schedule), and the
  HyperLogLog error of the points whose window spans it is reported apart from the others, with
  the largest minute-to-minute change of the city-wide count across the rotation and elsewhere:
  a double count would show as +100%;
- differential privacy (`--dp EPSILON`, `evaluate_dp` in run.py): the run is made twice, without
  and with noise (same seed, same events), and `dp_cost` sets the noisy error beside HLL's alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from streams.core.errors import ConfigError
from streams.core.rotation import Rotation
from streams.estimate.estimator import CRITICAL_SHARE, WARN_SHARE

NAIVE_WINDOW_S = 900


#: The fixed windows whose counts, scaled by share and SIMs, are the naive baselines (minutes).
NAIVE_WINDOWS_MIN = (5, 15, 60)


def alarm_counts(people: Any, capacity: Any, levels: Any) -> dict[str, int]:
    """Published levels against the people truly present (docs/operations.md, "Levels"), one
    entry per point: `critical` while the truth is under the warn line (80% of capacity) is a
    false alarm; `ok` or `warn` while it is at or over the critical line (95%) a missed one;
    `uncertain` is neither (it asked for a look)."""
    people = np.asarray(people, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.float64)
    levels = np.asarray(levels, dtype=object)
    critical = people >= CRITICAL_SHARE * capacity
    return {
        "points": int(len(people)),
        "false_critical": int(((levels == "critical") & (people < WARN_SHARE * capacity)).sum()),
        "truly_critical": int(critical.sum()),
        "missed_critical": int((critical & np.isin(levels, ["ok", "warn"])).sum()),
        "uncertain": int((levels == "uncertain").sum()),
    }


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
    alarm_points: list[tuple[int, Any, Any]] = []  # (people, capacity, level) of every point the levels are scored on
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
                level, capacity = est.get("level"), est.get("capacity")
                if (w == window_s and capacity and not est["suppressed"] and not est.get("warming_up")
                        and as_of - start_ms >= w * 1000):
                    # Levels against the truth (alarm_counts), on every published point.
                    alarm_points.append((people, capacity, level))
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
    alarms = alarm_counts(*np.array(alarm_points, dtype=object).reshape(-1, 3).T)
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
        "level_points": alarms["points"],
        "false_critical": alarms["false_critical"],
        "truly_critical": alarms["truly_critical"],
        "missed_critical": alarms["missed_critical"],
        "uncertain_points": alarms["uncertain"],
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
