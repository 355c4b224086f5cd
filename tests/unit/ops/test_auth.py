"""API tokens and scopes (streams/ops/auth.py), and the refusal to serve an open API off loopback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from streams.core.settings import Settings
from streams.ops.auth import TokenSet, required_scope


def test_inline_and_file_tokens_carry_their_scopes(tmp_path: Path) -> None:
    file = tmp_path / "tokens.json"
    digest = hashlib.sha256(b"ops-room-secret").hexdigest()
    file.write_text(json.dumps({"tokens": [{"name": "ops", "sha256": digest, "scopes": ["alerts", "ack"]}]}))
    tokens = TokenSet.from_config("reader-secret:estimates+metrics", file)
    assert tokens.scopes_of("reader-secret") == {"estimates", "metrics"}
    assert tokens.scopes_of("ops-room-secret") == {"alerts", "ack"}
    assert tokens.scopes_of("guess") is None
    assert not TokenSet.from_config(None, None)


@pytest.mark.parametrize(
    "inline, message",
    [
        ("no-scope-separator", "expected <token>:<scope>"),
        ("tok:read", "scopes must be some of"),
        ("tok:", "scopes must be some of"),
    ],
)
def test_bad_token_configuration_is_refused(inline: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenSet.from_config(inline, None)


def test_a_tokens_file_must_hold_digests_not_tokens(tmp_path: Path) -> None:
    file = tmp_path / "tokens.json"
    file.write_text(json.dumps({"tokens": [{"sha256": "plain-token", "scopes": ["estimates"]}]}))
    with pytest.raises(ValueError, match="64 lower-case hex digits"):
        TokenSet.from_config(None, file)


@pytest.mark.parametrize(
    "method, path, scope",
    [
        ("GET", "/api/areas", "estimates"),
        ("GET", "/api/areas/stadium", "estimates"),
        ("GET", "/api/stream", "estimates"),
        ("GET", "/api/alerts", "alerts"),
        ("GET", "/api/alerts/stadium.capacity.warn.1", "alerts"),
        ("GET", "/api/map", "estimates"),
        ("POST", "/api/alerts/a1b2/ack", "ack"),
        ("GET", "/metrics", "metrics"),
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/api/unknown", "any"),
        ("POST", "/api/areas", "any"),
    ],
)
def test_each_path_needs_its_scope(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope


def test_an_open_api_off_loopback_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="refusing to serve the API on 0.0.0.0 without access control"):
        Settings.from_env({"CROWDPULSE_HTTP_HOST": "0.0.0.0"})
    assert Settings.from_env({"CROWDPULSE_HTTP_HOST": "0.0.0.0", "CROWDPULSE_API_TOKENS": "t:estimates"}).http_host == "0.0.0.0"
