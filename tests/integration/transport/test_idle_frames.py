"""What an idle WebSocket connection's task holds while it waits: the read, not the request.

An in-process uvicorn (the WebSocket protocol ``python -m api`` picks) serves the product's
app on the session's Redis; real python-socketio clients connect over WebSocket and stay
idle. Each connection's task must then be waiting in the Engine.IO read loop alone: the
call chain that handled the handshake (uvicorn's middleware, jobcast's guard,
python-engineio's request handling, with the handshake's query and OPEN packet in their
locals) is over, not kept for the connection's life (about 3 KiB per connection). The
connections still work afterwards: a message sent to each arrives.
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

CLIENTS = 20


@pytest.fixture
async def inprocess(redis_server: Any) -> AsyncIterator[str]:
    from api.factory import create_app
    from notifier.contract.settings import Settings

    settings = Settings(_env_file=None)
    async with serving(create_app(settings), settings) as url:
        yield url


def awaited_chains() -> list[list[str]]:
    """Each live task's chain of coroutines, outermost first, as ``file:function``."""
    chains = []
    for task in asyncio.all_tasks():
        chain: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            chain.append(f"{coro.cr_code.co_filename}:{coro.cr_code.co_name}")
            coro = coro.cr_await
        chains.append(chain)
    return chains


@pytest.mark.fast_transport  # stock python-engineio reads inside its request handling
async def test_an_idle_connection_holds_the_read_not_the_handshake(
    inprocess: str, tokens: Tokens
) -> None:
    clients: list[SioClient] = list(
        await asyncio.gather(
            *(
                connect_sio(inprocess, tokens.make(f"idle-{i}"), ["websocket"])
                for i in range(CLIENTS)
            )
        )
    )
    try:
        for client in clients:
            await client.wait_for_type("connection_established")
        await asyncio.sleep(0.5)  # every welcome and replay sent: the connections are idle
        chains = awaited_chains()
        reading = [c for c in chains if any(f.endswith(":_read_websocket") for f in c)]
        assert len(reading) == CLIENTS, f"{len(reading)} Engine.IO reads for {CLIENTS} clients"
        handshakes = [
            c
            for c in reading
            if any(f.endswith(("engineio/async_server.py:handle_request", ":guarded")) for f in c)
        ]
        assert handshakes == [], f"idle connections holding their handshake: {handshakes[0]}"

        async with httpx.AsyncClient(base_url=inprocess, timeout=TIMEOUT) as http:
            response = await http.post(
                "/api/v1/websocket/broadcast/system",
                json={"message": "still there", "level": "info"},
                headers=bearer(tokens.admin),
            )
            assert response.status_code == 200, response.text
        assert await wait_until_async(
            lambda: all(c.of_type("system_notification") for c in clients), TIMEOUT
        ), "a connection stopped receiving after its handshake's frames were gone"
    finally:
        await asyncio.gather(*(client.close() for client in clients))
