"""Configuration of a crowdpulse process, read once from the environment at the edge.

Every other module receives a Settings object; none reads os.environ itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from streams.core.errors import ConfigError
from streams.core.kafka_security import KafkaSecurity
from streams.core.rotation import NO_ROTATION, Rotation

DEFAULT_AREAS = Path(__file__).resolve().parents[1] / "data" / "example-city.json"
DEFAULT_VISIBILITY_MODEL = Path(__file__).resolve().parents[1] / "data" / "visibility-model.npz"
PEOPLE_MODELS = ("visibility", "devices")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Settings:
    #: Kafka bootstrap servers "host:port[,host:port]"; None means "start the embedded broker".
    kafka: str | None = None
    #: Redis URL (redis:// or rediss://); None means "start the embedded redis-server".
    redis_url: str | None = None
    #: The areas file (areas -> cells, capacity). See docs/areas.md.
    areas_path: Path = DEFAULT_AREAS
    #: Port and bind address of the HTTP API, dashboard and /metrics.
    http_port: int = 6066
    http_host: str = "127.0.0.1"
    #: API bearer tokens, inline ("<token>:<scope>+<scope>,...") and/or a file of SHA-256
    #: digests (docs/security.md). Required when http_host is not a loopback address.
    api_tokens: str | None = None
    api_tokens_file: Path | None = None
    #: Pseudonym-key rotation the producers follow (docs/privacy.md), read by the workers and
    #: the simulator alike: daily at 04:00 UTC, shadows during the hour before; period 0 =
    #: stable pseudonyms (a feed that does not rotate). Offset and overlap in seconds.
    rotation_period_s: int = 86_400
    rotation_offset_s: int = 4 * 3600
    rotation_overlap_s: int = 3600
    #: Kafka transport security (SASL_SSL/SCRAM or SSL) for every client; see docs/security.md.
    kafka_security: KafkaSecurity = KafkaSecurity()
    #: Optional differential privacy at publication (off when None): epsilon spent per release,
    #: the per-area budget per stream-time day, devices one person can add (SIMs per person),
    #: and the secret keying the noise (docs/privacy.md).
    dp_epsilon: float | None = None
    dp_daily_budget: float = 20.0
    dp_sensitivity: int = 2
    dp_secret: str | None = field(default=None, repr=False)
    #: From phones to people (docs/estimation.md): "visibility" (the calibrated model) or
    #: "devices" (people = the window's distinct phones: the naive model, for comparisons).
    people_model: str = "visibility"
    #: The calibration table of the visibility model (`crowdpulse calibrate` writes it).
    visibility_model_path: Path = DEFAULT_VISIBILITY_MODEL
    #: The operator's share of the people in an area, unless the areas file says otherwise,
    #: and SIMs per person; scaling_se is the relative standard error of the two together
    #: that the ranges include (0 when they are known exactly, as in the simulator).
    market_share: float = 0.32
    sims_per_person: float = 1.35
    scaling_se: float = 0.0
    #: Publish residents/visitors and age-band segments with every estimate (docs/estimation.md).
    segments: bool = True
    #: Merge sealed five-minute blocks of large areas' buckets in Redis and read them whole
    #: (streams/core/blocks.py): the same counts from fewer merges. Off: every span reads its
    #: bucket keys (the bench's baseline).
    span_blocks: bool = True
    #: Write a batch's large HyperLogLog keys (2,000 members and more) as registers merged in
    #: Redis instead of member by member (streams/core/hll.py): the same registers for a
    #: fraction of Redis' CPU. Off: every member by PFADD (the bench's baseline).
    register_writes: bool = True
    #: Faust application id (also the consumer group).
    app_id: str = "crowdpulse"
    #: Prefix of every Redis key, so several deployments or tests can share one Redis.
    namespace: str = "cp"
    #: Prefix of every topic name ("" in production: topics are exactly crowd.events etc.).
    topic_prefix: str = ""
    #: Partitions of crowd.events when crowdpulse creates it.
    partitions: int = 4
    #: Event-time bucket length; every window is a whole number of buckets.
    bucket_s: int = 60
    #: Sliding windows published for every area.
    windows_s: tuple[int, ...] = (300, 900, 3600)
    #: Events older than (partition watermark - grace) go to crowd.late.
    grace_s: int = 120
    #: Events newer than max(wall clock, watermark) + this are rejected as "far future".
    max_future_s: int = 900
    #: Messages larger than this are rejected whole.
    max_message_bytes: int = 1_048_576
    #: Distinct counts below this are never published (privacy threshold k).
    min_count: int = 15
    #: How often the estimator looks for changed windows.
    publish_interval_s: float = 1.0
    #: Messages per ingest batch (each may hold thousands of events) and the longest wait.
    batch_messages: int = 500
    batch_within_s: float = 0.05
    #: A taken batch is planned and written in runs of at most this many bytes of messages
    #: (24 MB: 1,000,000 binary records), so large frames cannot make a batch of gigabytes.
    batch_max_bytes: int = 24_000_000
    #: Longest a worker's Kafka fetch waits for data (Faust's own default is 1,500 ms; the
    #: embedded broker holds a fetch that long when caught up, delaying every estimate).
    fetch_max_wait_ms: int = 50
    #: How long the worker's Kafka producer gathers messages into one request (Faust's default
    #: 0 sends each estimate in a request of its own).
    producer_linger_s: float = 0.005
    #: Consumer-group session and rebalance timeout of the workers.
    group_timeout_s: float = 6.0
    #: Buckets the estimator catches up on in one pass when stream time jumps (replays).
    max_catchup_buckets: int = 240
    #: Points kept in each area's recent series (per window).
    series_points: int = 180
    #: Alert rules file (JSON, docs/operations.md); None: the built-in defaults plus any
    #: per-area "alerts" objects in the areas file.
    alert_rules_path: Path | None = None
    #: Where alert events are POSTed (HMAC-signed); None: no webhook.
    webhook_url: str | None = None
    #: Key of the webhook's HMAC-SHA256 signature; required with webhook_url. Kept out of repr.
    webhook_secret: str | None = field(default=None, repr=False)
    #: Attempts per webhook delivery (exponential backoff between them) before it is dropped.
    webhook_max_attempts: int = 6
    #: Timeout of one webhook request.
    webhook_timeout_s: float = 5.0
    #: Faust's data directory (Faust creates one even with in-memory tables); None: a temporary
    #: directory removed when the worker exits.
    datadir: Path | None = None
    #: PostgreSQL URL of the footfall history (docs/footfall.md); None: no history is kept. Kept
    #: out of repr (it may carry a password).
    history_db: str | None = field(default=None, repr=False)
    #: Hourly and daily history rows older than this many days are deleted.
    history_retention_days: int = 400
    #: The window whose estimates the hourly history summarises (one of windows_s).
    history_window_s: int = 900

    def __post_init__(self) -> None:
        if self.bucket_s <= 0:
            raise ConfigError("bucket_s must be positive")
        if not self.windows_s:
            raise ConfigError("at least one window is needed")
        for window in self.windows_s:
            if window <= 0 or window % self.bucket_s:
                raise ConfigError(f"window {window}s is not a whole number of {self.bucket_s}s buckets")
        if self.grace_s < 0 or self.max_future_s <= 0:
            raise ConfigError("grace_s must be >= 0 and max_future_s > 0")
        if self.min_count < 0:
            raise ConfigError("min_count must be >= 0")
        if not 0 < self.http_port < 65536:
            raise ConfigError(f"http_port {self.http_port} is not a TCP port")
        if self.partitions <= 0 or self.batch_messages <= 0:
            raise ConfigError("partitions and batch_messages must be positive")
        if self.fetch_max_wait_ms <= 0 or self.producer_linger_s < 0:
            raise ConfigError("fetch_max_wait_ms must be positive and producer_linger_s >= 0")
        if not 0 < self.publish_interval_s < float("inf"):
            raise ConfigError("publish_interval_s must be a positive number of seconds")
        self.rotation.check(self.bucket_s, max(self.windows_s))
        if self.history_db and self.history_window_s not in self.windows_s:
            raise ConfigError(f"the history summarises the {self.history_window_s} s window, which is not among the "
                              f"published windows {list(self.windows_s)}")
        if self.history_retention_days < 1:
            raise ConfigError("CROWDPULSE_HISTORY_RETENTION_DAYS must be at least 1")
        if self.people_model not in PEOPLE_MODELS:
            raise ConfigError(f"people_model must be one of {', '.join(PEOPLE_MODELS)}")
        if self.people_model == "visibility" and (60 % self.bucket_s or max(self.windows_s) < 3600):
            raise ConfigError("the visibility model needs 1-minute multiples of the bucket and a 3600 s window "
                             "(or CROWDPULSE_PEOPLE_MODEL=devices)")
        if not 0 < self.market_share <= 1 or self.sims_per_person < 1 or self.scaling_se < 0:
            raise ConfigError("market_share must be in (0, 1], sims_per_person >= 1 and scaling_se >= 0")
        if self.dp_epsilon is not None:
            if not self.dp_epsilon > 0 or not self.dp_daily_budget > 0 or self.dp_sensitivity < 1:
                raise ConfigError("dp_epsilon and dp_daily_budget must be > 0, dp_sensitivity >= 1")
            if not self.dp_secret:
                raise ConfigError("differential privacy needs a noise secret (CROWDPULSE_DP_SECRET)")
        if self.http_host not in LOOPBACK_HOSTS and not (self.api_tokens or self.api_tokens_file):
            raise ConfigError(
                f"refusing to serve the API on {self.http_host} without access control: set "
                "CROWDPULSE_API_TOKENS or CROWDPULSE_API_TOKENS_FILE (docs/security.md), or bind to 127.0.0.1"
            )
        if ":" in self.namespace or not self.namespace:
            raise ConfigError("namespace must be non-empty and contain no ':'")
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ConfigError("webhook_url must be an http:// or https:// URL")
            if not self.webhook_secret:
                raise ConfigError("a webhook needs a secret to sign with (CROWDPULSE_WEBHOOK_SECRET)")
        if self.webhook_max_attempts < 1 or self.webhook_timeout_s <= 0:
            raise ConfigError("webhook_max_attempts must be >= 1 and webhook_timeout_s > 0")

    @property
    def rotation(self) -> Rotation:
        if not self.rotation_period_s:
            return NO_ROTATION
        return Rotation(self.rotation_period_s, self.rotation_offset_s, self.rotation_overlap_s)

    @property
    def bucket_ms(self) -> int:
        return self.bucket_s * 1000

    @property
    def longest_window_ms(self) -> int:
        return max(self.windows_s) * 1000

    def with_endpoints(self, kafka: str, redis_url: str) -> Settings:
        return replace(self, kafka=kafka, redis_url=redis_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from CROWDPULSE_* variables (see README), then explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("CROWDPULSE_KAFKA"):
            values["kafka"] = env["CROWDPULSE_KAFKA"]
        if env.get("CROWDPULSE_REDIS"):
            values["redis_url"] = env["CROWDPULSE_REDIS"]
        if env.get("CROWDPULSE_AREAS"):
            values["areas_path"] = Path(env["CROWDPULSE_AREAS"])
        if env.get("CROWDPULSE_HTTP_PORT"):
            values["http_port"] = _int(env, "CROWDPULSE_HTTP_PORT")
        if env.get("CROWDPULSE_HTTP_HOST"):
            values["http_host"] = env["CROWDPULSE_HTTP_HOST"]
        if env.get("CROWDPULSE_API_TOKENS"):
            values["api_tokens"] = env["CROWDPULSE_API_TOKENS"]
        if env.get("CROWDPULSE_API_TOKENS_FILE"):
            values["api_tokens_file"] = Path(env["CROWDPULSE_API_TOKENS_FILE"])
        for name, key, kind in (
            ("CROWDPULSE_DP_EPSILON", "dp_epsilon", float),
            ("CROWDPULSE_DP_DAILY_BUDGET", "dp_daily_budget", float),
            ("CROWDPULSE_DP_SENSITIVITY", "dp_sensitivity", int),
            ("CROWDPULSE_MARKET_SHARE", "market_share", float),
            ("CROWDPULSE_SIMS_PER_PERSON", "sims_per_person", float),
            ("CROWDPULSE_SCALING_SE", "scaling_se", float),
        ):
            if env.get(name):
                try:
                    values[key] = kind(env[name])
                except ValueError:
                    raise ConfigError(f"{name}={env[name]!r} is not a number") from None
        values["kafka_security"] = KafkaSecurity.from_env(env)
        for name, key in (
            ("CROWDPULSE_ROTATION_PERIOD_S", "rotation_period_s"),
            ("CROWDPULSE_ROTATION_OFFSET_S", "rotation_offset_s"),
            ("CROWDPULSE_ROTATION_OVERLAP_S", "rotation_overlap_s"),
        ):
            if env.get(name):
                values[key] = _int(env, name)
        for name, key in (("CROWDPULSE_SEGMENTS", "segments"), ("CROWDPULSE_SPAN_BLOCKS", "span_blocks"),
                          ("CROWDPULSE_REGISTER_WRITES", "register_writes")):
            if env.get(name):
                flag = env[name].strip().lower()
                if flag not in ("0", "1", "on", "off", "true", "false"):
                    raise ConfigError(f"{name}={env[name]!r} is not on/off")
                values[key] = flag in ("1", "on", "true")
        if env.get("CROWDPULSE_PEOPLE_MODEL"):
            values["people_model"] = env["CROWDPULSE_PEOPLE_MODEL"]
        if env.get("CROWDPULSE_VISIBILITY_MODEL"):
            values["visibility_model_path"] = Path(env["CROWDPULSE_VISIBILITY_MODEL"])
        if env.get("CROWDPULSE_DP_SECRET"):
            values["dp_secret"] = env["CROWDPULSE_DP_SECRET"]
        if env.get("CROWDPULSE_APP_ID"):
            values["app_id"] = env["CROWDPULSE_APP_ID"]
        if env.get("CROWDPULSE_NAMESPACE"):
            values["namespace"] = env["CROWDPULSE_NAMESPACE"]
        if env.get("CROWDPULSE_TOPIC_PREFIX"):
            values["topic_prefix"] = env["CROWDPULSE_TOPIC_PREFIX"]
        if env.get("CROWDPULSE_GRACE_S"):
            values["grace_s"] = _int(env, "CROWDPULSE_GRACE_S")
        if env.get("CROWDPULSE_PUBLISH_INTERVAL_S"):
            try:
                values["publish_interval_s"] = float(env["CROWDPULSE_PUBLISH_INTERVAL_S"])
            except ValueError:
                raise ConfigError(f"CROWDPULSE_PUBLISH_INTERVAL_S={env['CROWDPULSE_PUBLISH_INTERVAL_S']!r} is not a number") from None
        if env.get("CROWDPULSE_MIN_COUNT"):
            values["min_count"] = _int(env, "CROWDPULSE_MIN_COUNT")
        if env.get("CROWDPULSE_WINDOWS_S"):
            raw = env["CROWDPULSE_WINDOWS_S"]
            try:
                values["windows_s"] = tuple(int(part) for part in raw.split(","))
            except ValueError:
                raise ConfigError(f"CROWDPULSE_WINDOWS_S={raw!r} is not a list of seconds") from None
        if env.get("CROWDPULSE_ALERT_RULES"):
            values["alert_rules_path"] = Path(env["CROWDPULSE_ALERT_RULES"])
        if env.get("CROWDPULSE_WEBHOOK_URL"):
            values["webhook_url"] = env["CROWDPULSE_WEBHOOK_URL"]
        if env.get("CROWDPULSE_WEBHOOK_SECRET"):
            values["webhook_secret"] = env["CROWDPULSE_WEBHOOK_SECRET"]
        if env.get("CROWDPULSE_HISTORY_DB"):
            values["history_db"] = env["CROWDPULSE_HISTORY_DB"]
        if env.get("CROWDPULSE_HISTORY_WINDOW_S"):
            values["history_window_s"] = _int(env, "CROWDPULSE_HISTORY_WINDOW_S")
        if env.get("CROWDPULSE_HISTORY_RETENTION_DAYS"):
            values["history_retention_days"] = _int(env, "CROWDPULSE_HISTORY_RETENTION_DAYS")
        if env.get("CROWDPULSE_WEBHOOK_MAX_ATTEMPTS"):
            values["webhook_max_attempts"] = _int(env, "CROWDPULSE_WEBHOOK_MAX_ATTEMPTS")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"{name}={env[name]!r} is not an integer") from None
