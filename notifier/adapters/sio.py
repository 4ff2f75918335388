"""The Socket.IO adapter: python-socketio events in, hub connections out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import engineio
import engineio.async_socket
import engineio.exceptions
import engineio.payload
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from notifier.contract.events import dumps
from notifier.core.hub import Connection
from notifier.core.outbox import SLOW_CONSUMER, EncodeCache, Outbox
from notifier.edge.auth import AuthError, token_from
from notifier.transport import inline as eager
from notifier.transport.lazy_queue import LazyQueue
from notifier.transport.serve import WRITE_FRAME, WriteFrame, text_frame

if TYPE_CHECKING:
    from notifier.core.service import Notifier

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
    """python-engineio's session, with a WebSocket transport that costs no task.

    Upstream runs, per WebSocket session, a writer task fed by a queue, a task per received
    frame (``asyncio.wait_for`` around each read) and a ping task; a message to thousands
    of sessions wakes thousands of writer tasks. Here, on a WebSocket:

    - a packet is written by the call that sends it (:meth:`push`; the server's ``send`` is
      run eagerly, :mod:`notifier.transport.inline`); only if that write has to wait (flow
      control) do
      later packets queue, behind it, for a task that exists until they are written;
    - the reader is the connection's own ASGI task, under one deadline that each received
      frame moves (a silent peer is dropped after ping interval + ping timeout, as
      upstream);
    - the next ping is a loop timer, not a sleeping task.

    Long-polling keeps upstream's queue, which each GET drains (``poll``, without a task
    per wait).
    """

    last_ping: float | None
    connected: bool
    _ws: Any = None  # the Engine.IO WebSocket while this session is on one
    _write_frame: WriteFrame | None = None  # the server's frame writer for that WebSocket
    _flushing: asyncio.Task[None] | None = None  # writes what a waiting send held back
    _ping: asyncio.TimerHandle | None = None
    #: Called once the session has moved from long-polling to a WebSocket.
    on_upgrade: Callable[[], None] | None = None

    async def poll(self) -> list[eio_packet.Packet]:
        queue = self.queue
        try:
            if queue.empty():
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

    async def send(self, pkt: eio_packet.Packet) -> None:
        if await self.check_ping_timeout():
            self.push(pkt)

    def push(self, pkt: eio_packet.Packet) -> None:
        """Write ``pkt`` to the WebSocket now, or queue it (polling, upgrading, backed up)."""
        ws = self._ws
        if ws is None or self._flushing is not None or self.upgrading or not self.queue.empty():
            self.queue.put_nowait(pkt)
            self._flush()
            return
        frame = getattr(pkt, "frame", None)
        if frame is not None and self._write_frame is not None and self._write_frame(frame):
            return
        try:
            pending = eager.start(ws.send(pkt.encode()))
        except Exception as exc:  # the connection is gone: its reader ends the session
            self._broken(exc)
            return
        if pending is not None:
            self._flushing = pending
            pending.add_done_callback(self._flushed)

    def _flush(self) -> None:
        if (
            self._ws is not None
            and self._flushing is None
            and not self.upgrading
            and not self.queue.empty()
        ):
            try:
                pending = eager.start(self._write_queued())
            except Exception as exc:
                self._broken(exc)
                return
            if pending is not None:
                self._flushing = pending
                pending.add_done_callback(self._flushed)

    async def _write_queued(self) -> None:
        while self._ws is not None and not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is None:
                return
            await self._ws.send(pkt.encode())

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing = None
        if not task.cancelled() and task.exception() is not None:
            self._broken(task.exception())
        else:
            self._flush()

    def _broken(self, exc: BaseException | None) -> None:
        log.debug("websocket write failed", extra={"eio_sid": self.sid, "error": repr(exc)})
        self._ws = None  # packets queue (bounded by the outbox) until the reader ends

    def schedule_ping(self) -> None:
        if self.last_ping:  # only once the previous ping was answered
            self.last_ping = None
            loop = asyncio.get_running_loop()
            self._ping = loop.call_later(self.server.ping_interval, self._send_ping_now)

    def _send_ping_now(self) -> None:
        self._ping = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.push(eio_packet.Packet(eio_packet.PING))

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        # As upstream, the client closes the WebSocket once it has the CLOSE packet (a
        # silent one is dropped at the read deadline). Closing it from here as well went
        # with python-engineio clients left with open aiohttp sessions in test runs.
        await super().close(wait=wait, abort=abort, reason=reason)

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        extensions = environ.get("asgi.scope", {}).get("extensions") or {}
        self._write_frame = extensions.get(WRITE_FRAME)
        try:
            return await super()._upgrade_websocket(environ)
        finally:
            self._write_frame = None

    async def _websocket_handler(self, ws: Any) -> None:
        server = self.server
        limit = server.ping_interval + server.ping_timeout
        loop = asyncio.get_running_loop()
        if self.connected:  # polling until now: upstream's upgrade exchange first
            try:
                async with asyncio.timeout(limit):
                    upgraded = await self._upgrade(ws)
            except (TimeoutError, OSError, ValueError):
                upgraded = False
            if not upgraded:
                return  # the session goes on polling
        if self.connected and self.on_upgrade is not None:
            self.on_upgrade()
        self.connected = self.upgraded = True
        self._ws = ws
        self._flush()  # what was queued before (the OPEN packet, a CONNECT answer)
        try:
            async with asyncio.timeout(loop.time() + limit) as deadline:
                while not self.closed:
                    data = await ws.wait()
                    deadline.reschedule(loop.time() + limit)
                    if data and len(data) > server.max_http_buffer_size:
                        break  # as upstream: an oversized frame ends the session
                    try:
                        await self.receive(eio_packet.Packet(encoded_packet=data))
                    except engineio.exceptions.UnknownPacketError:
                        pass
                    except engineio.exceptions.SocketIsClosedError:
                        break
        except (TimeoutError, OSError, ValueError):
            pass  # a silent peer, a disconnect, an undecodable frame: the session ends
        finally:
            self._ws = None
            if self._flushing is not None:
                self._flushing.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

    async def _upgrade(self, ws: Any) -> bool:
        """Upstream's polling → WebSocket upgrade: the probe, then the UPGRADE packet."""
        self.upgrading = True  # packets queue meanwhile; a pending GET gets a NOOP
        try:
            probe = eio_packet.Packet(encoded_packet=await ws.wait())
            if probe.packet_type != eio_packet.PING or probe.data != "probe":
                log.info("failed websocket upgrade: no probe", extra={"eio_sid": self.sid})
                return False
            await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending GET
            done = eio_packet.Packet(encoded_packet=await ws.wait())
            if done.packet_type != eio_packet.UPGRADE:
                log.info("failed websocket upgrade: no UPGRADE", extra={"eio_sid": self.sid})
                return False
            return True
        finally:
            self.upgrading = False


