"""Child processes with a bounded stop, tied to our life: what the embedded services, the
demo, the tools and the tests start (brokers, redis-servers, workers)."""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the preexec_fn runs between fork and exec, where loading
# a shared library is not async-signal-safe.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port(attempts: int = 100) -> int:
    """A loopback port for a Redis Cluster node: free, and with its cluster bus port (port +
    10000, which must exist) free too, a moment ago."""
    for _ in range(attempts):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _die_with_parent_preexec() -> Callable[[], None] | None:
    """Build the preexec_fn that ties a child's life to ours (Linux only)."""
    if _LIBC is None:
        return None
    libc = _LIBC
    parent_pid = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The parent may have died between fork and prctl; then no signal would
        # ever come, so die now instead of becoming an orphan.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class ManagedProcess:
    """One child process with a bounded stop.

    The child gets PR_SET_PDEATHSIG(SIGKILL) on Linux, so it dies if we die
    without cleaning up. Linux delivers that signal when the *thread* that
    started the child exits, so start children from a long-lived thread (the
    main thread in the CLI and the tests). The child runs in its own session so
    that a terminal Ctrl-C reaches only us and we stop children in order.
    """

    def __init__(self) -> None:
        self.name = ""
        self._stop_signal: int = signal.SIGTERM
        self._popen: subprocess.Popen[bytes] | None = None

    def start(
        self,
        argv: Sequence[str],
        name: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        user: int | None = None,
    ) -> None:
        """Launch ``argv``; its stdout and stderr go to ``log_path`` (appended) or nowhere.

        ``stop_signal`` is what stop() sends first: SIGTERM for the servers, SIGINT for a Faust
        worker (it sometimes ignores SIGTERM while a stream is busy; SIGINT stops it cleanly).
        ``user``: run the child as this uid (and its group): PostgreSQL refuses to run as root.
        """
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.name = name
        self._stop_signal = stop_signal
        if log_path is None:
            self._popen = self._spawn(argv, subprocess.DEVNULL, env, user)
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # The child keeps its own copy of the descriptor, so ours can close now.
            with log_path.open("ab") as log_file:
                self._popen = self._spawn(argv, log_file.fileno(), env, user)
        log.info("started %s (pid %d): %s", name, self._popen.pid, shlex.join(argv))

    @staticmethod
    def _spawn(argv: Sequence[str], output: int, env: Mapping[str, str] | None, user: int | None) -> subprocess.Popen[bytes]:
        # The parent-death signal is set after the switch of user (preexec_fn runs last), so it holds.
        group = None if user is None else pwd.getpwuid(user).pw_gid
        return subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent_preexec(),
            user=user,
            group=group,
            extra_groups=None if user is None else [],
        )

    @property
    def pid(self) -> int:
        return self._require_started().pid

    def poll(self) -> int | None:
        """The exit code if the child has exited (and is reaped), else None."""
        return self._require_started().poll()

    def stop(self, timeout: float = 5.0) -> None:
        """The stop signal, wait up to ``timeout`` seconds, then SIGKILL; reaps the child. Idempotent."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        # tansu and redis-server treat SIGTERM as a clean shutdown request; Faust wants SIGINT.
        popen.send_signal(self._stop_signal)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored its stop signal for %.1fs, killing it", self.name, popen.pid, timeout)
            popen.kill()
            # SIGKILL cannot be ignored, so this wait only reaps (no zombie left
            # behind); it is bounded because a child stuck in the kernel can't die.
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) survived SIGKILL for %.1fs", self.name, popen.pid, timeout)
                return
        log.info("stopped %s (pid %d, exit code %s)", self.name, popen.pid, popen.returncode)

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError("process not started")
        return self._popen
