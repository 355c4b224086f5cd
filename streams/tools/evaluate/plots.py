"""The plots of `crowdpulse evaluate`: one PNG per area in <out_dir>/plots, the published band
and people of the headline window against the people truly present, the operator devices
present and the exact distinct devices in the window (a perfect HLL). matplotlib is imported
here only, lazily, with the Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


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

        def series(key: str, est: list[dict | None] = est) -> np.ndarray:
            """One field of the published points, NaN where a point is missing or suppressed."""
            return np.array([np.nan if e is None or e["suppressed"] else e[key] for e in est], dtype=float)

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
