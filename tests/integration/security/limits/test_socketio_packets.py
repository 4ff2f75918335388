"""Socket.IO packets over a raw Engine.IO WebSocket: binary attachments announced and then
withheld are dropped, malformed packets are answered ``bad_request`` without a traceback in
the log, a PONG flood costs nothing; the session goes on answering each time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
import websockets

from tests.support.helpers import TIMEOUT, Tokens
from tests.support.hostile_helpers import EIO_PATH
from tests.support.limits_helpers import MiB
from tests.support.processes import Server, rss_bytes

pytestmark = pytest.mark.integration


async def raw_socketio(server: Server, token: str) -> Any:
    """A raw Engine.IO WebSocket with a Socket.IO session (CONNECT sent, welcome read)."""
    ws = await websockets.connect(
        f"{server.ws_url}{EIO_PATH}?EIO=4&transport=websocket", max_size=None, compression=None
    )
    opened = await ws.recv()
    assert isinstance(opened, str) and opened.startswith("0"), opened
    await ws.send("40" + json.dumps({"token": token}))
    while "connection_established" not in str(await asyncio.wait_for(ws.recv(), TIMEOUT)):
        pass
    return ws


async def raw_pong(ws: Any) -> bool:
    """Whether the raw session still answers a ``ping`` event (bounded)."""
    await ws.send('42["ping",{}]')
    with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
        while True:
            packet = await asyncio.wait_for(ws.recv(), 5)
            if packet == "2":
                await ws.send("3")
            elif '"pong"' in str(packet):
                return True
    return False


async def test_withheld_binary_attachments_do_not_grow_the_server(
    limits_server: Server, tokens: Tokens
) -> None:
    """A binary event announcing a billion attachments, then 24 MiB of binary frames: the
    server refuses the packet (``bad_request``), drops the frames instead of keeping them,
    and the session goes on."""
    pid = limits_server.proc.pid
    ws = await raw_socketio(limits_server, tokens.make("attachments"))
    try:
        rss_before = rss_bytes(pid)
        await ws.send('4599999999-["ping",{"_placeholder":true,"num":0}]')
        answer = json.loads(str(await asyncio.wait_for(ws.recv(), TIMEOUT))[2:])
        assert answer[0] == "error" and answer[1]["code"] == "bad_request", answer
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(400):
                await ws.send(b"\x00" * 60_000)
        await asyncio.sleep(1.0)
        grown = rss_bytes(pid) - rss_before
        assert grown < 12 * MiB, (
            f"the server kept {grown / MiB:.1f} MiB of withheld attachments for one connection"
        )
        assert await raw_pong(ws), "the session stopped answering after the binary packet"
    finally:
        await ws.close()


#: Socket.IO packets that are not what python-socketio expects (inside Engine.IO MESSAGE).
MALFORMED_PACKETS = [
    '2{"a":1}',  # an event that is not a list
    '2"ping"',
    "2[]",  # no event name
    "2[1]",
    "2[null]",
    "2[{}]",  # an unhashable event name
    "4",  # CONNECT_ERROR from a client
    "9",  # no such packet type
    "2[",  # bad JSON
    "x",
]


async def test_malformed_socketio_packets_are_answered_not_logged_as_errors(
    limits_server: Server, tokens: Tokens
) -> None:
    """Each malformed packet is answered ``bad_request``; the session goes on; the server
    logs no traceback for any of them (python-socketio's own handling logged an ERROR with
    a traceback per packet: a cheap way to flood the log)."""
    ws = await raw_socketio(limits_server, tokens.make("malformed"))
    try:
        log_before = len(limits_server.log_text())
        for packet in ["3[]", "37[]"]:  # acks nobody asked for: ignored, and never logged
            await ws.send("4" + packet)
        for packet in MALFORMED_PACKETS:
            await ws.send("4" + packet)
        errors: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        while len(errors) < len(MALFORMED_PACKETS):
            assert time.monotonic() < deadline, f"{len(errors)} answers: {errors}"
            frame = str(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if frame == "2":
                await ws.send("3")
                continue
            assert frame.startswith('42["error"'), frame
            errors.append(json.loads(frame[2:])[1])
        assert all(e["code"] == "bad_request" for e in errors), errors
        assert await raw_pong(ws), "the session stopped answering after malformed packets"
        logged = limits_server.log_text()[log_before:]
        assert "Traceback" not in logged and "handler error" not in logged, logged[-2000:]
    finally:
        await ws.close()


async def test_pong_flood_does_not_grow_the_server(limits_server: Server, tokens: Tokens) -> None:
    """20,000 unsolicited Engine.IO PONG packets: no growth, the session still answers."""
    pid = limits_server.proc.pid
    ws = await raw_socketio(limits_server, tokens.make("pongs"))
    try:
        rss_before = rss_bytes(pid)
        for _ in range(20_000):
            await ws.send("3")
        assert await raw_pong(ws), "the session stopped answering after a PONG flood"
        grown = rss_bytes(pid) - rss_before
        assert grown < 8 * MiB, f"the server grew by {grown / MiB:.1f} MiB"
    finally:
        await ws.close()
