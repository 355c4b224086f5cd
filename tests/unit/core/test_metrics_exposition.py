"""The /metrics exposition parses with prometheus-client's own parser and has what the
operations room needs, named by Prometheus conventions (`crowdpulse_` prefix, base units, counters
ending in `_total`). (tests/integration/ops/test_alerts_pipeline.py
parses a running worker's /metrics the same way.)"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.core.metrics import Metrics


def exposition() -> dict:
    m = Metrics()
    m.events.labels("counted").inc(1000)
    m.events.labels("deadletter").inc(2)
    m.events.labels("late").inc(1)
    m.deadletters.labels("unknown_cell").inc(2)
    m.batch_messages.observe(12)
    m.batch_events.observe(12_000)
    m.batch_seconds.observe(0.02)
    m.publish_seconds.observe(0.004)
    m.estimate_age.set(1.5)
    m.people.labels("stadium", "300").set(52_000)
    m.capacity_ratio.labels("stadium", "300").set(0.8667)
    m.consumer_lag.labels("0").set(3)
    m.alerts_active.labels("stadium", "critical", "firing").set(1)
    m.alerts_fired.labels("capacity", "critical").inc()
    m.webhook_failures.labels("timeout").inc()
    m.webhook_deliveries.labels("delivered").inc()
    m.webhook_queue.set(0)
    m.sse_clients.set(2)
    text = generate_latest(m.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_parses_and_has_what_the_issue_asks_for() -> None:
    families = exposition()
    wanted = {
        "crowdpulse_events": "counter",  # events in by outcome
        "crowdpulse_batch_messages": "histogram",  # batch sizes
        "crowdpulse_batch_events": "histogram",
        "crowdpulse_batch_processing_seconds": "histogram",  # processing time
        "crowdpulse_consumer_lag_messages": "gauge",
        "crowdpulse_estimate_age_seconds": "gauge",
        "crowdpulse_area_people": "gauge",  # per-area people and share of capacity
        "crowdpulse_area_capacity_ratio": "gauge",
        "crowdpulse_alerts_active": "gauge",  # active alerts by level
        "crowdpulse_webhook_failures": "counter",
        "crowdpulse_publisher_loop_seconds": "histogram",
    }
    for name, kind in wanted.items():
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("crowdpulse_events_total", (("outcome", "deadletter"),))] == 2
    assert samples[("crowdpulse_alerts_active", (("area", "stadium"), ("level", "critical"), ("state", "firing")))] == 1
    assert samples[("crowdpulse_consumer_lag_messages", (("partition", "0"),))] == 3


def test_names_follow_the_style() -> None:
    for family in exposition().values():
        assert family.name.startswith("crowdpulse_"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            else:
                assert not sample.name.endswith("_total"), sample.name
        # Base units: seconds, never milliseconds.
        assert "_milliseconds" not in family.name and "_ms" not in family.name
