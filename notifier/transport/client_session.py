"""python-socketio's client, where jobcast's clients need more than its public API.

The one place that overrides or reads python-engineio's and python-socketio's client
internals; each name is in :data:`notifier.transport.compat.CLIENT_NEEDS`, checked once per
process (:func:`notifier.transport.compat.client_path`). The product's client
(:class:`notifier.client.JobcastClient`) and the tests' clients are made
(:func:`socketio_client`) and closed (:func:`close_client`) here.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import engineio
import socketio

from notifier.transport import compat


class _EngineIOClient(engineio.AsyncClient):  # type: ignore[misc]
    """python-engineio's client, with each HTTP response's body read inside the request's
    own error handling.

    python-engineio reads a long-poll's body after ``_send_request`` has returned, where
    only a malformed payload is caught: a response the network cuts after its headers
    (``ClientPayloadError``) ends the read loop with an exception, without the
    ``disconnect`` event, and the client stays "connected" to nothing, never reconnecting.
    Read here, the cut fails the request like a refused connection: the read loop ends,
    the client disconnects, and python-socketio reconnects. (``aiohttp``'s response keeps
    the body, so the library's own ``read()`` afterwards returns it.)
    """

    async def _send_request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the library's signature)
    ) -> Any:
        response = await super()._send_request(
            method, url, headers=headers, body=body, timeout=timeout
        )
        if response is None or isinstance(response, str):
            return response
        try:
            await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            # not the URL: a client may carry its token in the query string
            self.logger.info("HTTP %s response cut short: %s", method, exc)
            return str(exc)
        return response


class _SocketIOClient(socketio.AsyncClient):  # type: ignore[misc]
    def _engineio_client_class(self) -> type[engineio.AsyncClient]:
        return _EngineIOClient


def socketio_client(**options: Any) -> socketio.AsyncClient:
    """A python-socketio ``AsyncClient`` (``options`` are its own) that notices a long-poll
    cut part way and reconnects (see :class:`_EngineIOClient`); the stock one when the
    installed libraries lack a name it needs."""
    if compat.client_path() == compat.FAST:
        return _SocketIOClient(**options)
    return socketio.AsyncClient(**options)


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
    polling = (  # the internals read below are in compat.CLIENT_NEEDS
        compat.client_path() == compat.FAST
        and eio.state == "connected"
        and eio.current_transport == "polling"
    )
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
