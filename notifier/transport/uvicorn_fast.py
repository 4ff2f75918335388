"""Fast path, uvicorn and websockets: a WebSocket protocol that writes pre-serialised frames.

Used only when :func:`notifier.transport.compat.choose` says ``fast``; every private name
of uvicorn and websockets it relies on is listed in :data:`notifier.transport.compat.NEEDS`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import Protocol, State

from notifier.transport.frames import KEEPALIVE_OFF, RUN_AFTER, WRITE_FRAME
from notifier.transport.lazy_queue import LazyEvent, LazyQueue

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent


#: Connections with frames waiting after which they are written without waiting for the
#: end of the loop turn.
FLUSH_BATCH = 256


class _Flusher:
    """The connections of one event loop with frames waiting, written in one pass at the
    end of the loop turn (or once :data:`FLUSH_BATCH` wait), so that a connection's
    frames of one turn leave in one system call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[FastWebSocketProtocol] = []
        self._scheduled = False
        #: The frame last given to a connection: the same one again is a fan-out.
        self.last_frame: bytes | None = None

    def add(self, protocol: FastWebSocketProtocol) -> None:
        self._waiting.append(protocol)
        if len(self._waiting) >= FLUSH_BATCH:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self.last_frame = None
        self.flush()

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for protocol in waiting:
            protocol.flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


class FastWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, with these changes.

    - It answers the handshakes websockets refuses: for a request line or header over its
      limits (8 KiB) websockets queues a 414/431 response, but uvicorn writes a
      rejected handshake's response only once a request was parsed, so the client would be
      held, unanswered, until it gives up.
    - It does not keep the handshake's request and response once the connection is open
      (websockets' handshake parser holds the request to the end: it is replaced by the
      frame parser it would go on with), its queue of received messages is a
      :class:`~notifier.transport.lazy_queue.LazyQueue` and its ``writable`` flag a
      :class:`~notifier.transport.lazy_queue.LazyEvent`: about 6 KiB less per idle
      connection.
    - An application with a heartbeat of its own (Engine.IO's pings and read deadline) turns
      uvicorn's WebSocket keepalive pings off for its connection
      (:data:`~notifier.transport.frames.KEEPALIVE_OFF` in the scope's extensions): a
      loop timer per idle connection less, and no second ping on the wire.
    - Frames sent in one turn of the event loop leave in one ``transport.write`` (one
      system call) instead of one each: websockets keeps the frames until
      ``data_to_send()``, which :class:`_Flusher` calls at the end of the turn. Any other
      write of the connection (a close, a pong) takes them first, in order. Flow control
      is unchanged: while the transport is paused, sends go through uvicorn's own path,
      which waits.
    - It offers the application a frame already serialised (:data:`WRITE_FRAME` in the
      scope's extensions): a message to thousands of connections is framed once, not once
      per connection, and written without a coroutine (at once to each connection with
      nothing waiting, so that the first recipients have it while the rest are served).
      The frame joins websockets' own output in order, so what it writes and what
      ``send`` writes never interleave. Used only while the connection is open and not
      paused; otherwise the caller sends.
    - An application may hand the connection's task a coroutine to go on with once its
      ASGI call has returned (:data:`~notifier.transport.frames.RUN_AFTER`): Engine.IO's
      read loop, without the dozen frames of the call chain that set it up (uvicorn's
      middleware, the routing, python-engineio's request handling and their locals, about
      3 KiB per idle connection).
    """

    _flush_scheduled = False  # in its loop's _Flusher
    _flusher: _Flusher | None = None
    _keepalive = True  # uvicorn's WebSocket pings (off: the application has its own)
    _then: Coroutine[Any, Any, None] | None = None  # what the task runs after the app

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LazyQueue()  # type: ignore[assignment]
        self.writable = LazyEvent()  # type: ignore[assignment]
        self.writable.set()

    def keepalive_off(self) -> None:
        """No more uvicorn keepalive pings on this connection (the app has a heartbeat)."""
        self._keepalive = False
        self.stop_keepalive()

    def start_keepalive(self) -> None:
        if self._keepalive:
            super().start_keepalive()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (
            not self.handshake_initiated
            and self.conn.handshake_exc is not None
            and not self.transport.is_closing()
        ):
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    async def run_asgi(self) -> None:
        # uvicorn's, which it replaces (the same single frame per connection), but for what
        # the application handed over to run after its call (``RUN_AFTER``).
        if isinstance(getattr(self.conn, "writes", None), list):  # websockets' output buffer
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[WRITE_FRAME] = self.write_frame
            extensions[KEEPALIVE_OFF] = self.keepalive_off
            extensions[RUN_AFTER] = self.run_after
        try:
            result = await self.app(self.scope, self.receive, self.send)
            then, self._then = self._then, None
            if then is not None:
                await then
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        finally:
            if self._then is not None:  # handed over by a call that then failed
                self._then.close()
                self._then = None
        if self.close_timer is None:
            self.transport.close()

    def run_after(self, then: Coroutine[Any, Any, None]) -> None:
        """Run ``then`` in this connection's task once the ASGI call has returned."""
        if self._then is not None:
            then.close()
            raise RuntimeError("a connection runs one coroutine after its ASGI call")
        self._then = then

    def _drop_handshake_parser(self) -> None:
        # websockets' ServerProtocol.parse reads the request, then goes on as the frame
        # parser (``yield from Protocol.parse``) with the request still a local of its
        # frame. Start that frame parser afresh instead, unless bytes of a frame already
        # arrived (a client may not send before the 101 answer; then nothing is changed).
        # Guarded so that a websockets release laid out differently keeps its own parser.
        conn = self.conn
        buffer = getattr(getattr(conn, "reader", None), "buffer", None)
        if conn.state is State.OPEN and isinstance(buffer, bytearray) and not buffer:
            parser = Protocol.parse(conn)
            next(parser)
            conn.parser = parser

    def write_frame(self, frame: bytes) -> bool:
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
        ):
            return False
        flusher = self._flusher or self._own_flusher()
        if frame is flusher.last_frame and not self._flush_scheduled and not self.conn.writes:
            # A fan-out (the frame the previous connection got), and nothing of this
            # connection waits: written now, so the first recipients have it while the
            # rest are still being served (there is nothing to gather it with).
            if not self.transport.is_closing():
                self.transport.write(frame)
            return True
        flusher.last_frame = frame
        self.conn.writes.append(frame)
        self._flush_later()
        return True

    async def send(self, message: ASGISendEvent) -> None:
        if (
            message["type"] != "websocket.send"
            or not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            await super().send(message)
            if message["type"] == "websocket.accept" and self.handshake_complete:
                # The handshake's request and response (two header maps) are not read
                # again; the ASGI scope keeps the headers the app needs.
                del self.request, self.response
                # ... and its attribute table shrinks to what is left: uvicorn assigns
                # over 30 attributes, so the table is not shared with the class (~0.7 KiB)
                self.__dict__ = dict(self.__dict__)
                self._drop_handshake_parser()
            return
        text, data = message.get("text"), message.get("bytes")
        try:
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                self.conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        self._flush_later()

    def _own_flusher(self) -> _Flusher:
        flusher = _flushers.get(self.loop)
        if flusher is None:
            flusher = _flushers[self.loop] = _Flusher(self.loop)
        self._flusher = flusher
        return flusher

    def _flush_later(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            (self._flusher or self._own_flusher()).add(self)

    def flush(self) -> None:
        self._flush_scheduled = False
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))