class _EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server: sessions without tasks of their own (:class:`_Socket`).

    - ``disconnect`` does not wait for the client to fetch its CLOSE packet. Upstream waits
      until the session's queue is drained, which for a polling client that holds no GET is
      never: the request that closes the session (an oversized POST answered 400, the
      authentication timeout's timer) would hang with it, and the session with it. The
      CLOSE packet is still queued for the next GET (or written to the WebSocket); a later
      request of the session is answered 400.
    - The service task that drops sessions whose client stopped answering pings checks
      them all in one pass every quarter of the ping timeout. Upstream spreads one pass
      over a ping timeout with a wait per session, each ``asyncio.wait_for`` a task: with
      thousands of idle connections, most of the server's idle CPU.
    """

    def create_queue(self, *args: Any, **kwargs: Any) -> LazyQueue[Any]:
        return (
            LazyQueue()
        )  # a session's packets: empty but for moments (notifier.transport.lazy_queue)

    async def disconnect(self, sid: str | None = None) -> None:
        if sid is None:
            await super().disconnect()
            return
        socket = self.sockets.get(sid)
        if socket is not None:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(sid, None)

    async def _service_task(self) -> None:
        self.service_task_event = stop = self.create_event()
        interval = max(0.5, self.ping_timeout / 4)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            deadline = time.time() - self.ping_timeout
            for sid, socket in list(self.sockets.items()):
                if socket.closed:
                    self.sockets.pop(sid, None)
                elif not socket.closing and socket.last_ping and socket.last_ping < deadline:
                    try:
                        await socket.check_ping_timeout()  # closes it
                    except Exception:
                        log.exception("closing a silent session failed", extra={"eio_sid": sid})


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
    _expiring: set[asyncio.Task[None]]
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
        loop = asyncio.get_running_loop()
        loop.call_later(self.auth_timeout, self._expire_unauthenticated, eio_sid)

    def _expire_unauthenticated(self, eio_sid: str) -> None:
        if eio_sid in self.environ and self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            log.info("closing a session that never authenticated", extra={"eio_sid": eio_sid})
            task = asyncio.get_running_loop().create_task(self.eio.disconnect(eio_sid))
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)

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


class _Message(eio_packet.Packet):  # type: ignore[misc]
    """An Engine.IO MESSAGE encoded once for all its recipients: as text (polling, any
    WebSocket) and as a WebSocket frame (:data:`notifier.transport.serve.WRITE_FRAME`)."""

    def __init__(self, data: str) -> None:
        super().__init__(eio_packet.MESSAGE, data)
        self.text: str = super().encode()
        self.frame = text_frame(self.text)

    def encode(self, b64: bool = False) -> str:
        return self.text


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
    sio._expiring = set()
    connections: dict[str, Connection] = {}

    def encode(message: dict[str, Any]) -> list[eio_packet.Packet]:
        # What python-socketio's emit builds (an EVENT of namespace "/": "2" + JSON of
        # [type, message]; jobcast's messages never hold binary), built once per event for
        # all its recipients, without the packet class's walk looking for binary data.
        return [_Message(_EVENT + dumps([message["type"], message]))]

    packets = EncodeCache(encode)
    background: set[asyncio.Task[None]] = set()
    outboxes: dict[str, Outbox] = {}
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
            eio_socket = session()
            if eio_socket is not None:
                for eio_pkt in packets(message):
                    await eio_socket.send(eio_pkt)

        async def close(code: int, reason: str) -> None:
            log.warning("closing connection", extra={"conn": sid, "reason": reason})
            conn.lost = reason == SLOW_CONSUMER
            await sio.disconnect(sid)

        eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        eio_session = sio.eio.sockets.get(eio_sid) if eio_sid else None  # for the whole session

        def session() -> Any:
            """This connection's Engine.IO session, or None once it is gone."""
            return None if eio_session is None or eio_session.closed else eio_session

        def backed_up() -> bool:
            eio_socket = session()
            return eio_socket is not None and eio_socket.queue.qsize() > ENGINEIO_QUEUE_HIGH

        def write_now(message: dict[str, Any]) -> bool:
            # Straight to the Engine.IO session, as its send_packet would (minus a
            # coroutine and a log call per packet), unless it is gone, closing or backed up.
            eio_socket = eio_session
            if (
                eio_socket is None
                or eio_socket.closing
                or eio_socket.closed
                or eio_socket.queue.qsize() > ENGINEIO_QUEUE_HIGH
            ):
                return False
            for eio_pkt in packets(message):
                eio_socket.push(eio_pkt)
            return True

        outbox = Outbox(
            write, close, settings.send_queue_bytes, backpressure=backed_up, write_now=write_now
        )
        conn = Connection(
            sid, principal, sio.transport(sid), outbox.put, outbox.close, notifier.rate_limiter()
        )
        if eio_session is not None:  # conn.transport follows an upgrade from polling

            def upgraded() -> None:
                conn.transport = "websocket"

            eio_session.on_upgrade = upgraded
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

    async def refuse(sid: str, message: str) -> None:
        conn = connections.get(sid)
        if conn is not None:
            await notifier.protocol.reject(conn, "bad_request", message)

    sio.refuse = refuse

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
            return await notifier.protocol.too_large(conn, event)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict) or size < 0:
            return await notifier.protocol.reject(
                conn, "bad_request", "the payload must be one JSON object", event
            )
        return await notifier.protocol.handle(conn, {**payload, "type": event})

    return sio
