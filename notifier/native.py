"""The native WebSocket adapter (``/ws/job-status-native``): JSON text frames, same protocol.

Each connection has a bounded outbound queue drained by its own writer task, so a client
that stops reading can never stall the dispatcher or grow the server's memory without
bound: past ``JOBCAST_SEND_QUEUE_BYTES`` it is closed with reason ``slow_consumer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from notifier.auth import AuthError, token_from
from notifier.events import dumps
from notifier.hub import Connection
from notifier.protocol import ClientError, decode_text

if TYPE_CHECKING:
    from notifier.service import Notifier

log = logging.getLogger(__name__)

NATIVE_PATH = "/ws/job-status-native"
CLOSE_AUTH = 4401
CLOSE_TOO_MANY = 4429
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class Outbox:
    """A byte-bounded FIFO of encoded frames with one writer task."""

    def __init__(self, ws: WebSocket, limit: int) -> None:
        self._ws = ws
        self._limit = limit
        self._frames: deque[str] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._close: tuple[int, str] | None = None

    def close(self, code: int, reason: str) -> None:
        """Close once the frames already queued are sent."""
        if self._close is None:
            self._close = (code, reason)
        self._ready.set()

    def put(self, frame: str) -> bool:
        if self._close is not None:
            return False
        if self._bytes + len(frame) > self._limit:
            self._frames.clear()
            self._bytes = 0
            self.close(CLOSE_POLICY, "slow_consumer")
            return False
        self._frames.append(frame)
        self._bytes += len(frame)
        self._ready.set()
        return True

    async def drain(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._frames:
                frame = self._frames.popleft()
                self._bytes -= len(frame)
                await self._ws.send_text(frame)
            if self._close is not None:
                await self._ws.close(*self._close)
                return


async def endpoint(ws: WebSocket, notifier: Notifier) -> None:
    settings = notifier.settings
    origin = ws.headers.get("origin")
    scheme = "https" if ws.url.scheme == "wss" else "http"
    if not notifier.origins.allows(origin, scheme=scheme, host=ws.headers.get("host")):
        notifier.auth_refused("forbidden_origin", "native")
        await ws.close(CLOSE_POLICY, "origin not allowed")  # before accept: HTTP 403
        return
    await ws.accept()
    token = token_from(None, ws.headers, ws.scope.get("query_string", b"").decode("latin-1"))
    conn_id = f"n-{uuid.uuid4().hex}"
    try:
        principal = notifier.verifier.verify(token)
        await notifier.admit(principal, conn_id)
    except AuthError as exc:
        notifier.auth_refused(exc.code, "native")
        code = CLOSE_TOO_MANY if exc.code == "too_many_connections" else CLOSE_AUTH
        await ws.close(code, f"{exc.code}: {exc.message}")
        return

    outbox = Outbox(ws, settings.send_queue_bytes)

    async def send(message: dict[str, Any]) -> None:
        outbox.put(dumps(message))

    conn = Connection(conn_id, principal, "native", send)
    writer = asyncio.create_task(outbox.drain())
    try:
        await notifier.establish(conn, ws.query_params.get("lastEventId"))
        await _read_loop(ws, conn, notifier, outbox, writer)
    finally:
        await notifier.release(conn)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        if ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()
        log.info("disconnected", extra={"conn": conn.id})


async def _read_loop(
    ws: WebSocket,
    conn: Connection,
    notifier: Notifier,
    outbox: Outbox,
    writer: asyncio.Task[None],
) -> None:
    limit = notifier.settings.max_message_bytes
    receive = asyncio.ensure_future(ws.receive())
    try:
        while True:
            done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:
                return  # closed as a slow consumer
            frame = receive.result()
            if frame["type"] == "websocket.disconnect":
                return
            raw = frame.get("text")
            if raw is None:
                raw = frame.get("bytes") or b""
            if len(raw) > limit:
                await notifier.protocol.reject(
                    conn, "message_too_large", f"messages are limited to {limit} bytes"
                )
                outbox.close(CLOSE_TOO_BIG, "message_too_large")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(writer), timeout=5)
                return
            try:
                msg = decode_text(raw)
            except ClientError as exc:
                await notifier.protocol.reject(conn, exc.code, exc.message)
            else:
                await notifier.protocol.handle(conn, msg)
            receive = asyncio.ensure_future(ws.receive())
    except WebSocketDisconnect:
        return
    finally:
        receive.cancel()
