"""Helpers of the limits tests (``tests/integration/security/limits``): the limits of their
dedicated server, the defaults it keeps, and ways to reach past them on every connection
kind. The server itself is the ``limits_server`` fixture of that package's conftest.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx

from tests.support.helpers import NativeClient, SioClient
from tests.support.hostile_helpers import SOCKET_KINDS, EioPolling

MiB = 1024 * 1024

# The defaults the limits server keeps: 4 KiB messages; 20 messages/s, bursts of 40, a
# flood closed after 5 s.
MAX_MESSAGE = 4096
RATE, BURST, FLOOD_CLOSE = 20, 40, 5.0

# What the limits server changes: small enough to reach in a test.
MAX_CONNECTIONS_PER_USER = 2
MAX_CHANNEL_SUBSCRIPTIONS = 1
AUTH_TIMEOUT = 2.0
SEND_QUEUE = 64 * 1024

LIMITS_ENV = {
    "JOBCAST_MAX_CONNECTIONS_PER_USER": str(MAX_CONNECTIONS_PER_USER),
    "JOBCAST_MAX_CHANNEL_SUBSCRIPTIONS": str(MAX_CHANNEL_SUBSCRIPTIONS),
    "JOBCAST_AUTH_TIMEOUT_SECONDS": str(AUTH_TIMEOUT),
    "JOBCAST_SEND_QUEUE_BYTES": str(SEND_QUEUE),
}


async def all_kinds(
    check: Callable[[str], Awaitable[None]], kinds: tuple[str, ...] = SOCKET_KINDS
) -> None:
    results = await asyncio.gather(*(check(kind) for kind in kinds), return_exceptions=True)
    failures = [
        f"{kind}: {type(result).__name__}: {result}"
        for kind, result in zip(kinds, results, strict=True)
        if isinstance(result, BaseException)
    ]
    assert not failures, "\n".join(failures)


async def send_many(client: SioClient | NativeClient, count: int) -> None:
    """``count`` pings as fast as the transport takes them. Over polling, in chunks of 8:
    python-engineio's server drops a whole POST of more than 16 packets (see
    limits/test_rate_limits.py), and the client batches what is queued."""
    chunk = 8 if isinstance(client, SioClient) and client.transport == "polling" else count
    for sent in range(0, count, chunk):
        for _ in range(min(chunk, count - sent)):
            await client.send("ping")
        if chunk < count:
            await asyncio.sleep(0.03)


async def send_raw_ping(client: SioClient | NativeClient, pad: str) -> None:
    """A ``ping`` carrying ``pad``; native frames are sent as UTF-8 text as is."""
    if isinstance(client, NativeClient):
        await client.send_raw(json.dumps({"type": "ping", "pad": pad}, ensure_ascii=False))
    else:
        await client.sio.emit("ping", {"pad": pad})


async def connected_polling(http: httpx.AsyncClient, token: str) -> EioPolling:
    """A raw Engine.IO polling session, authenticated, that got its welcome."""
    eio = EioPolling(http)
    assert (await eio.open()).status_code == 200
    assert eio.handshake["maxPayload"] == 64 * 1024, eio.handshake
    assert (await eio.post("40" + json.dumps({"token": token}))).status_code == 200
    seen: list[str] = []
    for _ in range(3):
        seen += EioPolling.packets(await eio.get())
        if any("connection_established" in p for p in seen):
            return eio
    raise AssertionError(f"no welcome over polling: {seen}")
