"""Redis access control and TLS, against real redis-server processes.

ACL: the shipped users file (deploy/redis/users.acl) gives the workers what they need and the
readers nothing but published estimates. TLS: Debian's redis-server (the PyPI one is built
without TLS) with a certificate made here by openssl; `make test` installs it (scripts/system-packages.sh).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from streams.core.areas import load_areas
from streams.core.keys import KeyLayout
from streams.core.settings import Settings
from streams.core.wire import RECORD_DTYPE, frame_bytes
from streams.estimate.estimator import PointRecord
from streams.pipeline.estimate_store import EstimateStore
from streams.pipeline.hll_store import DENSE_FROM_MEMBERS, HllStore
from streams.pipeline.ingest import Ingestor, Message
from streams.pipeline.redis_io import connect
from streams.pipeline.stage_store import StageStore
from streams.runtime.processes import ManagedProcess, free_port
from streams.runtime.services import start_redis, wait_for_redis

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
ACL_FILE = REPO / "deploy" / "redis" / "users.acl"
DEVICES = 2_500


def some_plan(settings: Settings):
    areas = load_areas(settings.areas_path)
    # 2,500 devices: the whole city's key gets more than 2,000 in the batch, so it is written as
    # registers (SET of a staging key, PFMERGE, DEL), the others by PFADD.
    records = np.zeros(DEVICES, dtype=RECORD_DTYPE)
    records["device"] = (np.arange(1, DEVICES + 1, dtype=np.uint64) * 0x9E3779B97F4A7C15).view("V8")
    now = int(time.time() * 1000)  # the plan's key expiry is laid on this wall clock
    records["ts"] = now
    records["cell"] = np.resize(areas.cell_ids[:50], DEVICES)
    records["type"] = 4
    return Ingestor(settings, areas).plan([Message("crowd.events", 0, 0, None, frame_bytes(records, 1, 0))], now)


async def writer_cycle(url: str, settings: Settings) -> dict:
    """What a worker does with Redis: write a batch, find what changed, count, publish."""
    store = HllStore(connect(url), KeyLayout(settings.namespace, settings.bucket_s))
    plan = some_plan(settings)
    await store.apply(plan)
    await store.load_partition(0)
    dirty = await store.pop_dirty([0])
    counts = await store.window_counts(sorted(dirty), settings.windows_s)
    # The estimator's two sides: a counter's point records, the publisher's reads of them.
    stage = StageStore(store.redis, store.keys)
    await stage.write({("city", 1): PointRecord({("city", 300): counts.get(("city", 1, 300), 0)}, None)})
    await stage.set_counted([0], 1)
    assert await stage.counted(1) == {0: 1}
    assert await stage.pop_changed() == {("city", 1)}
    assert set(await stage.read({1: None})) == set(await stage.read({1: ["city"]})) == {("city", 1)}
    published = EstimateStore(store.redis, store.keys)
    await published.set_published_through(1, 1_000)
    await published.published_at_ms()
    await published.published_through()
    await store.stream_now_ms()
    estimate = {"area": "city", "window_s": 300, "as_of": 60_000, "devices": 50}
    await published.save_estimates([estimate], 60_000, 3_600_000)  # type: ignore[list-item]
    stats = await store.stats()
    await store.redis.aclose()
    return {"counts": counts, "stats": stats}


async def reader_view(url: str, settings: Settings) -> tuple[list, list]:
    store = EstimateStore(connect(url), KeyLayout(settings.namespace, settings.bucket_s))
    try:
        return await store.latest_estimates(), await store.series("city", 300)
    finally:
        await store.redis.aclose()


def test_acl_users_writer_works_reader_sees_estimates_only(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text(ACL_FILE.read_text())
    process, url = start_redis(log_dir=tmp_path, extra_args=["--aclfile", str(acl)])
    try:
        port = url.rsplit(":", 1)[1].split("/")[0]
        writer_url = f"redis://cp-writer:change-me-writer@127.0.0.1:{port}/0"
        reader_url = f"redis://cp-reader:change-me-reader@127.0.0.1:{port}/0"
        wait_for_redis(writer_url)
        settings = Settings()
        assert max(np.diff(some_plan(settings).adds.starts)) >= DENSE_FROM_MEMBERS  # the register path runs
        result = asyncio.run(writer_cycle(writer_url, settings))
        assert result["stats"]["counted"] == DEVICES
        assert abs(max(result["counts"].values()) - DEVICES) < 0.03 * DEVICES  # the city's window

        latest, series = asyncio.run(reader_view(reader_url, settings))
        assert latest[0]["devices"] == 50 and series[0]["area"] == "city"
        reader = redis.Redis.from_url(reader_url)
        hll_key = next(key for key, _ in some_plan(settings).hll_adds)
        for forbidden in (
            lambda: reader.pfcount(hll_key),
            lambda: reader.get(hll_key),
            lambda: reader.hgetall(KeyLayout("cp", 60).ingest_stats),
            lambda: reader.keys("*"),
            lambda: reader.pfadd(hll_key, b"x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
        reader.close()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(url).ping()  # the default user is off
    finally:
        process.stop()


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=crowdpulse-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def test_tls_with_a_locally_made_certificate(tmp_path: Path) -> None:
    system_redis = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    assert system_redis, "Debian's redis-server (with TLS) is required: apt-get install redis-server (make test does)"
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    process = ManagedProcess()
    process.start(
        [system_redis, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
         "--tls-auth-clients", "no"],
        "redis-tls",
        tmp_path / "redis-tls.log",
    )
    try:
        tls_url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
        wait_for_redis(tls_url)
        result = asyncio.run(writer_cycle(tls_url, Settings()))
        assert result["stats"]["counted"] == DEVICES
        # Plain TCP on the TLS port does not get an answer; a client trusting another CA refuses.
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis.from_url(f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}").ping()
    finally:
        process.stop()
