"""What one bench run measures and how much: the sizes, durations and repeats of every section
(`BenchConfig`), and the presets `QUICK` (`crowdpulse bench --quick`), `FULL` and `SMOKE`
(`--smoke`: every section on tiny data sets, to check that the bench runs; its figures mean
nothing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    quick: bool  # a reduced run (quick or smoke): no ingest-only run, no scale-out
    frames_events: int  # events in the frames data set (and in the scale-out data set)
    json_events: int
    naive_messages: int  # single-event messages (the raw limit reads all of them)
    naive_seconds: float  # how long the naive baseline is timed
    repeats: int  # repeats of each throughput run; the median is reported
    latency_rate: int  # events/s offered in the latency run
    latency_seconds: float  # measured part of the latency run
    estimator_areas: tuple[int, ...]
    scaleout_events: int  # 0: skipped
    simulator_devices: int
    simulator_seconds: float  # how long each simulator run is timed
    name: str = "full"  # what the report calls the run: full, quick or smoke
    cluster_masters: int = 3  # the worker on frames again on a Redis Cluster of this many masters (0: skipped)
    single_pfadds: int = 500_000  # single-member PFADDs sent for redis-benchmark's figure


QUICK = BenchConfig(True, 2_000_000, 500_000, 600_000, 6.0, 1, 100_000, 10.0, (1_000,), 0, 100_000, 3.0, "quick")
FULL = BenchConfig(False, 10_000_000, 2_000_000, 2_000_000, 20.0, 3, 100_000, 60.0, (1_000, 10_000), 12_000_000, 1_000_000, 10.0)
# Smoke: the least data with which every section still does its work (several frames per
# partition, estimates on many areas, probes answered); it runs beside the rest of the suite.
SMOKE = BenchConfig(True, 400_000, 200_000, 30_000, 1.0, 1, 10_000, 4.0, (100,), 0, 20_000, 1.0, "smoke",
                    single_pfadds=50_000)
