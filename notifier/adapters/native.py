"""The native WebSocket adapter (``/ws/job-status-native``): JSON text frames, same protocol.

Like Socket.IO connections, each has an :class:`~notifier.core.outbox.Outbox`: a slow reader is
closed with reason ``slow_consumer`` (code 1008) instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from notifier.core.hub import Connection
from notifier.core.outbox import CLOSE_AUTH, CLOSE_POLICY, CLOSE_TOO_MANY, SLOW_CONSUMER, Outbox
from notifier.core.port import NotifierPort
from notifier.edge.auth import AUTH_CODES, AuthError, Peer, token_from
from notifier.edge.commands import ClientError, decode_text

log = logging.getLogger(__name__)


async def endpoint(ws: WebSocket, notifier: NotifierPort) -> None:
    settings = notifier.settings
    origin = ws.headers.get("origin")
    scheme = "https" if ws.url.scheme == "wss" else "http"
    query = ws.scope.get("query_string", b"").decode("latin-1")
    peer = Peer.of(ws.scope.get("client"), query)
    if not notifier.origins.allows(origin, scheme=scheme, host=ws.headers.get("host")):
        notifier.auth_refused("forbidden_origin", "native", peer)
        await ws.close(CLOSE_POLICY, "origin not allowed")  # before accept: HTTP 403
        return
    await ws.accept()
    token = token_from(None, ws.headers, query)
    conn_id = f"n-{uuid.uuid4().hex}"
    try:
        principal = await notifier.authenticate(token, conn_id, peer, "native")
    except AuthError as exc:
        code = CLOSE_AUTH if exc.code in AUTH_CODES else CLOSE_TOO_MANY
        await ws.close(code, f"{exc.code}: {exc.message}")
        return

    async def write(message: dict[str, Any]) -> None:
        await ws.send_text(notifier.native_frames(message))

    async def close(code: int, reason: str) -> None:
        conn.lost = reason == SLOW_CONSUMER
        await ws.close(code, reason)

    outbox = Outbox(write, close, settings.send_queue_bytes)
    conn = Connection(
        conn_id,
        principal,
        "native",
        outbox.put,
        outbox.close,
        notifier.rate_limiter(),
        peer.address,
    )
    outbox.start()
    try:
        await notifier.establish(conn, ws.query_params.get("lastEventId"))
        await _read_loop(ws, conn, notifier, outbox.done())
    finally:
        await notifier.release(conn)
        outbox.stop()
        if ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()
        log.info("disconnected", extra={"conn": conn.id})


async def _read_loop(
    ws: WebSocket,
    conn: Connection,
    notifier: NotifierPort,
    closed: asyncio.Future[None],
) -> None:
    """Reads the client's messages until it leaves or the outbox has closed (``closed``)."""
    limit = notifier.settings.max_message_bytes
    receive = asyncio.ensure_future(ws.receive())
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {receive, closed}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                return  # closed as a slow consumer
            frame = receive.result()
            if frame["type"] == "websocket.disconnect":
                return
            raw = frame.get("text")
            if raw is None:
                raw = frame.get("bytes") or b""
            if len(raw.encode() if isinstance(raw, str) else raw) > limit:  # bytes, not chars
                await notifier.commands.too_large(conn)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(closed), timeout=5)
                return
            try:
                msg = decode_text(raw)
            except ClientError as exc:
                await notifier.commands.reject(conn, exc.code, exc.message)
            else:
                await notifier.commands.handle(conn, msg)
            receive = asyncio.ensure_future(ws.receive())
    except WebSocketDisconnect:
        return
    finally:
        receive.cancel()
