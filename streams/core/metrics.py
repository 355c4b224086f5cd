"""Prometheus metrics of one worker process. Names are crowdpulse_-prefixed, in base units;
labels have low cardinality (outcome, reason, area, window), never a device."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "crowdpulse_events_total", "Input events by outcome (counted, deadletter, late).", ["outcome"], registry=r
        )
        self.deadletters = Counter(
            "crowdpulse_deadletter_events_total", "Events dead-lettered, by reason.", ["reason"], registry=r
        )
        self.frames = Counter("crowdpulse_frames_total", "Binary frames decoded.", registry=r)
        self.sequence_gaps = Counter(
            "crowdpulse_frame_sequence_gaps_total", "Frames missing from a producer's sequence (upstream loss).", registry=r
        )
        self.sequence_repeats = Counter(
            "crowdpulse_frame_sequence_repeats_total", "Frames seen again (upstream duplication).", registry=r
        )
        self.replayed = Counter(
            "crowdpulse_replayed_messages_total", "Redelivered messages skipped (already applied).", registry=r
        )
        self.redis_retries = Counter(
            "crowdpulse_redis_retries_total", "Redis operations retried because Redis did not answer.", registry=r
        )
        self.batch_messages = Histogram(
            "crowdpulse_batch_messages", "Kafka messages per ingest batch.",
            buckets=(1, 5, 20, 50, 100, 200, 500, 1000), registry=r,
        )
        self.batch_events = Histogram(
            "crowdpulse_batch_events", "Events per ingest batch.",
            buckets=(10, 100, 1_000, 10_000, 100_000, 1_000_000), registry=r,
        )
        self.batch_seconds = Histogram(
            "crowdpulse_batch_processing_seconds", "Time to decode, plan and write one batch.", registry=r
        )
        self.publish_seconds = Histogram(
            "crowdpulse_publisher_loop_seconds", "Duration of one estimator pass.", registry=r
        )
        self.windows_published = Counter(
            "crowdpulse_estimates_published_total", "Window estimates published.", registry=r
        )
        self.skipped_points = Counter(
            "crowdpulse_estimate_points_skipped_total",
            "Window points not computed because stream time jumped further than the catch-up limit.",
            registry=r,
        )
        self.points_counted = Counter(
            "crowdpulse_estimator_points_counted_total",
            "Window points this worker counted and handed to the publisher (its own shards' areas).",
            registry=r,
        )
        self.estimator_shards = Gauge(
            "crowdpulse_estimator_shards",
            "Estimator shards (crowd.events partitions) whose areas this worker counts.",
            registry=r,
        )
        self.blocks_merged = Counter(
            "crowdpulse_estimator_blocks_merged_total",
            "Sealed five-minute blocks of bucket keys merged in Redis (PFMERGE), read whole by later spans.",
            registry=r,
        )
        self.span_counts = Counter(
            "crowdpulse_estimator_span_counts_total",
            "Span counts an estimator pass used: merged in Redis (PFCOUNT), or kept from an earlier "
            "pass because every bucket they cover is sealed.",
            ["source"],
            registry=r,
        )
        self.stream_time = Gauge(
            "crowdpulse_stream_time_seconds", "Stream time (highest event-time watermark), epoch seconds.", registry=r
        )
        self.warming_up = Gauge(
            "crowdpulse_warming_up",
            "1 while the newest estimates have less stream behind them than they need (after a cold start or a long silence).",
            registry=r,
        )
        self.estimate_age = Gauge(
            "crowdpulse_estimate_age_seconds",
            "Wall time since any worker's estimator last published (read from Redis at scrape time; "
            "since this worker started if nothing was ever published).", registry=r
        )
        self.estimator_errors = Counter(
            "crowdpulse_estimator_pass_errors_total",
            "Estimator passes that failed, by kind (redis: Redis away; other: logged with its traceback). "
            "The next pass takes up what the failed one left.", ["kind"], registry=r,
        )
        self.history_rows = Counter(
            "crowdpulse_history_rows_written_total",
            "Footfall history rows upserted into PostgreSQL, by kind (hour, day); a replayed hour rewrites its row.",
            ["kind"], registry=r,
        )
        self.history_errors = Counter(
            "crowdpulse_history_errors_total",
            "Footfall history writes that failed (PostgreSQL away or refusing); the next pass retries them.", registry=r,
        )
        self.buckets_dropped = Counter(
            "crowdpulse_bucket_keys_dropped_total",
            "HyperLogLog keys of buckets no window can read any more, deleted by the estimator.", registry=r,
        )
        self.log_resets = Counter(
            "crowdpulse_log_resets_total",
            "crowd.events partitions found restarted below the applied offset (a broker that lost its log) and read again "
            "from their start.", registry=r,
        )
        self.rebuilds = Counter(
            "crowdpulse_redis_rebuilds_total",
            "Times this worker found Redis had lost its data and rebuilt its partitions' windows from Kafka.", registry=r,
        )
        self.rebuild_messages = Counter(
            "crowdpulse_rebuild_messages_total", "crowd.events messages re-read to rebuild the windows.", registry=r,
        )
        self.estimate_delay = Histogram(
            "crowdpulse_event_to_estimate_seconds",
            "End-to-end latency of a live feed: wall time at publication minus the newest event time "
            "the published estimates include (producer, Kafka, ingest and estimator together).",
            buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300), registry=r,
        )
        self.people = Gauge(
            "crowdpulse_area_people", "Latest people estimate per area and window (unset while suppressed).",
            ["area", "window_s"], registry=r,
        )
        self.capacity_ratio = Gauge(
            "crowdpulse_area_capacity_ratio", "Latest people estimate / capacity (unset while suppressed).",
            ["area", "window_s"], registry=r,
        )
        # Consumer lag and alert state are read at scrape time (streams/ops/web.py), so every
        # worker reports them, not only the leader: aggregate alert gauges with max(), not sum().
        self.consumer_lag = Gauge(
            "crowdpulse_consumer_lag_messages",
            "crowd.events messages not yet processed, per partition this worker owns "
            "(highwater - applied offset - 1).",
            ["partition"], registry=r,
        )
        self.alerts_active = Gauge(
            "crowdpulse_alerts_active", "Active (firing or acknowledged) alerts by area, level and state.",
            ["area", "level", "state"], registry=r,
        )
        self.alerts_fired = Counter(
            "crowdpulse_alerts_fired_total", "Alerts fired by this worker (as leader), by rule and level.",
            ["rule", "level"], registry=r,
        )
        self.alert_errors = Counter(
            "crowdpulse_alert_evaluation_errors_total",
            "Alert passes that failed (logged; estimates are still published).", registry=r,
        )
        self.webhook_deliveries = Counter(
            "crowdpulse_webhook_deliveries_total", "Webhook deliveries by outcome (delivered, dropped).",
            ["outcome"], registry=r,
        )
        self.webhook_failures = Counter(
            "crowdpulse_webhook_failures_total",
            "Failed webhook attempts by reason (timeout, connection, http_4xx, http_5xx).", ["reason"], registry=r,
        )
        self.webhook_queue = Gauge(
            "crowdpulse_webhook_queue_messages", "Alert events waiting for the webhook.", registry=r
        )
        self.sse_clients = Gauge(
            "crowdpulse_sse_clients", "Open /api/stream connections on this worker.", registry=r
        )
