"""The Socket.IO adapter: python-socketio events in, hub connections out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import engineio
import engineio.async_socket
import engineio.exceptions
import engineio.payload
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from notifier.auth import AuthError, token_from
from notifier.events import dumps
from notifier.hub import Connection
from notifier.outbox import SLOW_CONSUMER, EncodeCache, Outbox

if TYPE_CHECKING:
    from notifier.service import Notifier

log = logging.getLogger(__name__)

SOCKETIO_PATH = "ws/job-status"
# A polling POST may carry a client's whole burst (python-engineio drops a POST of more than
# 16 packets whole, answering 200); the body stays capped by max_http_buffer_size.
engineio.payload.Payload.max_decode_packets = 64
#: Packets waiting in Engine.IO's own queue before the outbox holds further messages back.
ENGINEIO_QUEUE_HIGH = 64


def _environ_headers(environ: dict[str, Any]) -> dict[str, str]:
    auth = environ.get("HTTP_AUTHORIZATION")
    return {"authorization": auth} if auth else {}


class _Socket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's session, waiting for its next packet without a task per wake-up.

    Upstream's ``poll`` wraps every ``queue.get()`` in ``asyncio.wait_for``, which creates
    a task each time a WebSocket writer wakes: per recipient of every message. Same
    behaviour here (the ping timeout bounds a long-poll; the writer stops on ``None``),
    with ``asyncio.timeout`` for a long-poll, no timer for the WebSocket writer, and no
    wait at all when packets are already queued.
    """

    async def poll(self) -> list[eio_packet.Packet]:
        queue = self.queue
        try:
            if queue.empty() and self.upgraded:
                # The WebSocket writer: released by the None its reader puts when it ends
                # (a dead peer ends it by Engine.IO's read timeout), so no timer here.
                first = await queue.get()
            elif queue.empty():
                async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                    first = await queue.get()
            else:
                first = queue.get_nowait()
            queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise engineio.exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets


