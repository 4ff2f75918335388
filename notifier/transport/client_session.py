"""python-socketio's client, where jobcast's clients need more than its public API.

The one place that reads python-engineio's client internals (``eio.state``,
``eio.current_transport``, ``eio.write_loop_task``, ``eio.http``): the product's client
(:class:`notifier.client.JobcastClient`) and the tests' clients close through here.
"""

from __future__ import annotations

import asyncio
import contextlib

import socketio


async def close_client(client: socketio.AsyncClient, within: float = 10.0) -> None:
    """Disconnect ``client`` without waiting out a pending long-poll, and close its HTTP
    session. Never raises (but for cancellation); each wait is bounded by ``within``
    seconds.

    Over long-polling, ``disconnect()`` posts DISCONNECT and CLOSE, then waits for the
    pending long-poll GET, which the server answers only at its next ping (ping interval
    + ping timeout). Once the CLOSE is out (python-engineio's write loop has ended), that
    GET is aborted as a browser does, by closing the client's aiohttp session. Whatever
    is still open afterwards is closed too (:func:`close_leftover_http`): an aiohttp
    session left to the garbage collector warns (``ResourceWarning``, "Unclosed client
    session") in whatever code runs then.
    """
    eio = client.eio
    polling = eio.state == "connected" and eio.current_transport == "polling"
    disconnect = asyncio.ensure_future(client.disconnect())
    with contextlib.suppress(Exception):
        if polling:
            write_loop = eio.write_loop_task
            if write_loop is not None:
                await asyncio.wait({write_loop}, timeout=within)
            if eio.http is not None:
                await eio.http.close()
        await asyncio.wait_for(disconnect, within)
    with contextlib.suppress(Exception):
        await close_leftover_http(client)


async def close_leftover_http(client: socketio.AsyncClient) -> None:
    """Close the aiohttp session python-engineio's client may leave open.

    After the server ended a long-polling session (too large, slow consumer, ...) or
    refused a connection, the client may still be "disconnecting" (its read loop not yet
    ended), so ``disconnect()`` does nothing and its aiohttp session would be left to the
    garbage collector."""
    http = getattr(client.eio, "http", None)
    if http is not None and not http.closed:
        await http.close()
