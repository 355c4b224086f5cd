"""The HyperLogLogs in Redis and the bookkeeping that goes with them: a batch's PFADDs and its
accounting (applied offsets, watermarks, statistics, frame sequences), the (area, bucket) pairs
changed since the estimator last looked, and span counts (PFCOUNT over bucket keys).

HyperLogLog registers never leave this module: callers get counts, never keys' contents. What
the estimator publishes lives in streams/pipeline/estimate_store.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence, Set

import numpy as np
import redis.asyncio as aioredis

from streams.core import hll
from streams.core.areas import area_shard
from streams.core.blocks import BLOCK_BUCKETS, block_range, span_pieces
from streams.core.keys import KeyLayout
from streams.core.windows import Span
from streams.pipeline.ingest import BatchPlan, HllAdds, PartitionState
from streams.pipeline.redis_io import COMMANDS_PER_PIPELINE, Client, bulk, in_pieces, pack_command, send_packed, send_routed, text

STAT_FIELDS = ("events_in", "counted", "deadletter", "late", "sequence_gaps", "sequence_repeats", "frames")

# One member as a RESP bulk string: "$8\r\n", the device's 8 bytes, "\r\n".
_MEMBER_FRAME = np.frombuffer(b"$8\r\n" + bytes(8) + b"\r\n", dtype=np.uint8)
_MEMBER_SIZE = len(_MEMBER_FRAME)
#: A key with more members in one batch gets several PFADDs (0.9 MB each at most).
MAX_MEMBERS_PER_PFADD = 1 << 16
#: A batch's commands go out in pieces of about this many bytes, one piece queued behind the one
#: Redis is running. Redis reads a pipeline only as fast as it runs it, and redis-py gives each
#: socket write 5 s (its default socket_timeout): a batch of large frames sent whole could take
#: Redis longer than that, time out, be retried, and time out again.
PIPELINE_CHUNK_BYTES = 4 << 20
#: A key that gets at least this many members in one batch is made dense. Redis starts every
#: HyperLogLog in its sparse encoding, where each PFADD member costs a scan of the whole key, and
#: converts it to dense once it outgrows hll-sparse-max-bytes (3,000 bytes by default, about
#: 1,600 devices); a key this big would be converted anyway, so the quadratic sparse phase is
#: pure cost (about a quarter of Redis' CPU on the bench data, docs/performance.md). Smaller
#: keys keep the memory-saving sparse encoding.
#:
#: Such a key is also written as its registers (the register path, streams/core/hll.py): the
#: worker hashes the members as Redis would, sends the 16,384 registers as one dense HyperLogLog
#: to a staging key, and Redis merges it with PFMERGE. Measured here (redis-server's CPU):
#: PFADD costs 60-110 ns a member, almost all of it reading the member as an argument; the
#: register path 50-80 us a key whatever its members. One threshold for both: the merge makes
#: the key dense, and these keys are made dense anyway, so no key's encoding (memory, and which
#: five-minute blocks are merged) depends on how its members were sent; a lower threshold for
#: the registers would make it depend on how the stream happened to be cut into batches.
DENSE_FROM_MEMBERS = 2_000
# An empty HyperLogLog in Redis' dense encoding (streams/core/hll.py). Written with SET NX only
# where the key does not exist yet, so it never replaces counts.
EMPTY_DENSE_HLL = hll.DENSE_HEADER + bytes(hll.DENSE_BYTES - len(hll.DENSE_HEADER))
#: Every dense HyperLogLog is this long (STRLEN); a sparse one is shorter.
DENSE_HLL_BYTES = hll.DENSE_BYTES
#: A staging key lives this long at most (deleted right after its PFMERGE; this only bounds
#: what a worker that dies between the two leaves behind).
STAGING_TTL_MS = 60_000


def pack_hll_adds(
    adds: HllAdds,
    max_members: int = MAX_MEMBERS_PER_PFADD,
    dense_from: int = DENSE_FROM_MEMBERS,
    chunk_bytes: int = PIPELINE_CHUNK_BYTES,
    staging: Callable[[str], str] | None = None,
) -> list[tuple[bytes, int]]:
    """The RESP bytes of every key's writes of a batch (and the key's PEXPIREAT), as pieces of
    about `chunk_bytes`, each with the number of commands it holds.

    A key with fewer than `dense_from` members (or every key, without `staging`) gets its
    members with PFADD, created dense first if it has at least `dense_from`. redis-py packs a
    command argument by argument in Python, about a microsecond per member; here numpy lays out
    all members in one array (a memory copy per member) and Python only writes a header per key.

    A larger key, given `staging` (a key -> its staging key in the same slot, unique to this
    writer), is written as its registers: SET staging <dense HyperLogLog> PX, PFMERGE key
    staging, DEL staging. PFMERGE keeps each register's maximum, so the key ends with exactly
    the registers the PFADDs would have left, and a replayed batch changes nothing (idempotent,
    like PFADD). The staging key is the writer's own: two workers writing one area's key at
    once never merge each other's registers twice or miss them.
    """
    lengths = np.diff(adds.starts)
    big = np.flatnonzero(lengths >= dense_from) if staging is not None else np.zeros(0, dtype=np.int64)
    chunks: list[tuple[bytes, int]] = []
    parts: list[bytes | memoryview] = []
    size = commands = 0

    def command(*pieces: bytes | memoryview) -> None:
        nonlocal size, commands
        parts.extend(pieces)
        size += sum(len(piece) for piece in pieces)
        commands += 1
        if size >= chunk_bytes:
            chunks.append((b"".join(parts), commands))
            parts.clear()
            size = commands = 0

    def expire(name: bytes, at_ms: int) -> None:
        when = b"%d" % at_ms
        command(b"*3\r\n$9\r\nPEXPIREAT\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(name), name, len(when), when))

    if len(big):
        assert staging is not None
        px = bulk(str(STAGING_TTL_MS))
        for i, blob in zip(big.tolist(), _register_strings(adds.take(big.tolist())), strict=True):
            key, stage = adds.keys[i], staging(adds.keys[i])
            command(b"*5\r\n$3\r\nSET\r\n", bulk(stage), b"$%d\r\n" % len(blob), blob, b"\r\n$2\r\nPX\r\n", px)
            command(*pack_command("PFMERGE", key, stage))
            command(*pack_command("DEL", stage))
            expire(key.encode(), adds.expire_at_ms[i])
        small = np.flatnonzero(lengths < dense_from)
        adds = adds.take(small.tolist())
    n = len(adds.members)
    body = np.empty((n, _MEMBER_SIZE), dtype=np.uint8)
    body[:] = _MEMBER_FRAME
    body[:, 4:12] = adds.members.view(np.uint8).reshape(n, 8)
    flat = body.reshape(-1).data
    starts = adds.starts.tolist()
    dense = b"$%d\r\n%s\r\n$2\r\nNX\r\n" % (len(EMPTY_DENSE_HLL), EMPTY_DENSE_HLL)
    for i, key in enumerate(adds.keys):
        name = key.encode()
        if starts[i + 1] - starts[i] >= dense_from:
            command(b"*4\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(name), name), dense)
        for lo in range(starts[i], starts[i + 1], max_members):
            hi = min(starts[i + 1], lo + max_members)
            header = b"*%d\r\n$5\r\nPFADD\r\n$%d\r\n%s\r\n" % (hi - lo + 2, len(name), name)
            command(header, flat[lo * _MEMBER_SIZE : hi * _MEMBER_SIZE])
        expire(name, adds.expire_at_ms[i])
    if parts:
        chunks.append((b"".join(parts), commands))
    return chunks


def _register_strings(adds: HllAdds) -> list[bytes]:
    """The dense HyperLogLog of each key's members, in key order (one numpy pass over all their
    members: hash, register maximum per key, 6-bit packing).

    Memory: 16 KB of registers and 12 KB of string per key. The keys given have 2,000 members
    or more and a batch is cut at batch_max_bytes (1,000,000 records by default), so a batch
    whose events each land in five areas gives at most 2,500 keys: about 70 MB."""
    rows = np.repeat(np.arange(len(adds), dtype=np.int64), np.diff(adds.starts))
    index, rank = hll.register_and_rank(adds.members)
    return hll.dense_strings(hll.registers_of(index, rank, rows, len(adds)))


def pack_span_requests(
    keys: KeyLayout, requests: Sequence[tuple[tuple[str, int], Sequence[Span]]], chunk_commands: int = COMMANDS_PER_PIPELINE,
    declared: frozenset[int] | None = None, blocks: Mapping[str, Mapping[str, Set[int]]] | None = None,
) -> list[tuple[bytes, int]]:
    """The RESP bytes of one PFCOUNT per (point, span) of each request (a point and its spans),
    in order, as pieces of `chunk_commands` commands. A pass counts every changed area over
    ~20 spans of up to 60 bucket keys each (windows, the visibility curve, segments): redis-py
    would encode ~180,000 key names one by one (0.3 s for 300 areas here). Here each (point,
    segment) builds its bucket keys once, as RESP tokens in bucket order, and every span is a
    slice of them.

    `blocks`: per area and segment, the blocks merged in Redis (streams/core/blocks.py): a span
    reads each whole one as its block key instead of its buckets' keys (the same count)."""
    bucket_s = keys.bucket_s
    chunks: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    commands = 0
    for (area, bucket), spans in requests:
        if not spans:
            continue
        lookback_s = max(span.skip_s + span.length_s for span in spans)
        lookback = lookback_s // bucket_s
        first = bucket - lookback + 1
        merged = blocks.get(area, {}) if blocks else {}
        tokens: dict[str, list[bytes]] = {}
        shadows: dict[str, list[bool]] = {}
        for span in spans:
            segment = span.segment
            if segment not in tokens:
                layout = keys.span_buckets(bucket, 0, lookback_s, declared)  # oldest first
                tokens[segment] = [bulk(keys.area_bucket(area, b, shadow, segment)) for b, shadow in layout]
                shadows[segment] = [shadow for _, shadow in layout]
            end = lookback - span.skip_s // bucket_s
            start = end - span.length_s // bucket_s
            usable = merged.get(segment)
            if usable:
                selected = [
                    bulk(keys.area_block(area, index, segment)) if is_block else tokens[segment][index - first]
                    for is_block, index in span_pieces(first + start, first + end - 1, shadows[segment][start:end], usable)
                ]
            else:
                selected = tokens[segment][start:end]
            parts.append(b"*%d\r\n$7\r\nPFCOUNT\r\n" % (len(selected) + 1))
            parts.extend(selected)
            commands += 1
            if commands == chunk_commands:
                chunks.append((b"".join(parts), commands))
                parts.clear()
                commands = 0
    if parts:
        chunks.append((b"".join(parts), commands))
    return chunks


