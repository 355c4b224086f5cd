"""What a user sees when a configured service is not there: one line naming the setting, from
the command line, within seconds (no retries for half a minute, no traceback)."""

from __future__ import annotations

import socket
import time

import pytest

from streams.cli import main
from streams.core.errors import ServiceUnavailable
from streams.runtime.preflight import check_kafka, check_port_free, check_redis, redacted
from streams.runtime.processes import free_port


def closed_port() -> int:
    return free_port()  # nothing listens there


def test_a_closed_kafka_port_is_one_line_naming_the_setting() -> None:
    port = closed_port()
    with pytest.raises(ServiceUnavailable, match=rf"cannot reach Kafka \(127.0.0.1:{port}: .*refused.*CROWDPULSE_KAFKA"):
        check_kafka(f"127.0.0.1:{port}")


def test_kafka_is_reached_through_any_bootstrap_server() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_kafka(f"127.0.0.1:{closed_port()},127.0.0.1:{listening.getsockname()[1]}")


def test_a_closed_redis_port_is_one_line_without_the_password() -> None:
    with pytest.raises(ServiceUnavailable) as refused:
        check_redis(f"redis://:s3cret@127.0.0.1:{closed_port()}/0", timeout=1)
    message = str(refused.value)
    assert "s3cret" not in message and ":***@127.0.0.1" in message and "CROWDPULSE_REDIS" in message
    assert "\n" not in message


def test_redacted_keeps_a_url_without_password() -> None:
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted("rediss://app:pw@redis.example:6380/1") == "rediss://app:***@redis.example:6380/1"


def test_a_taken_http_port_is_refused_and_a_free_one_is_not() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceUnavailable, match=f"HTTP port {port} on 127.0.0.1 is in use.*CROWDPULSE_HTTP_PORT"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", closed_port())


@pytest.mark.parametrize("argv", [
    ["simulate"],
    ["worker", "--http-port", "0"],  # replaced below by a free port
    ["demo", "--duration", "5"],
])
def test_commands_with_an_unreachable_kafka_fail_in_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CROWDPULSE_KAFKA", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("CROWDPULSE_REDIS", f"redis://127.0.0.1:{closed_port()}/0")
    argv = [str(free_port()) if a == "0" else a for a in argv]
    started = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert err.startswith("crowdpulse: cannot reach Kafka") and err.count("\n") == 1, err


def test_a_worker_with_an_unreachable_redis_fails_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as kafka_like:  # something listening where Kafka is configured
        kafka_like.bind(("127.0.0.1", 0))
        kafka_like.listen()
        monkeypatch.setenv("CROWDPULSE_KAFKA", f"127.0.0.1:{kafka_like.getsockname()[1]}")
        monkeypatch.setenv("CROWDPULSE_REDIS", f"redis://127.0.0.1:{closed_port()}/0")
        assert main(["worker", "--http-port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crowdpulse: cannot use Redis at redis://127.0.0.1:") and err.count("\n") == 1, err


@pytest.mark.parametrize(("args", "message"), [
    (["--devices", "-5"], "--devices must be a positive number"),
    (["--speedup", "-1"], "--speedup must be a positive number"),
    (["--speedup", "0"], "--speedup must be a positive number"),
    (["--duration", "-3"], "--duration must be a positive number"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_the_demo_refuses_bad_arguments_before_starting_anything(args: list[str], message: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *args]) == 2
    assert message in capsys.readouterr().err


def test_simulate_allows_flat_out_but_not_a_negative_speedup(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--speedup", "-1"]) == 2
    assert "--speedup must be 0 (as fast as possible) or a positive number" in capsys.readouterr().err


def test_the_demo_refuses_a_taken_port(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("CROWDPULSE_HTTP_PORT", str(taken.getsockname()[1]))
        assert main(["demo", "--duration", "5"]) == 2
    assert "is in use" in capsys.readouterr().err
