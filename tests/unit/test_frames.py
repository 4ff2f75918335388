"""notifier.transport.frames.text_frame: the bytes websockets itself would write for a
server's text frame; the fast path's Socket.IO packets: what python-socketio and
python-engineio themselves would encode, and decode back."""

from __future__ import annotations

import pytest
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from websockets.frames import Frame, Opcode

from notifier.contract import events
from notifier.transport import socketio_fast
from notifier.transport.frames import text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_matches_websockets_serialisation(length: int) -> None:
    text = ("é" if length % 2 else "a") * (length // (2 if length % 2 else 1))
    data = text.encode()
    assert text_frame(text) == Frame(Opcode.TEXT, data).serialize(mask=False)


def decoded(packet: socketio_fast.FastMessage) -> object:
    """The Socket.IO event a client reads from ``packet``, decoded by the libraries."""
    eio = eio_packet.Packet(encoded_packet=packet.text)
    assert eio.packet_type == eio_packet.MESSAGE
    return sio_packet.Packet(encoded_packet=eio.data).data


@pytest.mark.parametrize(
    "message",
    [
        events.status_update("j", "u", "processing", progress=42).message,
        events.job_completed("j", "u", {"text": 'émile 日本 "q" ]}'}).message,
    ],
)
def test_a_message_encodes_as_the_libraries_would(message: dict[str, object]) -> None:
    message = {**message, "eventId": "1700000000000-1"}
    packet = socketio_fast._encode(message)
    assert decoded(packet) == [message["type"], message]
    # what python-engineio's own packet would write, as text and as a WebSocket frame
    assert packet.encode() == eio_packet.Packet(eio_packet.MESSAGE, packet.data).encode()
    assert packet.frame == text_frame(packet.text)
    assert not packet.binary and packet.packet_type == eio_packet.MESSAGE
