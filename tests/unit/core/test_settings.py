"""Settings are read once from the environment, validated, and fail with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.core.settings import DEFAULT_AREAS, Settings


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert s.kafka is None and s.redis_url is None  # unset: the embedded services are started
    assert s.areas_path == DEFAULT_AREAS and s.http_port == 6066
    assert s.windows_s == (300, 900, 3600) and s.bucket_s == 60 and s.min_count == 15


def test_environment_is_read() -> None:
    s = Settings.from_env(
        {
            "CROWDPULSE_KAFKA": "k1:9092,k2:9092",
            "CROWDPULSE_REDIS": "rediss://r:6380/1",
            "CROWDPULSE_AREAS": "/tmp/city.json",
            "CROWDPULSE_HTTP_PORT": "7000",
            "CROWDPULSE_WINDOWS_S": "120,600",
            "CROWDPULSE_GRACE_S": "30",
            "CROWDPULSE_PEOPLE_MODEL": "devices",
            "CROWDPULSE_MARKET_SHARE": "0.25",
            "CROWDPULSE_SIMS_PER_PERSON": "1.2",
            "CROWDPULSE_SCALING_SE": "0.05",
            "CROWDPULSE_VISIBILITY_MODEL": "/tmp/model.npz",
            "CROWDPULSE_SPAN_BLOCKS": "off",
            "CROWDPULSE_REGISTER_WRITES": "0",
        }
    )
    assert (s.kafka, s.redis_url, s.areas_path, s.http_port) == ("k1:9092,k2:9092", "rediss://r:6380/1", Path("/tmp/city.json"), 7000)
    assert s.windows_s == (120, 600) and s.grace_s == 30
    assert (s.people_model, s.market_share, s.sims_per_person, s.scaling_se) == ("devices", 0.25, 1.2, 0.05)
    assert s.visibility_model_path == Path("/tmp/model.npz")
    assert (s.span_blocks, s.register_writes) == (False, False)
    assert (Settings.from_env({}).span_blocks, Settings.from_env({}).register_writes) == (True, True)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CROWDPULSE_HTTP_PORT": "http"}, "CROWDPULSE_HTTP_PORT='http' is not an integer"),
        ({"CROWDPULSE_HTTP_PORT": "70000"}, "not a TCP port"),
        ({"CROWDPULSE_WINDOWS_S": "300,90"}, "window 90s is not a whole number of 60s buckets"),
        ({"CROWDPULSE_WINDOWS_S": "five"}, "is not a list of seconds"),
        ({"CROWDPULSE_WINDOWS_S": "300,900"}, "the visibility model needs"),
        ({"CROWDPULSE_PEOPLE_MODEL": "magic"}, "people_model must be one of visibility, devices"),
        ({"CROWDPULSE_MARKET_SHARE": "1.5"}, "market_share must be in"),
        ({"CROWDPULSE_SIMS_PER_PERSON": "many"}, "CROWDPULSE_SIMS_PER_PERSON='many' is not a number"),
        ({"CROWDPULSE_NAMESPACE": "a:b"}, "namespace"),
        ({"CROWDPULSE_REGISTER_WRITES": "maybe"}, "CROWDPULSE_REGISTER_WRITES='maybe' is not on/off"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_overrides_win_and_unknown_ones_are_refused() -> None:
    assert Settings.from_env({"CROWDPULSE_HTTP_PORT": "7000"}, http_port=7001).http_port == 7001
    with pytest.raises(TypeError, match="unknown settings"):
        Settings.from_env({}, http_prot=1)
