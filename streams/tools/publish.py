"""`crowdpulse publish`: an operator's own events onto crowd.events, pseudonymised at this edge.

Reads raw events, one JSON object per line, from a file or standard input (the format:
producers/edge.py and docs/wire-format.md, "Publishing your own events"), replaces every
subscriber identifier by its keyed pseudonym (HMAC-SHA256 under the epoch key derived from the
secret in CROWDPULSE_PSEUDONYM_SECRET or --secret-file), adds the rotation's shadow copies,
cuts frames with sequence numbers per partition and publishes them. Prints a summary; exits 1 if
the broker did not take everything, 2 on a usage error. Lines it cannot read are reported with
their numbers and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from streams.core.errors import ConfigError

HELP = "publish your own events (JSON lines with subscriber ids) pseudonymised at this edge"
SECRET_ENV = "CROWDPULSE_PSEUDONYM_SECRET"
#: Lines read per batch (pseudonymised, framed and sent together).
BATCH_LINES = 20_000
#: Rejected lines printed (all are counted).
SHOW_REJECTED = 10
#: Seconds between progress lines on standard error.
PROGRESS_S = 5.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default="-",
                   help="file of events, one JSON object per line or CSV with a header (default: standard input)")
    p.add_argument("--csv", action="store_true", help="the input is CSV: subscriber,cell,ts,type[,m2m,home_cell,age_band] "
                                                       "with that header first (default: JSON lines; a .csv file is read as CSV)")
    p.add_argument("--secret-file", type=Path,
                   help=f"file holding the pseudonymisation secret (default: the {SECRET_ENV} variable); at least 16 bytes, "
                        "the same at every edge of one operator")


def read_secret(secret_file: Path | None) -> bytes:
    if secret_file is not None:
        try:
            secret = secret_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --secret-file: {exc.strerror}") from None
    else:
        secret = os.environ.get(SECRET_ENV, "").encode()
    if len(secret) < 16:
        raise ConfigError(f"a pseudonymisation secret of at least 16 bytes is required ({SECRET_ENV} or --secret-file)")
    return secret


def numbered_batches(stream: TextIO, size: int, first: int = 1) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for number, line in enumerate(stream, start=first):
        batch.append((number, line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(args: argparse.Namespace) -> int:
    from producers.edge import Edge, csv_header, parse_lines
    from producers.pseudonyms import KeySchedule
    from producers.publisher import DeliveryError, Framer, KafkaSink
    from streams.core.areas import load_areas
    from streams.core.settings import Settings
    from streams.core.topics import TopicNames
    from streams.runtime.preflight import check_kafka
    from streams.runtime.services import ensure_topics, topic_partitions

    settings = Settings.from_env()
    edge = Edge(KeySchedule(read_secret(args.secret_file), settings.rotation))
    if not settings.kafka:
        raise ConfigError("set CROWDPULSE_KAFKA (the broker to publish to)")
    if args.source != "-" and not Path(args.source).is_file():
        raise ConfigError(f"no such file: {args.source}")
    areas = load_areas(settings.areas_path)
    check_kafka(settings.kafka)
    ensure_topics(settings.kafka, topic_partitions(settings), security=settings.kafka_security.kafka_python_config())
    framer = Framer(secrets.randbits(63), settings.partitions, areas.cell_ids)
    sink = KafkaSink(settings.kafka, TopicNames(settings.topic_prefix).events, **settings.kafka_security.kafka_python_config())
    lines = rejected = shadows = 0
    reasons: dict[str, int] = {}
    stream = sys.stdin if args.source == "-" else open(args.source, encoding="utf-8")
    header = None
    last_progress = time.monotonic()
    try:
        if args.csv or args.source.endswith(".csv"):
            header = csv_header(stream.readline())
            lines = 1
        for batch in numbered_batches(stream, BATCH_LINES, first=lines + 1):
            parsed = parse_lines(batch, areas, header)
            lines += len(batch)
            for number, reason in parsed.rejected:
                if rejected < SHOW_REJECTED:
                    print(f"crowdpulse publish: line {number}: {reason}", file=sys.stderr)
                rejected += 1
                reasons[reason] = reasons.get(reason, 0) + 1
            events, shadow = edge.label(parsed)
            sink.send(framer.frames(events))
            sink.send(framer.frames(shadow, shadow=True))
            shadows += len(shadow)
            if time.monotonic() - last_progress >= PROGRESS_S:
                last_progress = time.monotonic()
                print(f"crowdpulse publish: {lines:,} lines, {sink.events - shadows:,} events sent, {rejected:,} lines refused",
                      file=sys.stderr, flush=True)
    except DeliveryError as exc:
        print(f"crowdpulse publish: {exc}; stopped after line {lines:,}", file=sys.stderr)
        return 1
    finally:
        if stream is not sys.stdin:
            stream.close()
        sink.close()
    summary = {"lines": lines, "rejected_lines": rejected, "rejected_by_reason": reasons, "events": sink.events - shadows,
               "shadow_events": shadows, "frames": sink.frames, "undelivered_events": sink.undelivered_events}
    print(json.dumps(summary), flush=True)
    if sink.undelivered_events:
        print(f"crowdpulse publish: {sink.undelivered_events:,} events were not delivered: {sink.last_error}", file=sys.stderr)
        return 1
    return 0
