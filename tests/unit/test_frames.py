"""notifier.transport.frames.text_frame: the bytes websockets itself would write for a
server's text frame."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from notifier.transport.frames import text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_matches_websockets_serialisation(length: int) -> None:
    text = ("é" if length % 2 else "a") * (length // (2 if length % 2 else 1))
    data = text.encode()
    assert text_frame(text) == Frame(Opcode.TEXT, data).serialize(mask=False)
