"""The Socket.IO server as jobcast's adapter sees it, on either transport path.

The adapter (:mod:`notifier.adapters.sio`) registers its event handlers on
:attr:`SocketServer.sio` with python-socketio's public API and writes to each connection
through a :class:`Link`. What differs between the paths stays here:

- ``fast`` (:mod:`~notifier.transport.socketio_fast` and the modules it builds on): Engine.IO
  sessions without tasks of their own, messages encoded once for all their recipients and
  written as ready WebSocket frames.
- ``stock``: python-socketio and python-engineio as released; a message is sent with
  ``emit``.

On both paths the server is hardened the same way, by wrapping the two Engine.IO event
handlers python-socketio registers (``connect`` and ``message``):

- an Engine.IO session that has not connected to the namespace (authenticated) within
  ``auth_timeout`` seconds is closed, without waiting for a polling client to fetch its
  CLOSE packet (python-engineio's ``disconnect`` would wait for a GET that may never come);
- binary packets are refused (jobcast speaks JSON) and their attachments dropped;
- a packet that is not Socket.IO, or an event that is not ``[name, payload]``, is answered
  ``bad_request`` through ``refuse`` and dropped; the session goes on;
- an oversized polling POST is answered at once (:meth:`SocketServer.asgi`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qs

import socketio
from socketio import packet as sio_packet

from notifier.contract.endpoints import SOCKETIO_PATH
from notifier.transport import compat

log = logging.getLogger(__name__)

#: Packets waiting in a stock Engine.IO session's queue before its link says it is backed up.
STOCK_QUEUE_HIGH = 64
#: Socket.IO's BINARY_EVENT and BINARY_ACK packet types, as the first character of a packet.
_BINARY_PACKETS = (str(sio_packet.BINARY_EVENT), str(sio_packet.BINARY_ACK))

OriginCheck = Callable[[str | None, dict[str, Any]], bool]
Refuse = Callable[[str, str], Awaitable[None]]


def _content_length(scope: dict[str, Any]) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def client_of(environ: dict[str, Any]) -> Any:
    """The ASGI ``scope["client"]`` of a python-engineio request environ (its REMOTE_ADDR
    is a constant); None when unknown."""
    scope = environ.get("asgi.scope")
    return scope.get("client") if isinstance(scope, dict) else None


def scheme_of(environ: dict[str, Any]) -> str:
    """``http`` or ``https`` as the client sees it: ASGI's ``scope["scheme"]``, which uvicorn
    takes from X-Forwarded-Proto only when the request comes from a trusted proxy."""
    scope = environ.get("asgi.scope")
    scheme = scope.get("scheme") if isinstance(scope, dict) else None
    return "https" if scheme in ("https", "wss") else "http"


class Link(Protocol):
    """One Socket.IO connection's write side."""

    #: ``websocket`` or ``polling`` when the connection was made.
    transport: str

    async def send(self, message: dict[str, Any]) -> None:
        """Send one jobcast message (its ``type`` is the event name); may wait."""

    def write_now(self, message: dict[str, Any]) -> bool:
        """Hand ``message`` to the session without waiting, or say False (then ``send``)."""

    def backed_up(self) -> bool:
        """The session holds more than it should: hold further messages back."""

    def on_upgrade(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the connection has moved from polling to WebSocket."""


class StockLink:
    """A link through python-socketio's ``emit``."""

    __slots__ = ("_eio_sid", "_sid", "_sio", "_upgrade_timer", "transport")

    #: When a stock link looks for an upgrade: python-engineio has no upgrade event.
    UPGRADE_CHECKS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, sio: socketio.AsyncServer, sid: str) -> None:
        self._sio = sio
        self._sid = sid
        self._eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        self._upgrade_timer: asyncio.TimerHandle | None = None
        self.transport: str = sio.transport(sid)

    def _session(self) -> Any:
        return self._sio.eio.sockets.get(self._eio_sid) if self._eio_sid else None

    async def send(self, message: dict[str, Any]) -> None:
        await self._sio.emit(message["type"], message, to=self._sid)

    def write_now(self, message: dict[str, Any]) -> bool:
        return False

    def backed_up(self) -> bool:
        session = self._session()
        return session is not None and session.queue.qsize() > STOCK_QUEUE_HIGH

    def on_upgrade(self, callback: Callable[[], None]) -> None:
        if self.transport != "polling":
            return
        loop = asyncio.get_running_loop()
        checks = iter(self.UPGRADE_CHECKS)

        def check() -> None:
            session = self._session()
            if session is None or session.closed:
                return
            if getattr(session, "upgraded", False):
                callback()
                return
            delay = next(checks, None)
            if delay is not None:
                self._upgrade_timer = loop.call_later(delay, check)

        check()


