"""python-socketio's client, where jobcast's clients need more than its public API."""

from __future__ import annotations

import socketio


async def close_leftover_http(client: socketio.AsyncClient) -> None:
    """Close the aiohttp session python-engineio's client may leave open.

    After the server ended a long-polling session, the client may still be
    "disconnecting" (its read loop not yet ended), so ``disconnect()`` does nothing and
    its aiohttp session would be left to the garbage collector."""
    http = getattr(client.eio, "http", None)
    if http is not None and not http.closed:
        await http.close()
