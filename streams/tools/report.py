"""The before/after report of `crowdpulse report`: from an area's daily rows (and a control
area's) to the change in daily visitors and in mean occupancy (streams/estimate/uplift.py), and
the files a council reads: report.html (self-contained: charts embedded as PNG data URIs, no
external resources, readable on a phone), daily.csv and the charts as PNG files.

The rows come from the daily history (the command reads the database); this module does no
reading of its own and prints nothing. matplotlib is imported here only, lazily, with the Agg
backend (no display needed).
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from streams.core.errors import ConfigError
from streams.estimate.uplift import DailySeries, Period, Uplift, estimate_uplift, weekday_of

#: The numeric fields of a daily row, in the order of daily.csv.
FIELDS = ("visitors", "visitors_low", "visitors_high", "people_mean", "people_peak", "dwell_min")
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class _DailyRowDay(TypedDict):
    day: str


class DailyRow(_DailyRowDay, total=False):
    """One area's day of the daily history: `day` ISO (2026-11-02); the figures None where
    there is none; `withheld` the reason a day is not published (e.g. below the privacy
    threshold), None for a published day."""

    visitors: float | None
    visitors_low: float | None
    visitors_high: float | None
    people_mean: float | None
    people_peak: float | None
    dwell_min: float | None
    withheld: str | None


@dataclass(frozen=True, eq=False)
class AreaDays:
    """One area's daily figures over every calendar day of the report (NaN where there is no
    figure) and, per day, the reason it was withheld (None: published or simply absent)."""

    area: str
    days: np.ndarray
    figures: dict[str, np.ndarray]
    withheld: list[str | None]

    def published(self, field: str) -> np.ndarray:
        """One figure with the withheld days blanked (NaN), whatever the row carried."""
        return np.where([w is not None for w in self.withheld], np.nan, self.figures[field])

    def series(self, field: str) -> DailySeries:
        """One figure as a DailySeries for the estimate; withheld days count as no data."""
        return DailySeries(self.days, self.published(field), self.area)


@dataclass(frozen=True, eq=False)
class Report:
    """Everything report.html, daily.csv and the charts show."""

    area: str
    before: Period
    after: Period
    target: AreaDays
    control: AreaDays | None
    visitors: Uplift
    #: The change of mean occupancy (people present on average), None when it cannot be compared.
    occupancy: Uplift | None
    notes: list[str]

    @property
    def headline(self) -> str:
        return _change_sentence("Daily visitors to", self.area, self.visitors, self.after, self.control)


def _pct(value: float) -> str:
    # Adding 0.0 turns a rounded -0.0 into 0.0: no "-0.0%".
    return f"{round(100 * value, 1) + 0.0:+.1f}%"


def _number(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def _change_sentence(what: str, area: str, uplift: Uplift, after: Period, control: AreaDays | None) -> str:
    """The sentence: <what> <area> rose by 8.3% (90% interval +5.1% to +11.6%) after <day>[, against <control>]."""
    verb = "rose" if uplift.change >= 0 else "fell"
    against = f", against {control.area}" if control is not None else ""
    return (f"{what} {area} {verb} by {abs(100 * uplift.change):.1f}% "
            f"({100 * uplift.level:.0f}% interval {_pct(uplift.low)} to {_pct(uplift.high)}) after {after[0].isoformat()}{against}")


def _area_days(area: str, rows: Sequence[DailyRow], first: date, last: date) -> AreaDays:
    """The rows laid on every day from first to last; rows outside that span are ignored."""
    days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)
    figures = {field: np.full(days.size, np.nan) for field in FIELDS}
    withheld: list[str | None] = [None] * days.size
    seen: set[int] = set()
    for row in rows:
        try:
            day = date.fromisoformat(row["day"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"daily row of {area} without a valid day (YYYY-MM-DD): {row!r}") from None
        if not first <= day <= last:
            continue
        i = (day - first).days
        if i in seen:
            raise ConfigError(f"two daily rows of {area} for {day.isoformat()}")
        seen.add(i)
        for field in FIELDS:
            value: Any = row.get(field)
            if value is not None:
                figures[field][i] = float(value)
        withheld[i] = row.get("withheld")
    return AreaDays(area=area, days=days, figures=figures, withheld=withheld)


def build_report(area: str, rows: Sequence[DailyRow], before: Period, after: Period, control: str | None = None,
                 control_rows: Sequence[DailyRow] | None = None) -> Report:
    """The change in daily visitors and in mean occupancy from `before` to `after` (inclusive
    day ranges), net of the `control` area's when one is given."""
    if (control is None) != (control_rows is None):
        raise ConfigError("a control area needs both its name and its daily rows")
    first, last = min(before[0], after[0]), max(before[1], after[1])
    target = _area_days(area, rows, first, last)
    other = _area_days(control, control_rows, first, last) if control is not None and control_rows is not None else None
    visitors = estimate_uplift(target.series("visitors"), before, after, other.series("visitors") if other else None)
    occupancy = None
    unmatched = None
    if np.isfinite(target.figures["people_mean"]).any():
        # Daily visitors are the headline; a mean occupancy that cannot be compared (fewer days
        # published, say) is said in the notes rather than losing the whole report.
        try:
            occupancy = estimate_uplift(target.series("people_mean"), before, after,
                                        other.series("people_mean") if other else None)
        except ConfigError as exc:
            unmatched = f"mean occupancy is not compared: {exc}"
    else:
        unmatched = "mean occupancy is not compared: the rows carry no people_mean"
    # A caveat both measures share (the same days withheld, say) is said once.
    measures: dict[str, list[str]] = {}
    for measure, uplift in (("daily visitors", visitors), ("mean occupancy", occupancy)):
        for note in uplift.notes if uplift is not None else []:
            measures.setdefault(note, []).append(measure)
    notes = [f"{' and '.join(names)}: {note}" for note, names in measures.items()]
    if unmatched is not None:
        notes.append(unmatched)
    for days in (target, other):
        if days is None:
            continue
        reasons: dict[str, list[str]] = {}
        for day, reason in zip(days.days, days.withheld):
            if reason is not None:
                reasons.setdefault(reason, []).append(str(day))
        for reason, listed in reasons.items():
            notes.append(f"{len(listed)} days of {days.area} withheld ({reason}): {', '.join(listed)}")
    return Report(area=area, before=before, after=after, target=target, control=other, visitors=visitors,
                  occupancy=occupancy, notes=notes)


