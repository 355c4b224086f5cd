"""API access: bearer tokens with scopes, and JSON errors instead of stack traces.

Tokens come from CROWDPULSE_API_TOKENS ("<token>:<scope>+<scope>,..." for quick set-ups) and/or
CROWDPULSE_API_TOKENS_FILE (JSON, storing only SHA-256 digests of the tokens). With no tokens
configured the API is open, which is allowed on a loopback address only (Settings refuses
anything else). See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis
from aiohttp import web

from streams.core.errors import ConfigError

log = logging.getLogger(__name__)

SCOPES = ("estimates", "alerts", "ack", "metrics")

# (method, path pattern, scope). The first match decides; a path matching none needs a token
# with any scope, except the public ones (the dashboard's page and static files hold no data).
RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/api/alerts/[^/]+/ack/?$"), "ack"),
    ("GET", re.compile(r"^/api/alerts/?$"), "alerts"),
    ("GET", re.compile(r"^/api/(areas|stream|ingest|map)(/.*)?$"), "estimates"),
    ("GET", re.compile(r"^/api/alerts/[^/]+/?$"), "alerts"),
    ("GET", re.compile(r"^/metrics/?$"), "metrics"),
)
PUBLIC = re.compile(r"^/(static/.*|favicon\.ico)?$")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes  # SHA-256 of the token
    scopes: frozenset[str]


class TokenSet:
    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens = list(tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def scopes_of(self, presented: str) -> frozenset[str] | None:
        """The scopes of a presented token, or None if it is not one of ours (constant time per token)."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: frozenset[str] | None = None
        for token in self.tokens:
            if hmac.compare_digest(token.digest, digest):
                found = token.scopes
        return found

    @classmethod
    def from_config(cls, inline: str | None, path: Path | None) -> TokenSet:
        tokens: list[Token] = []
        if inline:
            for i, entry in enumerate(part.strip() for part in inline.split(",") if part.strip()):
                secret, sep, scopes = entry.rpartition(":")
                if not sep or not secret:
                    raise ConfigError(f"CROWDPULSE_API_TOKENS entry {i + 1}: expected <token>:<scope>[+<scope>]")
                tokens.append(Token(f"inline-{i + 1}", hashlib.sha256(secret.encode()).digest(), _scopes(scopes.split("+"), f"entry {i + 1}")))
        if path:
            try:
                doc = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read tokens file {path}: {exc}") from None
            for i, raw in enumerate(doc.get("tokens", []) if isinstance(doc, dict) else []):
                digest = raw.get("sha256", "") if isinstance(raw, dict) else ""
                if not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise ConfigError(f"{path}: tokens[{i}].sha256 must be 64 lower-case hex digits")
                granted = _scopes(raw.get("scopes", []), f"{path} tokens[{i}]")
                tokens.append(Token(str(raw.get("name", f"file-{i + 1}")), bytes.fromhex(digest), granted))
        return cls(tokens)


def _scopes(names: Iterable[str], where: str) -> frozenset[str]:
    scopes = frozenset(n.strip() for n in names if n.strip())
    unknown = scopes - set(SCOPES)
    if not scopes or unknown:
        raise ConfigError(f"{where}: scopes must be some of {', '.join(SCOPES)} (got {sorted(scopes)})")
    return scopes


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs; None for public paths; "any" for an unlisted path."""
    for rule_method, pattern, scope in RULES:
        if method == rule_method and pattern.match(path):
            return scope
    if method == "GET" and PUBLIC.match(path):
        return None
    return "any"


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


#: Redis being away, as redis-py reports it (redis_io.TRANSIENT_ERRORS; kept here so that the
#: web layer does not import the pipeline).
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middlewares(tokens: TokenSet) -> list:
    """aiohttp middlewares: errors as JSON (never a traceback), then the token check."""

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_error(exc.status, exc.reason or "error")
        except REDIS_AWAY as exc:
            # Redis away (restarting, failing over, loading its data): a temporary condition
            # the client can retry, not a server fault.
            log.warning("%s %s: Redis unavailable (%s)", request.method, request.path, exc)
            response = json_error(503, "the estimates store (Redis) is unavailable; retry shortly")
            response.headers["Retry-After"] = "5"
            return response
        except Exception:
            log.exception("error serving %s %s", request.method, request.path)
            return json_error(500, "internal error")

    @web.middleware
    async def bearer_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Views that mix kinds of data (the SSE stream carries estimates and alerts) read the
        # caller's scopes from the request to leave out what the token may not see.
        request["scopes"] = frozenset(SCOPES)
        if not tokens:
            return await handler(request)
        scope = required_scope(request.method, request.path)
        if scope is None:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            presented = header[len("Bearer "):].strip()
        elif request.path.rstrip("/") == "/api/stream" and "access_token" in request.query:
            # A browser's EventSource cannot send headers; SSE alone may take the token here.
            presented = request.query["access_token"]
        else:
            return json_error(401, "a bearer token is required")
        scopes = tokens.scopes_of(presented)
        if scopes is None:
            return json_error(401, "unknown token")
        if scope != "any" and scope not in scopes:
            return json_error(403, f"this token lacks the '{scope}' scope")
        request["scopes"] = scopes
        return await handler(request)

    return [json_errors, bearer_tokens]
