"""What the estimator publishes, kept in Redis: the snapshot of the latest estimate per area and
window that the API serves, each (area, window)'s recent series, the newest window end published
(the estimator's progress) and the differential-privacy budget spent per area and day. Reads
and writes JSON and small hashes only; it never touches a HyperLogLog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import cast

from streams.core.keys import KeyLayout
from streams.estimate.estimator import Estimate
from streams.pipeline.redis_io import Client, bulk, in_pieces, pack_command, send_routed

#: An area's points of one pass into their series (KEYS: each point's series; ARGV: per point its
#: window end, its JSON and the oldest window end its series keeps, then the series' expiry in
#: ms): the series' earlier point at the same window end out (a republished point replaces it),
#: the point in, points older than the series' span out, the expiry renewed. Run twice, the
#: same series.
SERIES_SCRIPT = """
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do
  local as_of, body, oldest = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  redis.call('ZREMRANGEBYSCORE', KEYS[i], as_of, as_of)
  redis.call('ZADD', KEYS[i], as_of, body)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. oldest)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
"""
_SERIES_SHA = b"$40\r\n%s\r\n" % hashlib.sha1(SERIES_SCRIPT.encode()).hexdigest().encode()
_EVALSHA = b"$7\r\nEVALSHA\r\n"


class EstimateStore:
    def __init__(self, client: Client, keys: KeyLayout) -> None:
        self.redis = client
        self.keys = keys

    async def published_through(self) -> int | None:
        raw = await self.redis.hget(self.keys.estimator_state, "published_through")
        return int(raw) if raw is not None else None

    async def set_published_through(self, bucket: int, wall_ms: int) -> None:
        """The estimator's progress, and when (wall clock) it was last published: every worker
        reports the same estimate age from it, whichever of them is the leader."""
        await self.redis.hset(self.keys.estimator_state, mapping={"published_through": bucket, "published_at_ms": wall_ms})

    async def published_at_ms(self) -> int | None:
        raw = await self.redis.hget(self.keys.estimator_state, "published_at_ms")
        return int(raw) if raw is not None else None

    async def save_estimates(self, estimates: Iterable[Estimate], current_as_of: int, series_span_ms: int) -> None:
        """Each (area, window)'s recent series, and the snapshot the API serves: the latter
        only from points at the current window end (a republished older point must not
        replace a newer one).

        An area's points of the pass go into its series in one script call (SERIES_SCRIPT), all
        the calls packed as raw commands and sent to the nodes that serve them: four pipelined
        commands per point cost the leader 2.1-2.5 s of CPU for 10,000 areas' 30,000 points,
        nearly all of it reading the 120,000 replies through redis-py (docs/performance.md)."""
        latest: dict[str, str] = {}
        series_of: dict[str, list[bytes]] = {}  # area -> its points' series keys
        args_of: dict[str, list[bytes]] = {}  # area -> per point: window end, JSON, oldest window end kept
        for estimate in estimates:
            body = json.dumps(estimate, separators=(",", ":"))
            area, as_of = estimate["area"], estimate["as_of"]
            if as_of == current_as_of:
                latest[f"{area}|{estimate['window_s']}"] = body
            series_of.setdefault(area, []).append(bulk(self.keys.area_series(area, estimate["window_s"])))
            args_of.setdefault(area, []).extend(bulk(a) for a in (str(as_of), body, str(as_of - series_span_ms)))
        if series_of:
            areas = list(series_of)
            ttl = bulk(str(series_span_ms + 3_600_000))

            def call(area: str) -> list[bytes]:
                keys, args = series_of[area], args_of[area]
                return [b"*%d\r\n" % (4 + len(keys) + len(args)), _EVALSHA, _SERIES_SHA, bulk(str(len(keys))), *keys, *args, ttl]

            def pack(indices: list[int]) -> list[tuple[bytes, int]]:
                # The script first (each node keeps it by its SHA1), then one call per area.
                load = (b"".join(pack_command("SCRIPT", "LOAD", SERIES_SCRIPT)), 1)
                return [load, *in_pieces([call(areas[i]) for i in indices], 1)]

            await send_routed(self.redis, [self.keys.area_series(a, 0) for a in areas], pack)
        if latest:
            await self.redis.hset(self.keys.latest_estimates, mapping=latest)  # type: ignore[arg-type]  # redis-py: invariant keys

    async def dp_spent(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], float]:
        """Epsilon already spent per (area, stream-time day)."""
        pairs = sorted(set(keys))
        pipe = self.redis.pipeline(transaction=False)
        for area, day in pairs:
            pipe.hget(self.keys.dp_budget(day), area)
        values = await pipe.execute() if pairs else []
        return {pair: float(v) for pair, v in zip(pairs, values) if v is not None}

    async def dp_charge(self, charges: dict[tuple[str, int], float]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for (area, day), epsilon in charges.items():
            pipe.hincrbyfloat(self.keys.dp_budget(day), area, epsilon)
            pipe.expire(self.keys.dp_budget(day), 3 * 86_400)  # a day's budget outlives the day
        if charges:
            await pipe.execute()

    async def latest_estimates(self) -> list[Estimate]:
        raw = await self.redis.hgetall(self.keys.latest_estimates)
        estimates = [json.loads(v) for v in raw.values()]
        return sorted(estimates, key=lambda e: (e["area"], e["window_s"]))

    async def series(self, area: str, window_s: int) -> list[Estimate]:
        raw = await self.redis.zrange(self.keys.area_series(area, window_s), 0, -1)
        return [json.loads(cast(bytes, v)) for v in raw]