def _period_of(report: Report, day: np.datetime64) -> str:
    d = day.astype(date)
    for name, (first, last) in (("before", report.before), ("after", report.after)):
        if first <= d <= last:
            return name
    return "between"


def _write_csv(report: Report, path: Path) -> None:
    """One row per calendar day: the target's figures, then the control's (prefixed control_)."""
    areas = [("", report.target)] + ([("control_", report.control)] if report.control is not None else [])
    header = ["day", "weekday", "period"]
    for prefix, _ in areas:
        header += [f"{prefix}area", *(f"{prefix}{field}" for field in FIELDS), f"{prefix}withheld"]
    weekdays = weekday_of(report.target.days)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        for i, day in enumerate(report.target.days):
            line = [str(day), WEEKDAY_NAMES[weekdays[i]], _period_of(report, day)]
            for _, days in areas:
                line += [days.area, *(_number(days.figures[field][i]) for field in FIELDS), days.withheld[i] or ""]
            out.writerow(line)


def _weekday_means(report: Report, period: Period) -> np.ndarray:
    """The target's mean daily visitors per weekday (Monday first) in one period, NaN if none."""
    days = report.target.days
    inside = (days >= np.datetime64(period[0], "D")) & (days <= np.datetime64(period[1], "D"))
    values = report.target.published("visitors")
    used = inside & np.isfinite(values)
    weekdays = weekday_of(days[used])
    counts = np.bincount(weekdays, minlength=7)
    sums = np.bincount(weekdays, weights=values[used], minlength=7)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _chart_daily(report: Report) -> bytes:
    """Daily visitors of the target (and the control below it), the periods shaded, withheld
    days marked on the time axis."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = [(report.target, "")] + ([(report.control, " (control)")] if report.control is not None else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), dpi=90, sharex=True, squeeze=False)
    for ax, (days, role) in zip(axes[:, 0], panels):
        x = days.days
        for (first, last), colour, name in ((report.before, "tab:gray", "before"), (report.after, "tab:orange", "after")):
            ax.axvspan(np.datetime64(first, "D"), np.datetime64(last, "D") + 1, color=colour, alpha=0.13, lw=0,
                       label=f"{name} period")
        low, high = days.published("visitors_low"), days.published("visitors_high")
        if np.isfinite(low).any() and np.isfinite(high).any():
            ax.fill_between(x, low, high, color="tab:blue", alpha=0.2, lw=0, label="range of the day's figure")
        visitors = days.published("visitors")
        ax.plot(x, visitors, color="tab:blue", lw=1.4, marker="o", ms=3, label="daily visitors")
        withheld = np.array([w is not None for w in days.withheld])
        if withheld.any():
            ax.scatter(x[withheld], np.full(int(withheld.sum()), 0.04), transform=ax.get_xaxis_transform(), marker="x",
                       color="tab:red", s=30, zorder=3, label="withheld day")
        ax.set_title(f"{days.area}{role}: daily visitors")
        # Headroom above the data for the legend; the withheld marks sit along the bottom.
        top = max(np.nanmax(visitors, initial=0.0), np.nanmax(high, initial=0.0))
        ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85, ncol=3)
    axes[-1, 0].xaxis.set_major_locator(mdates.WeekdayLocator(byweekday=mdates.MO))
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))
    return _png(fig)


def _chart_weekdays(report: Report) -> bytes:
    """Mean daily visitors by weekday, before next to after."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=90)
    x = np.arange(7)
    ax.bar(x - 0.2, _weekday_means(report, report.before), width=0.4, color="tab:gray", label="before")
    ax.bar(x + 0.2, _weekday_means(report, report.after), width=0.4, color="tab:orange", label="after")
    ax.set_xticks(x, WEEKDAY_NAMES)
    ax.set_ylabel("mean daily visitors")
    ax.set_title(f"{report.area}: daily visitors by weekday")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _chart_comparison(report: Report) -> bytes:
    """Left, the average day before and after (and what the control's change alone would have
    given); right, each change with its interval against no change."""
    import matplotlib.pyplot as plt

    v = report.visitors
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90, gridspec_kw={"width_ratios": [1, 1.2]})
    names, heights, colours = ["before", "after"], [v.before_mean, v.after_mean], ["tab:gray", "tab:orange"]
    if v.control_change is not None and report.control is not None:
        names.insert(1, f"if it had moved\nlike {report.control.area}")
        heights.insert(1, v.before_mean * (1 + v.control_change))
        colours.insert(1, "lightgray")
    left.bar(names, heights, color=colours)
    left.set_ylabel("average daily visitors")
    left.set_title("average day (every weekday weighing the same)", fontsize=10)
    left.grid(axis="y", alpha=0.3)
    changes = [("daily visitors", v)] + ([("mean occupancy", report.occupancy)] if report.occupancy is not None else [])
    y = np.arange(len(changes))[::-1]
    for row, (_, u) in zip(y, changes):
        right.errorbar(100 * u.change, row, xerr=[[100 * (u.change - u.low)], [100 * (u.high - u.change)]], fmt="o",
                       color="tab:blue", capsize=6, lw=2)
        right.annotate(f"{_pct(u.change)}  ({_pct(u.low)} to {_pct(u.high)})", (100 * u.change, row), xytext=(0, 9),
                       textcoords="offset points", ha="center", fontsize=8)
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(y, [name for name, _ in changes])
    right.set_ylim(-0.7, len(changes) - 0.3)
    right.set_xlabel(f"change, % ({100 * v.level:.0f}% interval)")
    right.set_title("change after " + report.after[0].isoformat(), fontsize=10)
    right.grid(axis="x", alpha=0.3)
    return _png(fig)


