"""jobcast's Engine.IO WebSocket transport, looked at from inside the server process.

An in-process uvicorn (with the WebSocket protocol ``python -m api`` picks: jobcast's on
the fast path, uvicorn's own with ``JOBCAST_FAST_TRANSPORT=false``) serves the product's
app on the session's Redis; real python-socketio clients connect to
it over WebSocket and over long-polling. What is checked is what the transport promises:
an idle WebSocket connection holds no task of jobcast's or Engine.IO's (only uvicorn's
own), a fan-out reaches everyone, in order, framed once, and nothing is left behind once
the clients leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.helpers import TIMEOUT, SioClient, Tokens, bearer, connect_sio
from tests.support.inprocess import serving
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

CLIENTS = 40


def server_tasks() -> dict[str, int]:
    """Live tasks of the server side, by where their coroutine lives."""
    counts = {"asgi": 0, "engineio": 0, "jobcast": 0}
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        path = code.co_filename if code is not None else ""
        if code is not None and code.co_name == "run_asgi":  # the server's, per connection
            counts["asgi"] += 1
        elif "engineio/async_socket" in path or "engineio/async_drivers" in path:
            counts["engineio"] += 1
        elif "/notifier/" in path:
            counts["jobcast"] += 1
    return counts


@pytest.fixture
async def inprocess(redis_server: Any) -> AsyncIterator[str]:
    from api.factory import create_app
    from notifier.contract.settings import Settings

    settings = Settings(_env_file=None)
    async with serving(create_app(settings), settings) as url:
        yield url


async def connect_all(url: str, tokens: Tokens, transports: list[str], n: int) -> list[SioClient]:
    """``n`` clients, one user each (a user's connections are limited)."""
    clients = await asyncio.gather(
        *(connect_sio(url, tokens.make(f"fan-{i}"), transports) for i in range(n))
    )
    for client in clients:
        await client.wait_for_type("connection_established")
    return list(clients)


async def broadcast(http: httpx.AsyncClient, token: str, text: str) -> None:
    response = await http.post(
        "/api/v1/websocket/broadcast/system",
        json={"message": text, "level": "info"},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text


@pytest.mark.fast_transport  # stock python-engineio runs a writer and a ping task per session
async def test_idle_websocket_connections_hold_no_task_of_their_own(
    inprocess: str, tokens: Tokens
) -> None:
    # A first connection starts what the server runs once (Engine.IO's service task).
    first = await connect_all(inprocess, tokens, ["websocket"], 1)
    before = server_tasks()
    clients = await connect_all(inprocess, tokens, ["websocket"], CLIENTS)
    try:
        await asyncio.sleep(0.5)  # every welcome and replay sent: the connections are idle
        during = server_tasks()
        assert during["asgi"] - before["asgi"] == CLIENTS, during  # the server's ASGI task
        assert during["engineio"] == 0, f"Engine.IO tasks per idle connection: {during}"
        assert during["jobcast"] == before["jobcast"], f"jobcast tasks per connection: {during}"
    finally:
        await asyncio.gather(*(client.close() for client in clients + first))
    assert await wait_until_async(lambda: server_tasks()["asgi"] == 0, TIMEOUT), server_tasks()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_fan_out_reaches_every_client_in_order(
    inprocess: str, tokens: Tokens, transport: str
) -> None:
    clients = await connect_all(inprocess, tokens, [transport], CLIENTS)
    texts = [f"notice {i}" for i in range(20)]
    try:
        async with httpx.AsyncClient(base_url=inprocess, timeout=TIMEOUT) as http:
            for text in texts:  # back to back: many frames per connection per loop turn
                await broadcast(http, tokens.admin, text)

        def everyone_has_all() -> bool:
            return all(len(c.of_type("system_notification")) >= len(texts) for c in clients)

        assert await wait_until_async(everyone_has_all, TIMEOUT)
        for client in clients:
            got = [m["message"] for m in client.of_type("system_notification")]
            assert got == texts, f"a client got {got}"
    finally:
        await asyncio.gather(*(client.close() for client in clients))