class SocketServer:
    """python-socketio's ASGI server with jobcast's options, on the chosen path."""

    def __init__(
        self,
        *,
        fast_requested: bool,
        origin_allowed: OriginCheck,
        refuse: Refuse,
        ping_interval: float,
        ping_timeout: float,
        max_http_buffer_size: int,
        auth_timeout: float,
    ) -> None:
        self.path = compat.choose(fast_requested)
        self._refuse = refuse
        self._auth_timeout = auth_timeout
        self._max_http_buffer_size = max_http_buffer_size
        self._closing: set[asyncio.Task[None]] = set()
        server_class: type[socketio.AsyncServer] = socketio.AsyncServer
        if self.path == compat.FAST:
            from notifier.transport import socketio_fast

            socketio_fast.install()
            server_class = socketio_fast.FastServer
        self.sio = server_class(
            async_mode="asgi",
            cors_allowed_origins=origin_allowed,
            transports=["polling", "websocket"],
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_http_buffer_size=max_http_buffer_size,
            http_compression=True,
            # handle one client's messages in order (subscribe, then unsubscribe, ...)
            async_handlers=False,
            logger=False,
            engineio_logger=False,
        )
        self._link = self._link_factory()
        self._wrap_engineio_handlers()

    # --- per connection

    def link(self, sid: str) -> Link:
        """The write side of the connected client ``sid``."""
        return self._link(sid)

    @staticmethod
    def forget_handshake(environ: dict[str, Any]) -> None:
        """Drop what the handshake's request carried, once the connect handler has read it
        (called after each Socket.IO CONNECT; on both paths).

        python-socketio keeps a session's environ for the session's whole life, and
        python-engineio's WebSocket handler holds it (with the ASGI scope) while it runs:
        about 2.5 KiB per idle connection of request headers, in the environ and again in
        the scope, that nothing reads after the connect handler. It also takes the token of
        a ``?token=`` connection out of the process's memory. What servers and libraries
        read later (``asgi.*``, ``REQUEST_METHOD``, ``PATH_INFO``, ...) stays.
        """
        kept = {
            name: value
            for name, value in environ.items()
            if not name.startswith(("HTTP_", "CONTENT_")) and name != "wsgi.input"
        }
        kept["QUERY_STRING"] = ""
        kept["RAW_URI"] = environ.get("PATH_INFO", "")
        environ.clear()  # frees the table grown for the headers, not only its entries
        environ.update(kept)
        scope = environ.get("asgi.scope")
        if isinstance(scope, dict):
            scope["headers"] = []
            scope["query_string"] = b""

    def _link_factory(self) -> Callable[[str], Link]:
        sio = self.sio
        if self.path == compat.FAST:
            from notifier.transport import socketio_fast

            packets = socketio_fast.packet_cache()
            return lambda sid: socketio_fast.FastLink(sio, sid, packets)
        return lambda sid: StockLink(sio, sid)

    def asgi(self, other_app: Any) -> Any:
        """Socket.IO at :data:`SOCKETIO_PATH`; everything else goes to ``other_app``.

        A polling POST that announces a body over ``max_http_buffer_size`` is answered 400
        and its session closed at once, before Engine.IO reads it (python-engineio would
        close the session too, then wait, with the request, for a GET that may never come).
        """
        app = socketio.ASGIApp(self.sio, other_asgi_app=other_app, socketio_path=SOCKETIO_PATH)
        limit = self._max_http_buffer_size
        # Fast path: a WebSocket goes straight to Engine.IO, as python-socketio's and
        # python-engineio's ASGI apps would send it, minus their two coroutine frames, which
        # a WebSocket's task holds for as long as the connection lives.
        engineio_handle = self.sio.eio.handle_request if self.path == compat.FAST else None

        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if (
                scope["type"] == "http"
                and scope.get("method") == "POST"
                and scope.get("path", "").rstrip("/") == SOCKETIO_PATH
                and _content_length(scope) > limit
            ):
                sid = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sid")
                if sid:
                    await self._close_session(sid[0])
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": b"payload too large"})
                return
            if engineio_handle is not None and scope["type"] == "websocket":
                path = scope.get("path", "")
                if (path if path.endswith("/") else path + "/").startswith(SOCKETIO_PATH + "/"):
                    await engineio_handle(scope, receive, send)
                    return
            await app(scope, receive, send)

        return guarded

    # --- hardening, on both paths

    def _wrap_engineio_handlers(self) -> None:
        sio, eio = self.sio, self.sio.eio
        on_connect = eio.handlers["connect"]
        on_message = eio.handlers["message"]
        on_session: Callable[[socketio.AsyncServer, str, dict[str, Any]], None] | None = None
        dispatch_event: Callable[[str, sio_packet.Packet], Awaitable[None]] | None = None
        if self.path == compat.FAST:
            from notifier.transport import socketio_fast

            on_session = socketio_fast.on_session
            dispatch_event = socketio_fast.event_dispatcher(sio)

        async def connect(eio_sid: str, environ: dict[str, Any]) -> Any:
            if on_session is not None:
                on_session(sio, eio_sid, environ)
            result = await on_connect(eio_sid, environ)
            asyncio.get_running_loop().call_later(
                self._auth_timeout, self._expire_unauthenticated, eio_sid
            )
            return result

        async def message(eio_sid: str, data: str | bytes) -> None:
            if isinstance(data, bytes):
                return  # an attachment of a binary packet that was refused (or of none)
            if data[:1] in _BINARY_PACKETS:
                await self._refuse_packet(eio_sid, "binary packets are not accepted: send JSON")
                return
            try:
                pkt = sio_packet.Packet(encoded_packet=data)
            except ValueError as exc:  # not a Socket.IO packet (garbage, bad JSON)
                await self._refuse_packet(eio_sid, f"not a Socket.IO packet: {exc}")
                return
            if pkt.packet_type == sio_packet.EVENT and not (
                isinstance(pkt.data, list) and pkt.data and isinstance(pkt.data[0], str)
            ):
                await self._refuse_packet(eio_sid, 'an event is ["<type>", {...}]')
                return
            try:
                if dispatch_event is not None and pkt.packet_type == sio_packet.EVENT:
                    await dispatch_event(eio_sid, pkt)
                else:
                    await on_message(eio_sid, data)
                    if pkt.packet_type == sio_packet.CONNECT:
                        self._connected(eio_sid)
            except (ValueError, TypeError, KeyError, IndexError) as exc:  # malformed
                error = f"{type(exc).__name__}: {exc}"
                await self._refuse_packet(eio_sid, f"malformed Socket.IO packet: {error}")

        eio.on("connect", connect)
        eio.on("message", message)

    def _connected(self, eio_sid: str) -> None:
        """The namespace's connect handler has run (handlers are not run as tasks)."""
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        environ = self.sio.get_environ(sid) if sid is not None else None
        if isinstance(environ, dict):
            self.forget_handshake(environ)

    async def _refuse_packet(self, eio_sid: str, message: str) -> None:
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None:
            log.info("protocol error before connect", extra={"eio_sid": eio_sid, "error": message})
        else:
            await self._refuse(sid, message)

    def _expire_unauthenticated(self, eio_sid: str) -> None:
        session = self.sio.eio.sockets.get(eio_sid)
        if session is None or session.closed:
            return
        if self.sio.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            return
        log.info("closing a session that never authenticated", extra={"eio_sid": eio_sid})
        task = asyncio.get_running_loop().create_task(self._close_session(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_session(self, eio_sid: str) -> None:
        """Close an Engine.IO session now; its CLOSE packet waits for the next GET (or goes
        out on its WebSocket), and a later request of the session is answered 400."""
        eio = self.sio.eio
        session = eio.sockets.get(eio_sid)
        if session is not None:
            await session.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
            eio.sockets.pop(eio_sid, None)
