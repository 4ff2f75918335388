"""Redis goes away and comes back: readiness follows it, clients stay connected, and jobs
flow again afterwards.

This test runs its own Redis, worker and server: killing the session's Redis would also
break whatever other tests hold connections to it. It exercises the restart handle
(``RedisServer.kill()`` / ``start()`` on the same port) too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.env import child_env, free_port
from tests.support.helpers import TIMEOUT, connect_sio, is_terminal, start_job
from tests.support.processes import RedisServer, Server, running_server, running_worker

# Stops, restarts or proxies the one Redis: not in the Redis Cluster phase.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]


async def wait_readiness(http: httpx.AsyncClient, status_code: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        response = await http.get("/readyz")
        if response.status_code == status_code:
            body: dict[str, Any] = response.json()
            return body
        assert loop.time() < deadline, f"/readyz stayed {response.status_code}: {response.text}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def own_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RedisServer, Server]]:
    workdir = tmp_path_factory.mktemp("outage")
    redis = RedisServer(free_port(), workdir)
    redis.start()
    env = child_env(REDIS_URL=redis.url)
    with contextlib.ExitStack() as stack:
        try:
            # Started side by side, in threads (their readiness waits block); both are
            # awaited before anything is raised, so the stack closes whatever started.
            started = await asyncio.gather(
                asyncio.to_thread(stack.enter_context, running_worker(workdir / "w.log", env)),
                asyncio.to_thread(stack.enter_context, running_server(workdir / "s.log", env)),
                return_exceptions=True,
            )
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            server = started[1]
            assert isinstance(server, Server)
            yield redis, server
        finally:
            await asyncio.to_thread(stack.close)
            redis.stop()


async def test_redis_restart(own_stack: tuple[RedisServer, Server], tokens: Any) -> None:
    redis, server = own_stack
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        client = await connect_sio(server.url, tokens.alice, ["websocket"])
        try:
            await client.wait_for_type("connection_established")
            try:
                redis.kill()
                down = await wait_readiness(http, 503)
                assert down["status"] == "not ready"
                assert down["checks"]["redis"] is False
                assert (await http.get("/healthz")).status_code == 200, "liveness needs no Redis"
            finally:
                redis.start()
            await wait_readiness(http, 200)

            assert (await client.ping())["type"] == "pong", "the connection survived the outage"
            job_id = await start_job(
                http, tokens.alice, topic="after", sections=1, secondsPerSection=0
            )
            outcome = await client.wait_for(is_terminal(job_id), within=40, what="a job after it")
            assert outcome["type"] == "job_completed"
        finally:
            await client.close()
