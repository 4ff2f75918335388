"""Fast path, python-socketio: a server on :mod:`~notifier.transport.engineio_fast`
sessions, messages encoded once for all recipients, and a link that writes them directly.

Used only when :func:`notifier.transport.compat.choose` says ``fast``; every private name
of python-socketio it relies on is listed in :data:`notifier.transport.compat.NEEDS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import engineio
import engineio.payload
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from notifier.contract.events import dumps
from notifier.transport.engineio_fast import FastEngineServer, adopt
from notifier.transport.frames import EncodeCache, text_frame

#: Packets waiting in Engine.IO's own queue before a link says it is backed up.
ENGINEIO_QUEUE_HIGH = 64
_EVENT = str(sio_packet.EVENT)
_MESSAGE = str(eio_packet.MESSAGE)


class FastServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on :class:`FastEngineServer` sessions."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return FastEngineServer


def install() -> None:
    """Process-wide settings of the fast path, applied once it has been chosen.

    A polling POST may carry a client's whole burst: python-engineio drops a POST of more
    than 16 packets whole (answering 200); the body stays capped by max_http_buffer_size.
    """
    engineio.payload.Payload.max_decode_packets = 64


def on_session(sio: socketio.AsyncServer, eio_sid: str, environ: dict[str, Any]) -> None:
    """A new Engine.IO session: give it the fast transport, drop what is never read again
    (python-socketio keeps the handshake's environ for the whole session; its request
    body reader, ~2.5 KiB, is not read after the handshake)."""
    adopt(sio.eio, eio_sid)
    environ.pop("wsgi.input", None)


def event_dispatcher(
    sio: socketio.AsyncServer,
) -> Callable[[str, sio_packet.Packet], Awaitable[None]]:
    """Dispatches an EVENT packet already decoded (python-socketio would decode it again)."""

    async def dispatch(eio_sid: str, pkt: sio_packet.Packet) -> None:
        await sio._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)

    return dispatch


class FastMessage(eio_packet.Packet):  # type: ignore[misc]
    """An Engine.IO MESSAGE encoded once for all its recipients: as text (polling, any
    WebSocket) and as a WebSocket frame (:data:`notifier.transport.frames.WRITE_FRAME`)."""

    def __init__(self, data: str) -> None:
        # What Packet.__init__ sets for a text MESSAGE (compat.NEEDS checks the names),
        # and its encoding: the type's digit, then the text.
        self.packet_type = eio_packet.MESSAGE
        self.data = data
        self.binary = False
        self.text: str = _MESSAGE + data
        self.encode_cache = self.text
        self.frame = text_frame(self.text)

    def encode(self, b64: bool = False) -> str:
        return self.text


def _encode(message: dict[str, Any]) -> FastMessage:
    # What python-socketio's emit builds (an EVENT of namespace "/": "2" + JSON of
    # [type, message]; jobcast's messages never hold binary), built once per event for
    # all its recipients, without the packet class's walk looking for binary data.
    return FastMessage(_EVENT + dumps([message["type"], message]))


class FastLink:
    """One connection's way to its Engine.IO session (see ``socketio_server.Link``)."""

    __slots__ = ("_packets", "_session", "transport")

    def __init__(
        self, sio: socketio.AsyncServer, sid: str, packets: EncodeCache[FastMessage]
    ) -> None:
        eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        self._session: Any = sio.eio.sockets.get(eio_sid) if eio_sid else None
        self._packets = packets
        self.transport: str = sio.transport(sid)

    def _live(self) -> Any:
        session = self._session
        return None if session is None or session.closed else session

    async def send(self, message: dict[str, Any]) -> None:
        session = self._live()
        if session is not None:
            await session.send(self._packets(message))

    def backed_up(self) -> bool:
        session = self._live()
        return session is not None and session.queue.qsize() > ENGINEIO_QUEUE_HIGH

    def write_now(self, message: dict[str, Any]) -> bool:
        # Straight to the Engine.IO session, as its send_packet would (minus a coroutine
        # and a log call per packet), unless it is gone, closing or backed up.
        session = self._session
        if (
            session is None
            or session.closing
            or session.closed
            or session.queue.qsize() > ENGINEIO_QUEUE_HIGH
        ):
            return False
        session.push(self._packets(message))
        return True

    def on_upgrade(self, callback: Callable[[], None]) -> None:
        if self._session is not None:
            self._session.on_upgrade = callback


def packet_cache() -> EncodeCache[FastMessage]:
    return EncodeCache(_encode)