def _explanation(report: Report) -> str:
    v = report.visitors
    net = f", net of the change at {report.control.area} over the same days" if report.control is not None else ""
    return (
        "A visitor is a distinct phone seen in the area during a day, scaled up to people by the operator's market "
        "share. Pseudonyms change every day, so visitors are counted per day: the same person on two days counts twice. "
        f"The change compares the average day of each period, every weekday weighing the same{net}. "
        f"The {100 * v.level:.0f}% interval comes from how much whole weeks differ from one another, widened for having "
        "only a few weeks of each period, so about 9 times in 10 such an interval holds the true change."
    )


def _html(report: Report, charts: dict[str, bytes]) -> str:
    e = html.escape
    v, occupancy = report.visitors, report.occupancy
    sentences = [report.headline + "."]
    if v.low <= 0 <= v.high:
        sentences.append("The interval includes no change at all: this difference could be ordinary week-to-week variation.")
    if occupancy is not None:
        sentences.append(_change_sentence("Mean occupancy at", report.area, occupancy, report.after, report.control) + ".")
    rows = [
        ("period", f"{report.before[0]} to {report.before[1]}", f"{report.after[0]} to {report.after[1]}"),
        ("days used", str(v.days_before), str(v.days_after)),
        ("average daily visitors", f"{v.before_mean:,.0f}", f"{v.after_mean:,.0f}"),
    ]
    if occupancy is not None:
        rows.append(("average people present", f"{occupancy.before_mean:,.0f}", f"{occupancy.after_mean:,.0f}"))
    table = "".join(f"<tr><th>{e(a)}</th><td>{e(b)}</td><td>{e(c)}</td></tr>" for a, b, c in rows)
    changes = [("daily visitors", v)] + ([("mean occupancy", occupancy)] if occupancy is not None else [])
    change_rows = "".join(
        f"<tr><th>{e(name)}</th><td>{_pct(u.change)}</td><td>{_pct(u.low)} to {_pct(u.high)}</td>"
        + (f"<td>{_pct(u.control_change)}</td>" if u.control_change is not None else "") + "</tr>"
        for name, u in changes
    )
    control_head = f"<th>{e(report.control.area)} alone</th>" if report.control is not None else ""
    images = "".join(
        f"<h2>{e(title)}</h2><img alt=\"{e(title)}\" src=\"data:image/png;base64,{base64.b64encode(charts[name]).decode()}\">"
        for name, title in (("daily.png", "Day by day"), ("weekdays.png", "By weekday"), ("before_after.png", "Before and after"))
    )
    notes = "".join(f"<li>{e(note)}</li>" for note in report.notes)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(report.area)}: before and after {report.after[0]}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 48rem; margin: 0 auto; padding: 1rem;
       line-height: 1.5; color: #222; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 1.6rem; }}
