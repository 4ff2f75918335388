"""What a closed connection leaves behind in the server: nothing.

An in-process uvicorn serves the product's app (REST + notifier, with the WebSocket
protocol ``python -m api`` picks) on the session's Redis; real python-socketio clients
connect, subscribe to a channel, and leave. Afterwards every per-connection structure an
operator would find in the process is back to what it was, and no object of a closed
connection is still alive: the test never runs the garbage collector itself, so a
connection kept alive by reference cycles until some later full collection (the soak's
notifier grew by about 8 KiB per reconnect that way) fails it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import engineio.async_socket
import pytest

from notifier.core.hub import Connection
from notifier.core.service import Notifier
from tests.support.helpers import TIMEOUT, SioClient, Tokens, connect_sio
from tests.support.inprocess import serving
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

CLIENTS = 30


@pytest.fixture
async def served(redis_server: Any) -> AsyncIterator[tuple[str, Notifier]]:
    from api.factory import create_rest_app
    from notifier.contract.settings import Settings

    settings = Settings(_env_file=None)
    notifier = Notifier(settings)
    async with serving(notifier.asgi(create_rest_app(settings, notifier)), settings) as url:
        yield url, notifier


def per_connection(notifier: Notifier) -> dict[str, int]:
    """The process's per-connection structures and how many entries each holds."""
    sio = notifier.socket_server.sio
    hub = notifier.hub
    return {
        "hub connections": len(hub.connections),
        "hub users": len(hub.by_user),
        "hub channel subscribers": sum(len(members) for members in hub.by_channel.values()),
        "token clocks": len(notifier.sessions),
        "Socket.IO environs": len(sio.environ),
        "Socket.IO sids": len(sio.manager.rooms.get("/", {}).get(None, {})),
        "Engine.IO sessions": sum(not s.closed for s in sio.eio.sockets.values()),
    }


@pytest.mark.parametrize(
    "transport",
    [
        "websocket",
        # Stock python-engineio answers a closed session's pending long-poll GET only at its
        # timeout (ping interval + ping timeout), holding the session until then.
        pytest.param("polling", marks=pytest.mark.fast_transport),
    ],
)
async def test_closed_connections_leave_nothing_behind(
    served: tuple[str, Notifier], tokens: Tokens, transport: str
) -> None:
    url, notifier = served
    prefix = f"leaves-{transport}-"
    # One connection stays open throughout: the server is not idle, and what it holds
    # must stay.
    stays = await connect_sio(url, tokens.make("stays"), ["websocket"])
    await stays.wait_for_type("connection_established")
    before = per_connection(notifier)

    clients: list[SioClient] = list(
        await asyncio.gather(
            *(connect_sio(url, tokens.make(f"{prefix}{i}"), [transport]) for i in range(CLIENTS))
        )
    )
    for client in clients:
        await client.wait_for_type("connection_established")
        answer = await client.request("subscribe_channel", channel="notifications")
        assert answer["type"] == "subscribed", answer
    leaving = {c.id for c in notifier.hub.connections.values() if c.user_id.startswith(prefix)}
    assert len(leaving) == CLIENTS
    manager = notifier.socket_server.sio.manager
    sessions = {eio_sid for eio_sid in notifier.socket_server.sio.eio.sockets}
    sessions = {
        eio_sid for eio_sid in sessions if manager.sid_from_eio_sid(eio_sid, "/") in leaving
    }
    assert len(sessions) == CLIENTS

    def alive() -> int:
        """Objects of the leaving clients' connections still in memory, reachable or not
        (the garbage collector's list holds both until it runs)."""
        count = 0
        for obj in gc.get_objects():
            if type(obj) is Connection and obj.id in leaving:
                count += 1
            elif isinstance(obj, engineio.async_socket.AsyncSocket) and obj.sid in sessions:
                count += 1
        return count

    assert alive() == 2 * CLIENTS

    await asyncio.gather(*(client.close() for client in clients))
    del clients

    assert await wait_until_async(lambda: per_connection(notifier) == before, TIMEOUT), (
        per_connection(notifier),
        before,
    )
    # Freed by the server itself (the test does not collect): the connections' objects
    # and Engine.IO's sessions of the clients that left.
    assert await wait_until_async(lambda: alive() == 0, TIMEOUT, interval=0.2), (
        f"{alive()} objects of closed connections still in memory"
    )
    assert stays.closed is False
    assert (await stays.ping())["type"] == "pong"
    await stays.close()
