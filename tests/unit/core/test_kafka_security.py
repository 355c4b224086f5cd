"""Kafka security settings map onto both client libraries' options."""

from __future__ import annotations

import faust
import pytest

from streams.core.kafka_security import KafkaSecurity
from streams.runtime.app import faust_credentials


def test_plaintext_adds_nothing() -> None:
    security = KafkaSecurity.from_env({})
    assert security.kafka_python_config() == {} and faust_credentials(security) is None


def test_sasl_ssl_scram_for_both_clients() -> None:
    security = KafkaSecurity.from_env(
        {
            "CROWDPULSE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "CROWDPULSE_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "CROWDPULSE_KAFKA_USERNAME": "crowdpulse-worker",
            "CROWDPULSE_KAFKA_PASSWORD": "pw",
        }
    )
    assert security.kafka_python_config() == {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": None,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "crowdpulse-worker",
        "sasl_plain_password": "pw",
    }
    credentials = faust_credentials(security)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.username == "crowdpulse-worker"
    assert credentials.ssl_context is not None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CROWDPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "must be one of"),
        ({"CROWDPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs CROWDPULSE_KAFKA_USERNAME"),
        ({"CROWDPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CROWDPULSE_KAFKA_SASL_MECHANISM": "GSSAPI",
          "CROWDPULSE_KAFKA_USERNAME": "u", "CROWDPULSE_KAFKA_PASSWORD": "p"}, "SASL_MECHANISM must be one of"),
    ],
)
def test_incomplete_security_settings_are_refused(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSecurity.from_env(env)
