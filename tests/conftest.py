"""Fixtures: a real Redis, a real Celery worker, a real uvicorn server, real clients.

Session-scoped processes are started on free ports of 127.0.0.1 and stopped by PID at
the end (SIGTERM, a bounded wait, then SIGKILL). Every integration test (marked
``integration``) gets the whole stack and starts with an empty Redis (FLUSHALL); the
processes keep running across tests. ``JOBCAST_TEST_REDIS_URL`` points the tests at an
existing Redis instead of starting one (it is flushed too, and cannot be restarted).

Layout: ``tests/unit`` (no ``integration`` marker: ``pytest -m "not integration"``) and
``tests/integration/<area>`` (each module's ``pytestmark``: ``pytest -m integration``), with
the areas auth, browser, celery, cli, cluster, delivery, rest, scaling (notifiers behind a
real HAProxy and nginx), security (its limits in ``security/limits``, with a server of
their own) and transport; a hook below refuses a test that is elsewhere or marked against
its directory. Only fixtures and hooks live
here; what tests import is in ``tests/support``.
"""

from __future__ import annotations

# First: the tests' environment, before anything reads notifier's settings.
from tests.support.env import (
    CLUSTER_PORTS,
    EXTERNAL_REDIS_URL,
    JWT_SECRET,
    REDIS_CLUSTER,
    REDIS_PORT,
    REDIS_URL,
)

# isort: split
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import NativeClient, SioClient, Tokens, connect_native, connect_sio
from tests.support.processes import (
    ExternalRedis,
    RedisServer,
    Server,
    running_server,
    running_worker,
)
from tests.support.redis_cluster import RedisCluster

# --- Redis


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
def redis_cluster(
    redis_server: RedisServer | ExternalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisCluster | None]:
    """With ``JOBCAST_TEST_REDIS_CLUSTER=1``: the Redis Cluster holding jobcast's keys (the
    ``redis_server`` is then Celery's broker only); else None."""
    if not REDIS_CLUSTER:
        yield None
        return
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"), CLUSTER_PORTS)
    try:
        cluster.start()  # inside: a failed start still stops the nodes it started
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_client(
    redis_server: RedisServer | ExternalRedis, redis_cluster: RedisCluster | None
) -> Iterator[Any]:
    """A client of the Redis holding jobcast's keys (a cluster client in cluster mode)."""
    import redis

    if redis_cluster is not None:
        client: Any = redis_cluster.client()
    else:
        client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def results_client(redis_server: RedisServer | ExternalRedis) -> Iterator[Any]:
    """A client of Celery's result backend: the session's Redis (in the cluster phase, the
    standalone one beside the cluster, which also holds Celery's broker)."""
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
    if REDIS_CLUSTER:  # Celery's broker and results: a Redis of their own
        request.getfixturevalue("results_client").flushall()


# --- Celery worker


@pytest.fixture(scope="session")
def celery_worker(
    redis_server: RedisServer | ExternalRedis,
    redis_cluster: RedisCluster | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker(tmp_path_factory.mktemp("worker") / "celery.log") as proc:
        yield proc


# --- the ASGI server (REST API + notifier)


@pytest.fixture(scope="session")
def server(
    redis_server: RedisServer | ExternalRedis,
    redis_cluster: RedisCluster | None,
    tmp_path_factory: pytest.TempPathFactory,
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


# --- the layout: tests/unit is `-m "not integration"`, tests/integration is `-m integration`

TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    check_layout(items)
    if stock_transport():
        deselect_marked(config, items, "fast_transport")
    # Tests of jobcast on a Redis Cluster run in the cluster phase; tests that stop,
    # restart or reconfigure the one Redis (marked single_redis) in the others.
    deselect_marked(config, items, "single_redis" if REDIS_CLUSTER else "redis_cluster")


def check_layout(items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        marked = item.get_closest_marker("integration") is not None
        where = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if where == "unit" and marked:
            misplaced.append(f"{item.nodeid}: marked integration under tests/unit")
        elif where == "integration" and not marked:
            misplaced.append(
                f"{item.nodeid}: not marked integration (pytestmark) under tests/integration"
            )
        elif where not in ("unit", "integration"):
            misplaced.append(f"{item.nodeid}: outside tests/unit and tests/integration")
    if misplaced:
        raise pytest.UsageError("tests in the wrong place:\n  " + "\n  ".join(misplaced))


def stock_transport() -> bool:
    """The servers these tests start serve through the stock transport path."""
    setting = os.environ.get("JOBCAST_FAST_TRANSPORT", "true").strip().lower()
    return setting in ("false", "0", "no", "off")


def deselect_marked(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    """Deselect (not skip) the tests marked ``marker``: they run in another phase of
    ``make test`` (on the stock path, the fast path's own mechanics, ``fast_transport``)."""
    deselected = [item for item in items if item.get_closest_marker(marker)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]


def pytest_report_header() -> list[str]:
    path = "stock" if stock_transport() else "fast"
    return [f"jobcast tests: redis {REDIS_URL}, transport path {path}"]
