"""Frames, polling bodies and handshakes: a frame announcing 16 MiB is refused at its header
(1009) without the server reading or growing; a 100 KiB native frame and a 100 KiB polling
POST are refused (the POST in bounded time, with or without a pending long-poll); an
over-long WebSocket handshake is answered; per-message deflate is not negotiated."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import httpx
import pytest
import websockets

from notifier.core.outbox import CLOSE_TOO_BIG
from tests.support.helpers import TIMEOUT, RawWebSocket, Tokens, connect_native
from tests.support.hostile_helpers import EIO_PATH
from tests.support.limits_helpers import MiB, connected_polling
from tests.support.processes import Server, rss_bytes

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["/ws/job-status-native", f"{EIO_PATH}?EIO=4&transport=websocket"])
async def test_oversized_frame_is_refused_at_its_header(
    limits_server: Server, tokens: Tokens, path: str
) -> None:
    """A frame announcing 16 MiB is refused (1009) as soon as its header arrives: the server
    does not wait for, nor buffer, the payload (uvicorn's own default would read 16 MiB)."""
    separator = "&" if "?" in path else "?"
    rss_before = rss_bytes(limits_server.proc.pid)
    for n in range(5):
        full = f"{path}{separator}token={tokens.make(f'frames-{n}')}"
        raw = await asyncio.to_thread(RawWebSocket, limits_server.port, full)
        try:
            assert " 101 " in raw.status_line, raw.status_line
            raw.send_header(0x1, 16 * MiB)
            raw.sock.sendall(b"x" * 65536)  # a fraction of what was announced
            code = await asyncio.to_thread(raw.read_until_close, 10.0)
            assert code == CLOSE_TOO_BIG, f"close code {code}"
        finally:
            raw.close()
    grown = rss_bytes(limits_server.proc.pid) - rss_before
    assert grown < 16 * MiB, f"the server grew by {grown / MiB:.1f} MiB"


async def test_100_kib_native_frame_is_refused(limits_server: Server, tokens: Tokens) -> None:
    client = await connect_native(limits_server.native_url, tokens.make("big-frame"))
    try:
        await client.wait_for_type("connection_established")
        with contextlib.suppress(websockets.ConnectionClosed):
            await client.ws.send("x" * 100 * 1024)
        code, _ = await client.wait_closed(10)
        assert code == CLOSE_TOO_BIG, code
        assert not client.of_type("pong")
    finally:
        await client.close()


async def test_100_kib_polling_post_is_refused(limits_server: Server, tokens: Tokens) -> None:
    """With a long-poll pending (as every real client has), the oversized POST is refused
    (400) and the session is over."""
    async with httpx.AsyncClient(base_url=limits_server.url, timeout=TIMEOUT) as http:
        rss_before = rss_bytes(limits_server.proc.pid)
        for _ in range(5):
            eio = await connected_polling(http, tokens.make("big-post"))
            pending = asyncio.ensure_future(eio.get())
            await asyncio.sleep(0.2)
            body = "42" + json.dumps(["ping", {"pad": "x" * 100 * 1024}])
            response = await eio.post(body)
            assert response.status_code == 400, response.text
            await asyncio.wait_for(pending, TIMEOUT)
            after = await eio.get()
            assert after.status_code == 400, f"the session survived: {after.text[:200]}"
        grown = rss_bytes(limits_server.proc.pid) - rss_before
        assert grown < 8 * MiB, f"the server grew by {grown / MiB:.1f} MiB"


async def test_100_kib_polling_post_is_answered_without_a_pending_get(
    limits_server: Server, tokens: Tokens
) -> None:
    """A client that holds no long-poll still gets its oversized POST answered, in bounded
    time: a request the server never answers is a connection (and a task) held forever."""
    async with httpx.AsyncClient(base_url=limits_server.url, timeout=TIMEOUT) as http:
        eio = await connected_polling(http, tokens.make("big-post-no-get"))
        body = "42" + json.dumps(["ping", {"pad": "x" * 100 * 1024}])
        try:
            response = await eio.post(body, timeout=10)
        except httpx.TimeoutException as exc:
            raise AssertionError("an oversized polling POST was not answered in 10 s") from exc
        assert response.status_code in (400, 413), response.text


async def test_overlong_websocket_handshake_is_answered(limits_server: Server) -> None:
    """A WebSocket upgrade whose request line is over uvicorn's 8 KiB gets an HTTP error
    (or a close) in bounded time, not a connection held open forever."""

    def probe() -> bytes:
        with contextlib.closing(
            socket.create_connection(("127.0.0.1", limits_server.port), 10)
        ) as sock:
            sock.sendall(
                (
                    f"GET /ws/job-status-native?token={'a' * 9000} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{limits_server.port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            sock.settimeout(5)
            try:
                return sock.recv(200) or b"<closed>"
            except TimeoutError:
                return b""

    answer = await asyncio.to_thread(probe)
    assert answer, "no answer to an over-long WebSocket handshake within 5 s (connection held)"
    assert answer == b"<closed>" or answer.split(b" ")[1][:1] == b"4", answer


@pytest.mark.parametrize("path", ["/ws/job-status-native", f"{EIO_PATH}?EIO=4&transport=websocket"])
async def test_per_message_deflate_is_off(limits_server: Server, tokens: Tokens, path: str) -> None:
    """Offered by the client, per-message deflate is not negotiated (off unless configured)."""
    separator = "&" if "?" in path else "?"
    url = f"{limits_server.ws_url}{path}{separator}token={tokens.make('deflate')}"
    async with websockets.connect(url, compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers, ws.response.headers
