"""WebSocket frames serialised once for every connection they go to."""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: ASGI scope extension: ``write_frame(frame: bytes) -> bool`` writes a serialised WebSocket
#: frame (:func:`notifier.transport.frames.text_frame`) now and says True, or says False
#: (not open, or the transport is paused: use the ASGI ``send``, which waits). Offered by
#: :class:`notifier.transport.uvicorn_fast.FastWebSocketProtocol`.
WRITE_FRAME = "jobcast.websocket.write_frame"
WriteFrame = Callable[[bytes], bool]
#: ASGI scope extension: ``keepalive_off()`` stops the server's own WebSocket pings on this
#: connection, for an application that has a heartbeat of its own (Engine.IO). Offered by
#: :class:`notifier.transport.uvicorn_fast.FastWebSocketProtocol`.
KEEPALIVE_OFF = "jobcast.websocket.keepalive_off"
#: ASGI scope extension: ``run_after(reader)`` hands the server a coroutine that it awaits
#: in the connection's task once the ASGI call has returned, the connection staying open
#: until ``reader`` ends (then closed, as when an ASGI call returns). The application's
#: call chain (its frames and their locals) is then not held for the connection's life,
#: only ``reader``. Offered by :class:`notifier.transport.uvicorn_fast.FastWebSocketProtocol`.
RUN_AFTER = "jobcast.websocket.run_after"


def text_frame(text: str) -> bytes:
    """A server's (unmasked, unfragmented, uncompressed) WebSocket text frame of ``text``
    (RFC 6455 section 5.2): the same bytes for every connection it goes to."""
    data = text.encode()
    length = len(data)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + data
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + data
    return struct.pack("!BBQ", 0x81, 127, length) + data


class EncodeCache(Generic[T]):
    """Encodes a message once for all its recipients of one transport.

    The hub hands the same message object to every recipient of an event; writers look
    the encoding up by identity. Entries keep their message alive, so an id is never
    reused while cached; the oldest go first.
    """

    def __init__(self, encode: Callable[[dict[str, Any]], T], size: int = 64) -> None:
        self._encode = encode
        self._size = size
        self._entries: OrderedDict[int, tuple[dict[str, Any], T]] = OrderedDict()

    def __call__(self, message: dict[str, Any]) -> T:
        entry = self._entries.get(id(message))
        if entry is not None and entry[0] is message:
            return entry[1]
        encoded = self._encode(message)
        self._entries[id(message)] = (message, encoded)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return encoded
