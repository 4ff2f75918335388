"""The Socket.IO adapter: python-socketio events in, hub connections out.

Everything that depends on how python-socketio and python-engineio work inside (the fast
and stock paths, the hardening against hostile clients) is behind
:class:`notifier.transport.socketio_server.SocketServer`; this module uses only the
Notifier's narrow interface (:class:`notifier.core.port.NotifierPort`) and python-socketio's
public event API.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio

from notifier.contract.events import dumps
from notifier.core.hub import Connection
from notifier.core.outbox import SLOW_CONSUMER, Outbox
from notifier.core.port import NotifierPort
from notifier.edge.auth import AuthError, Peer, token_from
from notifier.transport.socketio_server import SocketServer, client_of, scheme_of

log = logging.getLogger(__name__)


def _environ_headers(environ: dict[str, Any]) -> dict[str, str]:
    auth = environ.get("HTTP_AUTHORIZATION")
    return {"authorization": auth} if auth else {}


def create_server(notifier: NotifierPort) -> SocketServer:
    settings = notifier.settings

    def origin_allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        # X-Forwarded-Proto counts only from JOBCAST_TRUSTED_PROXIES (uvicorn checks).
        scheme = scheme_of(environ)
        return notifier.origins.allows(origin, scheme=scheme, host=environ.get("HTTP_HOST"))

    connections: dict[str, Connection] = {}

    async def refuse(sid: str, message: str) -> None:
        conn = connections.get(sid)
        if conn is not None:
            await notifier.commands.reject(conn, "bad_request", message)

    server = SocketServer(
        fast_requested=settings.fast_transport,
        origin_allowed=origin_allowed,
        refuse=refuse,
        ping_interval=settings.heartbeat_seconds,
        ping_timeout=max(5.0, settings.heartbeat_seconds / 2),
        max_http_buffer_size=settings.max_frame_bytes,
        auth_timeout=settings.auth_timeout_seconds,
    )
    sio = server.sio
    background: set[asyncio.Task[None]] = set()
    outboxes: dict[str, Outbox] = {}
    establishing: dict[str, asyncio.Task[None]] = {}

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        query = environ.get("QUERY_STRING", "")
        token = token_from(auth, _environ_headers(environ), query)
        peer = Peer.of(client_of(environ), query)
        try:
            principal = await notifier.authenticate(token, sid, peer, "socketio")
        except AuthError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        last_event_id = auth.get("lastEventId") if isinstance(auth, dict) else None

        async def close(code: int, reason: str) -> None:
            log.warning("closing connection", extra={"conn": sid, "reason": reason})
            conn.lost = reason == SLOW_CONSUMER
            await sio.disconnect(sid)

        link = server.link(sid)
        outbox = Outbox(
            link.send,
            close,
            settings.send_queue_bytes,
            backpressure=link.backed_up,
            write_now=link.write_now,
        )
        conn = Connection(
            sid,
            principal,
            link.transport,
            outbox.put,
            outbox.close,
            notifier.rate_limiter(),
            peer.address,
        )

        if link.transport == "polling":  # no closure held by a WebSocket connection

            def upgraded() -> None:  # conn.transport follows an upgrade from polling
                conn.transport = "websocket"

            link.on_upgrade(upgraded)
        connections[sid] = conn
        outboxes[sid] = outbox

        async def established() -> None:
            # Runs after python-socketio has sent the CONNECT packet, so the client has
            # its connection before the first message arrives.
            if sid not in connections:
                return
            outbox.start()
            await notifier.establish(
                conn, last_event_id if isinstance(last_event_id, str) else None
            )

        task = asyncio.get_running_loop().create_task(established())
        background.add(task)
        task.add_done_callback(background.discard)
        establishing[sid] = task
        task.add_done_callback(lambda done: establishing.pop(sid, None))

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        conn = connections.pop(sid, None)
        establishing.pop(sid, None)
        outbox = outboxes.pop(sid, None)
        if outbox is not None:
            outbox.stop()
        if conn is not None:
            await notifier.release(conn)
            log.info("disconnected", extra={"conn": sid, "reason": str(reason)})

    @sio.on("*")
    async def message(event: str, sid: str, *args: Any) -> dict[str, Any] | None:
        conn = connections.get(sid)
        if conn is None:
            return None
        pending = establishing.pop(sid, None)
        if pending is not None and not pending.done():
            # The welcome and the replay come before any answer (a subscribe snapshot
            # must not overtake the replayed events).
            await asyncio.shield(pending)
        payload = args[0] if len(args) == 1 else {} if not args else args
        try:
            size = len(dumps(payload).encode())  # bytes, not characters
        except (TypeError, ValueError):
            size = -1
        if size > settings.max_message_bytes:
            return await notifier.commands.too_large(conn, event)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict) or size < 0:
            return await notifier.commands.reject(
                conn, "bad_request", "the payload must be one JSON object", event
            )
        return await notifier.commands.handle(conn, {**payload, "type": event})

    return server