.headline {{ font-size: 1.2rem; font-weight: 600; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.95rem; }}
th, td {{ text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid #ddd; }}
.method {{ color: #555; font-size: 0.9rem; }}
</style>
</head>
<body>
<h1>{e(report.area)}: before and after {report.after[0]}</h1>
<p class="headline">{e(sentences[0])}</p>
{"".join(f"<p>{e(s)}</p>" for s in sentences[1:])}
<table><tr><th></th><th>before</th><th>after</th></tr>{table}</table>
<h2>Change</h2>
<table><tr><th></th><th>change</th><th>{100 * v.level:.0f}% interval</th>{control_head}</tr>{change_rows}</table>
<h2>How to read this</h2>
<p>{e(_explanation(report))}</p>
<p class="method">Method: {e(v.method)}. The daily figures are in daily.csv.</p>
{images}
<h2>Notes</h2>
<ul>{notes}</ul>
</body>
</html>
"""


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """report.html, daily.csv and the three charts in out_dir (created if needed); their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {"daily.png": _chart_daily(report), "weekdays.png": _chart_weekdays(report),
              "before_after.png": _chart_comparison(report)}
    paths = [out_dir / "report.html", out_dir / "daily.csv"]
    paths[0].write_text(_html(report, charts), encoding="utf-8")
    _write_csv(report, paths[1])
    for name, png in charts.items():
        (out_dir / name).write_bytes(png)
        paths.append(out_dir / name)
    return paths