def stream_time(watermarks: dict[int, int | None]) -> int | None:
    """Stream time: the highest watermark of any partition (None before any)."""
    known = [m for m in watermarks.values() if m is not None]
    return max(known) if known else None


class HllStore:
    def __init__(self, client: Client, keys: KeyLayout, shards: int = 1, broadcast: Iterable[str] = (),
                 register_writes: bool = True) -> None:
        self.redis = client
        self.keys = keys
        #: Large keys of a batch are written as registers (pack_hll_adds) through staging keys
        #: named for this store; off: every member by PFADD (the bench's baseline).
        writer = secrets.token_hex(6)
        self.staging: Callable[[str], str] | None = (lambda key: keys.staging(key, writer)) if register_writes else None
        #: Estimator shards (the crowd.events partitions): an area's changes go to the dirty set
        #: of its shard (areas.area_shard), those of a `broadcast` area (the people model's
        #: reference, which every counter reads) to every shard's.
        self.shards = shards
        self.broadcast = frozenset(broadcast)
        #: Epochs the feed declared (refresh_declared); none until it says so: whole windows.
        self.declared: frozenset[int] = frozenset()

    # --- ingest -------------------------------------------------------------------------------
    async def load_partition(self, partition: int) -> tuple[PartitionState, dict[str, int]]:
        """What a previous owner of this partition left: applied offset, watermark, sequences."""
        raw = await self.redis.hget(self.keys.ingest_state, str(partition))
        state = parse_partition(raw)
        sequences = {
            text(name): int(value)
            for name, value in (await self.redis.hgetall(self.keys.producer_sequences)).items()
            if text(name).endswith(f":{partition}")
        }
        return state, sequences

    async def apply(self, plan: BatchPlan) -> None:
        """Write a batch: HyperLogLogs first, then the bookkeeping in one transaction.

        The order matters for at-least-once delivery: if the process dies between the two, the
        batch is redelivered and re-added (PFADD is idempotent) and only then accounted for.
        """
        await self.write_adds(plan)
        await self.write_books(plan)

    async def write_adds(self, plan: BatchPlan) -> None:
        """A batch's HyperLogLog adds and the (area, bucket) pairs they made dirty. One Redis:
        all in one pipelined send. A cluster: each node's keys to that node (concurrently),
        then the dirty pairs (their own slot)."""
        if not len(plan.adds):
            return
        dirty = self.dirty_by_shard(plan.dirty_buckets)
        if isinstance(self.redis, aioredis.RedisCluster):
            adds = plan.adds
            await send_routed(self.redis, adds.keys, lambda indices: pack_hll_adds(adds.take(indices), staging=self.staging))
            if dirty:
                pipe = self.redis.pipeline(transaction=False)
                for shard, members in dirty.items():
                    pipe.sadd(self.keys.dirty_buckets(shard), *members)
                await pipe.execute()
            return
        chunks = pack_hll_adds(plan.adds, staging=self.staging)
        for shard, members in dirty.items():
            chunks.append((b"".join(pack_command("SADD", self.keys.dirty_buckets(shard), *members)), 1))
        await send_packed(self.redis, chunks)

    def dirty_by_shard(self, pairs: Iterable[tuple[str, int]]) -> dict[int, list[str]]:
        """(area, bucket) pairs as dirty-set members per estimator shard."""
        out: dict[int, list[str]] = {}
        for area, bucket in sorted(pairs):
            member = f"{area}|{bucket}"
            for shard in range(self.shards) if area in self.broadcast else (area_shard(area, self.shards),):
                out.setdefault(shard, []).append(member)
        return out

    async def write_books(self, plan: BatchPlan) -> None:
        """A batch's bookkeeping in one transaction: partition states, books, sequences."""
        if not plan.partitions:
            return
        tx = self.redis.pipeline(transaction=True)
        tx.hset(
            self.keys.ingest_state,
            mapping={
                str(p): f"{s.applied_offset}:{'' if s.watermark_ms is None else s.watermark_ms}"
                for p, s in plan.partitions.items()
            },
        )
        for name, value in plan.stats.items():
            if value:
                tx.hincrby(self.keys.ingest_stats, name, value)
        for reason, value in plan.reasons.items():
            tx.hincrby(self.keys.ingest_stats, f"deadletter:{reason}", value)
        if plan.declared_epochs:
            tx.hset(self.keys.declared_rotations, mapping={str(e): 1 for e in sorted(plan.declared_epochs)})
        if plan.sequences:
            tx.hset(self.keys.producer_sequences, mapping=plan.sequences)  # type: ignore[arg-type]  # redis-py types mapping keys invariantly
        await tx.execute()

    async def save_partitions(self, states: dict[int, PartitionState], sequences: dict[str, int]) -> None:
        """Put partition states and frame sequences back (after Redis lost them: the worker's
        own are the newest there are)."""
        await self.write_books(BatchPlan(partitions=dict(states), sequences=dict(sequences)))

    async def generation(self) -> bytes:
        """The token that marks this Redis' data (KeyLayout.generation), set now if missing."""
        await self.redis.set(self.keys.generation, secrets.token_hex(8), nx=True)
        token = await self.redis.get(self.keys.generation)
        return token.encode() if isinstance(token, str) else token or b""

    async def set_rebuilding(self, partitions: Iterable[int], ttl_s: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.keys.rebuilding, *[str(p) for p in partitions])
        pipe.expire(self.keys.rebuilding, ttl_s)
        await pipe.execute()

    async def done_rebuilding(self, partitions: Iterable[int]) -> None:
        await self.redis.srem(self.keys.rebuilding, *[str(p) for p in partitions])

    async def rebuilding(self) -> int:
        """How many partitions are being rebuilt (the estimator waits for them)."""
        return int(await self.redis.scard(self.keys.rebuilding))

    async def drop(self, keys: Sequence[str]) -> int:
        """UNLINK keys (in pieces); returns how many existed."""
        dropped = 0
        for start in range(0, len(keys), COMMANDS_PER_PIPELINE):
            dropped += int(await self.redis.unlink(*keys[start : start + COMMANDS_PER_PIPELINE]))
        return dropped

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.ingest_stats)
        stats = {name: 0 for name in STAT_FIELDS}
        stats.update({text(k): int(v) for k, v in raw.items()})
        return stats

    async def stream_now_ms(self) -> int | None:
        """Stream time: the highest watermark of any partition."""
        return stream_time(await self.watermarks())

    # --- estimator ----------------------------------------------------------------------------
    async def refresh_declared(self) -> frozenset[int]:
        """Read the pseudonym epochs the feed has declared (KeyLayout.declared_rotations); the
        window counts that follow read shadow keys only across those epochs' starts."""
        raw = await self.redis.hkeys(self.keys.declared_rotations)
        self.declared = frozenset(int(text(e)) for e in raw)
        return self.declared

    async def pop_dirty(self, shards: Iterable[int]) -> set[tuple[str, int]]:
        """The (area, bucket) pairs of these estimator shards that received events since the
        last call."""
        pairs: set[tuple[str, int]] = set()
        for shard in shards:
            key = self.keys.dirty_buckets(shard)
            tx = self.redis.pipeline(transaction=True)
            # As raw commands: redis-py 8.1's cluster transactions call a reply's callback with
            # the command's keyword arguments, which SMEMBERS' callback does not take.
            tx.execute_command("SMEMBERS", key)
            tx.execute_command("DEL", key)
            members, _ = await tx.execute()
            for area, _, bucket in (text(m).rpartition("|") for m in members):
                pairs.add((area, int(bucket)))
        return pairs

    async def any_dirty(self) -> bool:
        """Is any shard's dirty set non-empty (a counter has work)?"""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.exists(self.keys.dirty_buckets(shard))
        return any(await pipe.execute())

    async def partition_states(self) -> dict[int, PartitionState]:
        """Every partition's applied offset and watermark, read at once (one HGETALL): a pass
        that needs both sees them as of the same moment."""
        raw = await self.redis.hgetall(self.keys.ingest_state)
        return {int(p): parse_partition(v) for p, v in raw.items()}

    async def watermarks(self) -> dict[int, int | None]:
        """Every partition's watermark as last applied: stream time (stream_time) and the
        estimator's sealing (estimator.sealed_through) both come from them."""
        return {p: state.watermark_ms for p, state in (await self.partition_states()).items()}

    async def record_highwaters(self, highwaters: dict[int, int], now_ms: int) -> None:
        """The log end of each partition this worker owns, as its consumer last fetched it, for
        every worker's estimator to tell a partition with a backlog from one caught up."""
        if highwaters:
            await self.redis.hset(self.keys.ingest_highwaters, mapping={p: f"{h}:{now_ms}" for p, h in highwaters.items()})

    async def highwaters(self) -> dict[int, tuple[int, int]]:
        """Every partition's recorded log end and when (wall ms) it was recorded."""
        raw = await self.redis.hgetall(self.keys.ingest_highwaters)
        out = {}
        for p, v in raw.items():
            end, _, at = (v.decode() if isinstance(v, bytes) else v).partition(":")
            out[int(p)] = (int(end), int(at))
        return out

    async def applied_offsets(self) -> dict[int, int]:
        """Every partition's newest applied offset (-1: none), whichever worker applied it."""
        return {p: state.applied_offset for p, state in (await self.partition_states()).items()}

    async def data_since(self, area: str, buckets: Iterable[int], span_s: int) -> dict[int, int | None]:
        """For each window end (newest bucket), the oldest bucket of the `span_s` ending there
        in which `area` has data (its key exists; None: none). The estimator asks it of the
        whole network's area: a stream that began, or came back after a silence, inside the
        span has not filled the windows yet (streams/estimate/estimator.py, `warming_up`)."""
        spans = {b: self.keys.area_span(area, b, 0, span_s, declared=self.declared) for b in sorted(set(buckets))}
        keys = sorted({k for span in spans.values() for k in span})
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        present = {k for k, n in zip(keys, await pipe.execute() if keys else []) if n}
        first_bucket = {b: b - len(span) + 1 for b, span in spans.items()}
        return {
            b: next((first_bucket[b] + i for i, key in enumerate(span) if key in present), None)
            for b, span in spans.items()
        }

    async def window_counts(
        self, points: Sequence[tuple[str, int]], windows_s: Sequence[int]
    ) -> dict[tuple[str, int, int], int]:
        """PFCOUNT over each (area, newest bucket, window)'s bucket keys, pipelined; Redis
        merges the registers on the fly and they never leave Redis."""
        counts = await self.span_counts(points, [Span.window(w) for w in windows_s])
        return {(area, bucket, span.length_s): n for (area, bucket, span), n in counts.items()}

    async def span_counts(
        self, points: Sequence[tuple[str, int]], spans: Sequence[Span]
    ) -> dict[tuple[str, int, Span], int]:
        """PFCOUNT of each (area, newest bucket) over each span (skip_s, length_s[, segment]):
        the buckets of length_s ending skip_s before the window end (KeyLayout.area_span), of
        the area's total or of one of its segments. Packed like the ingest's writes
        (pack_span_requests), sent in bounded pieces on one connection."""
        return await self.count_spans([(point, spans) for point in points])

    async def count_spans(
        self, requests: Sequence[tuple[tuple[str, int], Sequence[Span]]],
        blocks: Mapping[str, Mapping[str, Set[int]]] | None = None,
    ) -> dict[tuple[str, int, Span], int]:
        """PFCOUNT of each request's point over each of its own spans (span_counts, with a
        list of spans per point); `blocks`: the blocks merged per area and segment, read whole
        (pack_span_requests)."""
        requests = [request for request in requests if request[1]]
        if not requests:
            return {}
        # Any key of an area names its slot: all of them share the area's hash tag.
        slots = [self.keys.area_bucket(area, bucket) for (area, bucket), _ in requests]
        groups = await send_routed(
            self.redis, slots,
            lambda indices: pack_span_requests(self.keys, [requests[i] for i in indices], declared=self.declared, blocks=blocks),
            replies=True)
        counts: dict[tuple[str, int, Span], int] = {}
        for indices, replies in groups:
            triples = [(area, bucket, span) for (area, bucket), spans in (requests[i] for i in indices) for span in spans]
            counts.update(zip(triples, map(int, replies)))
        return counts

    # --- blocks (streams/core/blocks.py) ----------------------------------------------------
    async def dense_blocks(self, candidates: Sequence[tuple[str, str, int]]) -> list[bool]:
        """For each (area, segment, block): are its bucket keys dense, at least two of them and
        none sparse (STRLEN: a dense HyperLogLog is DENSE_HLL_BYTES long, a missing key 0)? A
        merged block is dense; merging it pays off only where its buckets' keys are too."""
        if not candidates:
            return []
        names = [[self.keys.area_bucket(area, b, segment=segment) for b in block_range(block)]
                 for area, segment, block in candidates]
        groups = await send_routed(
            self.redis, [n[0] for n in names],
            lambda indices: in_pieces([[part for name in names[i] for part in pack_command("STRLEN", name)] for i in indices],
                                       BLOCK_BUCKETS),
            replies=True)
        out = [False] * len(candidates)
        for indices, replies in groups:
            for j, i in enumerate(indices):
                lengths = [int(n) for n in replies[j * BLOCK_BUCKETS : (j + 1) * BLOCK_BUCKETS]]
                present = [n for n in lengths if n]
                out[i] = len(present) >= 2 and all(n == DENSE_HLL_BYTES for n in present)
        return out

    async def merge_blocks(self, blocks: Sequence[tuple[str, str, int]], expire_at_ms: Mapping[int, int]) -> None:
        """PFMERGE each (area, segment, block)'s bucket keys into its block key, which expires
        with the block's last bucket (`expire_at_ms`: per block). Merging again is harmless: a
        block key only ever gains the registers of its own buckets."""
        if not blocks:
            return

        def pack(indices: list[int]) -> list[tuple[bytes, int]]:
            items = []
            for i in indices:
                area, segment, block = blocks[i]
                name = self.keys.area_block(area, block, segment)
                items.append([*pack_command("PFMERGE", name, *(self.keys.area_bucket(area, b, segment=segment) for b in block_range(block))),
                              *pack_command("PEXPIREAT", name, str(expire_at_ms[block]))])
            return in_pieces(items, 2)

        await send_routed(self.redis, [self.keys.area_block(a, b, seg) for a, seg, b in blocks], pack)


def parse_partition(raw: bytes | str | None) -> PartitionState:
    """A partition's entry of the ingest state hash ("<applied offset>:<watermark>")."""
    if not raw:
        return PartitionState()
    offset, _, watermark = text(raw).partition(":")
    return PartitionState(int(offset), int(watermark) if watermark else None)
