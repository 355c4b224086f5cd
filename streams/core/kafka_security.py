"""Kafka transport security (SASL_SSL with SCRAM, or SSL) for both client libraries, from one
set of settings. See docs/security.md.

Nothing here can be exercised against the embedded broker, which runs without authentication on
loopback; the mapping to each library's options is unit-tested.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from streams.core.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"CROWDPULSE_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
        if self.protocol == "SASL_SSL":
            if self.sasl_mechanism not in MECHANISMS:
                raise ConfigError(f"CROWDPULSE_KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}")
            if not (self.username and self.password):
                raise ConfigError("SASL_SSL needs CROWDPULSE_KAFKA_USERNAME and CROWDPULSE_KAFKA_PASSWORD")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        return cls(
            protocol=env.get("CROWDPULSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=env.get("CROWDPULSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper(),
            username=env.get("CROWDPULSE_KAFKA_USERNAME") or None,
            password=env.get("CROWDPULSE_KAFKA_PASSWORD") or None,
            ca_file=env.get("CROWDPULSE_KAFKA_CA") or None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def kafka_python_config(self) -> dict[str, object]:
        """Options for kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
        if self.protocol == "PLAINTEXT":
            return {}
        config: dict[str, object] = {"security_protocol": self.protocol, "ssl_cafile": self.ca_file}
        if self.protocol == "SASL_SSL":
            config.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username, sasl_plain_password=self.password)
        return config
