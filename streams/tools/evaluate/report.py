"""The report of `crowdpulse evaluate`: the terminal table (`format_table`, with the rotation
check's and the differential-privacy cost's lines) and the files report.json and report.md
(the same table) in the output directory. Reads only the report dict that run.py assembles from
the scores (score.py)."""

from __future__ import annotations

import json
from pathlib import Path


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
    if "level_points" in s:
        lines.append(f"levels ({s['level_points']:,} published points): false critical {s['false_critical']} (truth under 80% "
                     f"of capacity), missed critical {s['missed_critical']} of {s['truly_critical']} (called ok or warn), "
                     f"uncertain {s['uncertain_points']}")
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