class _EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, not waiting for the client to fetch its CLOSE packet.

    Upstream's ``disconnect`` waits until the session's queue is drained, which for a
    polling client that holds no GET is never: the request that closes the session (an
    oversized POST answered 400, the authentication timeout's timer) would hang with it,
    and the session with it. The CLOSE packet is still queued for the next GET or for the
    WebSocket writer; a later request of the session is answered 400.
    """

    async def disconnect(self, sid: str | None = None) -> None:
        if sid is None:
            await super().disconnect()
            return
        socket = self.sockets.get(sid)
        if socket is not None:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(sid, None)


class _Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, hardened for hostile clients.

    - Engine.IO sessions that never authenticate are closed after ``auth_timeout``.
    - Binary packets are refused: jobcast's protocol is JSON, and python-socketio would keep
      a binary event's attachments in memory until as many as it announced (a client may
      announce a billion) have arrived. Stray binary frames are dropped.
    - A packet that is not Socket.IO is logged (INFO, no traceback) and dropped; the session
      goes on, as after any other bad input.
    """

    auth_timeout = 10.0
    _timers: set[asyncio.Task[None]]
    #: Answers a connected client's refused packet: ``(sid, message)``.
    refuse: Callable[[str, str], Awaitable[None]]

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        eio_socket = self.eio.sockets.get(eio_sid)
        if type(eio_socket) is engineio.async_socket.AsyncSocket:
            # python-engineio builds its sessions itself; this one only adds a method
            eio_socket.__class__ = _Socket
        await super()._handle_eio_connect(eio_sid, environ)
        # python-socketio keeps the handshake's environ for the whole session; its request
        # body reader (an instance of a class python-engineio defines per request, ~2.5
        # KiB) is never read again.
        environ.pop("wsgi.input", None)
        timer = asyncio.get_running_loop().create_task(self._expire_unauthenticated(eio_sid))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _expire_unauthenticated(self, eio_sid: str) -> None:
        await asyncio.sleep(self.auth_timeout)
        if eio_sid in self.environ and self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            log.info("closing a session that never authenticated", extra={"eio_sid": eio_sid})
            await self.eio.disconnect(eio_sid)

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        if isinstance(data, bytes):
            return  # an attachment of a binary packet that was refused (or of none)
        if data[:1] in _BINARY_PACKETS:
            await self._refuse(eio_sid, "binary packets are not accepted: send JSON")
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except ValueError as exc:  # not a Socket.IO packet (garbage, bad JSON)
            await self._refuse(eio_sid, f"not a Socket.IO packet: {exc}")
            return
        if pkt.packet_type == sio_packet.EVENT and not (
            isinstance(pkt.data, list) and pkt.data and isinstance(pkt.data[0], str)
        ):
            await self._refuse(eio_sid, 'an event is ["<type>", {...}]')
            return
        try:
            if pkt.packet_type == sio_packet.EVENT:  # decoded once: dispatch it here
                await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
            else:
                await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # a malformed packet
            error = f"{type(exc).__name__}: {exc}"
            await self._refuse(eio_sid, f"malformed Socket.IO packet: {error}")

    async def _refuse(self, eio_sid: str, message: str) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None:
            log.info("protocol error before connect", extra={"eio_sid": eio_sid, "error": message})
        else:
            await self.refuse(sid, message)


#: Socket.IO's BINARY_EVENT and BINARY_ACK packet types, as the first character of a packet.
_BINARY_PACKETS = (str(sio_packet.BINARY_EVENT), str(sio_packet.BINARY_ACK))
_EVENT = str(sio_packet.EVENT)


def create_server(notifier: Notifier) -> socketio.AsyncServer:
    settings = notifier.settings

    def origin_allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http"))
        return notifier.origins.allows(origin, scheme=scheme, host=environ.get("HTTP_HOST"))

    sio = _Server(
        async_mode="asgi",
        cors_allowed_origins=origin_allowed,
        transports=["polling", "websocket"],
        ping_interval=settings.heartbeat_seconds,
        ping_timeout=max(5.0, settings.heartbeat_seconds / 2),
        max_http_buffer_size=settings.max_frame_bytes,
        http_compression=True,
        # handle one client's messages in order (subscribe, then unsubscribe, ...)
        async_handlers=False,
        logger=False,
        engineio_logger=False,
    )
    sio.auth_timeout = settings.auth_timeout_seconds
    sio._timers = set()
    connections: dict[str, Connection] = {}

    def encode(message: dict[str, Any]) -> list[eio_packet.Packet]:
        # What python-socketio's emit builds (an EVENT of namespace "/": "2" + JSON of
        # [type, message]; jobcast's messages never hold binary), built once per event for
        # all its recipients, without the packet class's walk looking for binary data.
        body = _EVENT + dumps([message["type"], message])
        return [eio_packet.Packet(eio_packet.MESSAGE, body)]

    packets = EncodeCache(encode)
    background: set[asyncio.Task[None]] = set()
    writers: dict[str, asyncio.Task[None]] = {}
    establishing: dict[str, asyncio.Task[None]] = {}

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = token_from(auth, _environ_headers(environ), environ.get("QUERY_STRING", ""))
        try:
            principal = notifier.verifier.verify(token)
            await notifier.admit(principal, sid)
        except AuthError as exc:
            notifier.auth_refused(exc.code, "socketio")
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        last_event_id = auth.get("lastEventId") if isinstance(auth, dict) else None

        async def write(message: dict[str, Any]) -> None:
            eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
            if eio_sid is not None:
                for eio_pkt in packets(message):
                    await sio.eio.send_packet(eio_sid, eio_pkt)

        async def close(code: int, reason: str) -> None:
            log.warning("closing connection", extra={"conn": sid, "reason": reason})
            conn.lost = reason == SLOW_CONSUMER
            await sio.disconnect(sid)

        def session() -> Any:
            """This connection's Engine.IO session, or None once it is gone."""
            eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
            return sio.eio.sockets.get(eio_sid) if eio_sid else None

        def backed_up() -> bool:
            eio_socket = session()
            return eio_socket is not None and eio_socket.queue.qsize() > ENGINEIO_QUEUE_HIGH

        def write_now(message: dict[str, Any]) -> bool:
            # Straight into Engine.IO's queue, as its send_packet would (minus a coroutine
            # and a log call per packet), unless the session is gone, closing or backed up.
            eio_socket = session()
            if eio_socket is None or eio_socket.closing or eio_socket.closed:
                return False
            if eio_socket.queue.qsize() > ENGINEIO_QUEUE_HIGH:
                return False
            for eio_pkt in packets(message):
                eio_socket.queue.put_nowait(eio_pkt)
            return True

        outbox = Outbox(
            write, close, settings.send_queue_bytes, backpressure=backed_up, write_now=write_now
        )
        conn = Connection(
            sid, principal, sio.transport(sid), outbox.put, outbox.close, notifier.rate_limiter()
        )
        connections[sid] = conn

        async def established() -> None:
            # Runs after python-socketio has sent the CONNECT packet, so the client has
            # its connection before the first message arrives.
            if sid not in connections:
                return
            writers[sid] = asyncio.get_running_loop().create_task(outbox.drain())
            await notifier.establish(
                conn, last_event_id if isinstance(last_event_id, str) else None
            )

        task = asyncio.get_running_loop().create_task(established())
        background.add(task)
        task.add_done_callback(background.discard)
        establishing[sid] = task
        task.add_done_callback(lambda done: establishing.pop(sid, None))

    async def refuse(sid: str, message: str) -> None:
        conn = connections.get(sid)
        if conn is not None:
            await notifier.protocol.reject(conn, "bad_request", message)

    sio.refuse = refuse

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        conn = connections.pop(sid, None)
        establishing.pop(sid, None)
        writer = writers.pop(sid, None)
        if writer is not None:
            writer.cancel()
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
            return await notifier.protocol.too_large(conn, event)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict) or size < 0:
            return await notifier.protocol.reject(
                conn, "bad_request", "the payload must be one JSON object", event
            )
        return await notifier.protocol.handle(conn, {**payload, "type": event})

    return sio
