"""The options of one `crowdpulse evaluate` run (`EvalOptions`, built by command.py from the
command line) and the defaults the run and the tests share.

The evaluation is split along its seams: run.py (the end-to-end run on a real worker),
score.py (the pure scoring and the privacy checks), plots.py (one PNG per area) and report.py
(the table, report.json and report.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    #: Differential privacy: epsilon per release (None: off). See `evaluate_dp` (run.py).
    dp_epsilon: float | None = None
