"""The limits of SPEC section 8, each pushed past its edge on every transport: message
size, the rate limit and the flood close, subscriptions per connection, connections per
user (across instances), the 64 KiB frame and polling-body limit, unauthenticated
Engine.IO sessions, and a slow reader that must not grow the server's memory.

One dedicated server (its own limits: 2 connections per user, 1 channel subscription,
a 2 s authentication timeout, a 64 KiB send queue) serves the module; message size and
rate limits keep their defaults (4 KiB; 20/s, burst 40, close after 5 s of flooding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from notifier.core.outbox import CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TOO_MANY
from tests.support.env import free_port
from tests.support.fault_helpers import produce
from tests.support.helpers import (
    TIMEOUT,
    NativeClient,
    RawWebSocket,
    Recorder,
    SioClient,
    Tokens,
    connect_native,
    is_type,
)
from tests.support.hostile_helpers import (
    EIO_PATH,
    SOCKET_KINDS,
    EioPolling,
    attempt,
    clients,
    dedicated_server,
    instance_leases,
    open_client,
    wait_closed,
)
from tests.support.processes import Server, rss_bytes
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

MAX_MESSAGE = 4096
RATE, BURST, FLOOD_CLOSE = 20, 40, 5.0
AUTH_TIMEOUT = 2.0
SEND_QUEUE = 64 * 1024
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def limits_server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        tmp_path_factory.mktemp("limits"),
        "limits",
        JOBCAST_MAX_CONNECTIONS_PER_USER="2",
        JOBCAST_MAX_CHANNEL_SUBSCRIPTIONS="1",
        JOBCAST_AUTH_TIMEOUT_SECONDS=str(AUTH_TIMEOUT),
        JOBCAST_SEND_QUEUE_BYTES=str(SEND_QUEUE),
    ) as handle:
        yield handle


async def all_kinds(
    check: Callable[[str], Awaitable[None]], kinds: tuple[str, ...] = SOCKET_KINDS
) -> None:
    results = await asyncio.gather(*(check(kind) for kind in kinds), return_exceptions=True)
    failures = [
        f"{kind}: {type(result).__name__}: {result}"
        for kind, result in zip(kinds, results, strict=True)
        if isinstance(result, BaseException)
    ]
    assert not failures, "\n".join(failures)


async def send_many(client: SioClient | NativeClient, count: int) -> None:
    """``count`` pings as fast as the transport takes them. Over polling, in chunks of 8:
    python-engineio's server drops a whole POST of more than 16 packets (see
    test_polling_post_of_20_messages_is_answered), and the client batches what is queued."""
    chunk = 8 if isinstance(client, SioClient) and client.transport == "polling" else count
    for sent in range(0, count, chunk):
        for _ in range(min(chunk, count - sent)):
            await client.send("ping")
        if chunk < count:
            await asyncio.sleep(0.03)


async def send_raw_ping(client: SioClient | NativeClient, pad: str) -> None:
    """A ``ping`` carrying ``pad``; native frames are sent as UTF-8 text as is."""
    if isinstance(client, NativeClient):
        await client.send_raw(json.dumps({"type": "ping", "pad": pad}, ensure_ascii=False))
    else:
        await client.sio.emit("ping", {"pad": pad})


# --- message size


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_message_over_4_kib_is_refused_then_closed(
    limits_server: Server, tokens: Tokens, kind: str
) -> None:
    async with clients() as bag:
        client = await open_client(kind, limits_server.url, tokens.make(f"size-{kind}"))
        bag.append(client)
        start = client.mark()
        await send_raw_ping(client, "x" * (MAX_MESSAGE - 200))  # just under: answered
        await client.wait_for_type("pong", after=start)

        start = client.mark()
        await send_raw_ping(client, "x" * (MAX_MESSAGE + 1000))
        error = await client.wait_for_type("error", after=start)
        assert error["code"] == "message_too_large", error
        assert str(MAX_MESSAGE) in error["message"], error
        closed = await wait_closed(client, within=10)
        if isinstance(client, NativeClient):
            assert closed[0] == CLOSE_TOO_BIG, closed


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_message_size_is_counted_in_bytes(
    limits_server: Server, tokens: Tokens, kind: str
) -> None:
    """1,500 euro signs are 4,500 bytes of UTF-8 (9,000 once JSON-escaped): over 4 KiB,
    whatever the character count."""
    async with clients() as bag:
        client = await open_client(kind, limits_server.url, tokens.make(f"bytes-{kind}"))
        bag.append(client)
        start = client.mark()
        await send_raw_ping(client, "\u20ac" * 1500)
        answer = await client.wait_for(
            lambda m: m.get("type") in ("pong", "error"), after=start, what="an answer"
        )
        assert answer.get("code") == "message_too_large", (
            f"a 4,500-byte message was answered {answer}"
        )


# --- rate limit and flood


async def answers(client: Recorder, start: int, count: int) -> tuple[int, int]:
    """(pongs, rate_limited) after ``start`` once ``count`` answers arrived (bounded)."""

    def tally() -> tuple[int, int]:
        new = client.messages[start:]
        pongs = sum(m["type"] == "pong" for m in new)
        limited = sum(m["type"] == "error" and m.get("code") == "rate_limited" for m in new)
        return pongs, limited

    ok = await wait_until_async(lambda: sum(tally()) >= count, TIMEOUT)
    assert ok, f"only {tally()} answers to {count} pings; last: {client.describe(5)}"
    return tally()


async def test_burst_of_60_pings(limits_server: Server, tokens: Tokens) -> None:
    async def check(kind: str) -> None:
        async with clients() as bag:
            client = await open_client(kind, limits_server.url, tokens.make(f"burst-{kind}"))
            bag.append(client)
            await asyncio.sleep(BURST / RATE)  # a full bucket, whatever the welcome cost
            start = client.mark()
            began = time.monotonic()
            await send_many(client, 60)
            elapsed = time.monotonic() - began
            pongs, limited = await answers(client, start, 60)
            assert pongs + limited == 60
            ceiling = BURST + math.ceil(elapsed * RATE) + 1
            assert BURST <= pongs <= ceiling, f"{pongs} pongs in {elapsed:.2f} s"
            errors = client.of_type("error", code="rate_limited")
            assert errors and errors[0]["request"] == "ping" and errors[0]["message"]
            assert not client.closed, "a burst is not a flood"
            await asyncio.sleep(1.0)  # refills 20 tokens
            assert (await client.ping())["type"] == "pong"

    await all_kinds(check)


async def flood_until_closed(client: SioClient | NativeClient, cap_seconds: float) -> float:
    """Send pings as fast as loopback allows (bounded) until the server closes; returns the
    seconds between the first ``rate_limited`` and the close."""
    first_limited: float | None = None
    deadline = time.monotonic() + cap_seconds
    while not client.closed and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            await client.send("ping")
        if first_limited is None and client.of_type("error", code="rate_limited"):
            first_limited = time.monotonic()
        await asyncio.sleep(0.01)  # 100 messages/s: five times the rate
    closed = await wait_until_async(lambda: client.closed, 5)
    assert first_limited is not None, "never rate_limited"
    assert closed, f"still open {cap_seconds:g} s into a flood"
    return time.monotonic() - first_limited


async def test_flood_is_closed_and_a_client_that_slows_down_is_not(
    limits_server: Server, tokens: Tokens
) -> None:
    bystander = await connect_native(limits_server.native_url, tokens.make("flood-bystander"))
    pongs: list[float] = []

    async def watch() -> None:
        while True:
            began = time.monotonic()
            await bystander.ping()
            pongs.append(time.monotonic() - began)
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())

    async def flood(kind: str) -> None:
        async with clients() as bag:
            client = await open_client(kind, limits_server.url, tokens.make(f"flood-{kind}"))
            bag.append(client)
            lasted = await flood_until_closed(client, cap_seconds=FLOOD_CLOSE + 6)
            assert lasted >= FLOOD_CLOSE - 0.5, f"closed {lasted:.1f} s after rate_limited"
            if isinstance(client, NativeClient):
                assert (client.close_code, client.close_reason) == (CLOSE_POLICY, "rate_limited")

    async def slows_down(kind: str) -> None:
        async with clients() as bag:
            client = await open_client(kind, limits_server.url, tokens.make(f"calm-{kind}"))
            bag.append(client)
            await send_many(client, 60)
            await client.wait_for(is_type("error", code="rate_limited"), what="rate_limited")
            began = time.monotonic()
            while time.monotonic() - began < FLOOD_CLOSE + 2:  # 5 messages/s: under the rate
                await client.send("ping")
                await asyncio.sleep(0.2)
            assert not client.closed, "a client that slowed down was closed"
            assert (await client.ping())["type"] == "pong"

    async def both(kind: str) -> None:
        await asyncio.gather(flood(kind), slows_down(kind))

    try:
        await all_kinds(both)
        assert len(pongs) >= 10 and not bystander.closed, "the bystander stopped being served"
        assert max(pongs) < 2.0, f"a bystander's ping took {max(pongs):.2f} s during the floods"
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await bystander.close()


async def test_polling_post_of_20_messages_is_answered(
    limits_server: Server, tokens: Tokens
) -> None:
    """A polling client batches what it queued between two requests into one POST; a burst
    of 20 messages (half the allowed burst) must be answered like on the other transports,
    not dropped as a whole."""
    async with httpx.AsyncClient(base_url=limits_server.url, timeout=TIMEOUT) as http:
        eio = await connected_polling(http, tokens.make("post-20"))
        response = await eio.post("\x1e".join(['42["ping",{}]'] * 20))
        assert response.status_code == 200, response.text
        # A marker in a POST of its own: messages are handled in order, so once its answer
        # is here, so are the answers to the 20 pings (or they never will be).
        marker = '42["subscribe_channel",{"channel":"notifications"}]'
        assert (await eio.post(marker)).status_code == 200
        seen: list[str] = []
        for _ in range(6):
            seen += EioPolling.packets(await eio.get())
            if any('"subscribed"' in p for p in seen):
                break
        assert any('"subscribed"' in p for p in seen), f"the marker was not answered: {seen}"
        pongs = sum('"pong"' in p for p in seen)
        assert pongs == 20, f"{pongs} answers to 20 pings sent in one POST: {seen[:3]}"


async def test_rest_flood_is_answered_429_per_user(limits_server: Server, tokens: Tokens) -> None:
    """100 REST calls at once from one user: past the burst (40) they are answered 429
    ``rate_limited`` with a Retry-After; another user is served meanwhile, and the flooder
    is served again once it waited as long as it was told."""
    flooder = {"Authorization": f"Bearer {tokens.make('rest-flooder')}"}
    other = {"Authorization": f"Bearer {tokens.make('rest-bystander')}"}
    async with httpx.AsyncClient(base_url=limits_server.url, timeout=TIMEOUT) as http:
        flood = await asyncio.gather(
            *(http.get("/api/v1/jobs", headers=flooder) for _ in range(100))
        )
        assert (await http.get("/api/v1/jobs", headers=other)).status_code == 200
        statuses = [r.status_code for r in flood]
        assert set(statuses) == {200, 429}, statuses
        assert 40 <= statuses.count(200) < 60, f"{statuses.count(200)} of 100 served"
        refused = next(r for r in flood if r.status_code == 429)
        assert refused.json()["code"] == "rate_limited", refused.text
        wait = int(refused.headers["Retry-After"])
        assert 1 <= wait <= 2, refused.headers
        await asyncio.sleep(wait)
        assert (await http.get("/api/v1/jobs", headers=flooder)).status_code == 200


# --- subscriptions per connection


async def test_101st_job_subscription(
    limits_server: Server, tokens: Tokens, tmp_path: Path
) -> None:
    user = "subs-limit"
    await produce("queued", tmp_path / "jobs.jsonl", users=user, jobs=101, prefix="lim")
    jobs = [f"lim-{user}-{n}" for n in range(101)]

    async def check(kind: str) -> None:
        async with clients() as bag:
            client = await open_client(kind, limits_server.url, tokens.make(user))
            bag.append(client)
            for n, job in enumerate(jobs[:100]):
                if n >= BURST - 5:
                    await asyncio.sleep(1.1 / RATE)  # under the rate limit
                answer = await client.request("subscribe_job", jobId=job)
                assert answer == {"type": "subscribed", "jobId": job}, (n, answer)
            refused = await client.request("subscribe_job", jobId=jobs[100])
            assert (refused["type"], refused["code"]) == ("error", "too_many_subscriptions")
            assert refused["message"] and refused["request"] == "subscribe_job"
            again = await client.request("subscribe_job", jobId=jobs[0])
            assert again["type"] == "subscribed", "re-subscribing takes no new slot"
            await client.request("unsubscribe_job", jobId=jobs[1])
            freed = await client.request("subscribe_job", jobId=jobs[100])
            assert freed == {"type": "subscribed", "jobId": jobs[100]}

    await all_kinds(check, ("native", "websocket"))  # 2 connections: the per-user limit


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_channel_subscription_limit(limits_server: Server, tokens: Tokens, kind: str) -> None:
    async with clients() as bag:
        client = await open_client(kind, limits_server.url, tokens.make(f"chan-{kind}"))
        bag.append(client)
        assert (await client.request("subscribe_channel", channel="notifications"))["type"] == (
            "subscribed"
        )
        refused = await client.request("subscribe_channel", channel="maintenance")
        assert (refused["type"], refused["code"]) == ("error", "too_many_subscriptions")
        again = await client.request("subscribe_channel", channel="notifications")
        assert again["type"] == "subscribed"
        await client.request("unsubscribe_channel", channel="notifications")
        now = await client.request("subscribe_channel", channel="maintenance")
        assert now == {"type": "subscribed", "channel": "maintenance"}
        assert (await client.ping())["type"] == "pong"


# --- connections per user


async def test_connections_per_user(
    limits_server: Server, tokens: Tokens, redis_client: Any
) -> None:
    await instance_leases(redis_client, 2)  # the session's server and this module's
    token = tokens.make("conn-limit")
    async with clients() as bag:
        first = await open_client("native", limits_server.url, token)
        bag.append(first)
        bag.append(await open_client("websocket", limits_server.url, token))
        for kind in SOCKET_KINDS:
            outcome = await attempt(kind, limits_server, token)
            assert not outcome.accepted, f"a 3rd connection over {kind} was accepted"
            assert outcome.code == "too_many_connections", (kind, outcome)
            if kind == "native":
                assert outcome.detail == CLOSE_TOO_MANY, outcome
        assert (await attempt("rest", limits_server, token)).accepted, "REST is not a connection"
        assert (await attempt("native", limits_server, tokens.make("another"))).accepted

        await first.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not (outcome := await attempt("polling", limits_server, token)).accepted:
            assert loop.time() < deadline, f"no slot after a connection closed: {outcome}"
            await asyncio.sleep(0.2)


async def test_connections_are_counted_across_instances(
    limits_server: Server, server: Server, tokens: Tokens, redis_client: Any
) -> None:
    """Two connections on the session's server (limit 20) fill this user's 2 slots on the
    limits server: the count lives in Redis."""
    await instance_leases(redis_client, 2)
    token = tokens.make("cross-instance")
    async with clients() as bag:
        bag.append(await open_client("native", server.url, token))
        bag.append(await open_client("polling", server.url, token))
        outcome = await attempt("websocket", limits_server, token)
        assert (outcome.accepted, outcome.code) == (False, "too_many_connections"), outcome


# --- frames, polling bodies and handshakes


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


async def connected_polling(http: httpx.AsyncClient, token: str) -> EioPolling:
    eio = EioPolling(http)
    assert (await eio.open()).status_code == 200
    assert eio.handshake["maxPayload"] == 64 * 1024, eio.handshake
    assert (await eio.post("40" + json.dumps({"token": token}))).status_code == 200
    seen: list[str] = []
    for _ in range(3):
        seen += EioPolling.packets(await eio.get())
        if any("connection_established" in p for p in seen):
            return eio
    raise AssertionError(f"no welcome over polling: {seen}")


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


@pytest.mark.parametrize("path", ["/ws/job-status-native", f"{EIO_PATH}?EIO=4&transport=websocket"])
async def test_per_message_deflate_is_off(limits_server: Server, tokens: Tokens, path: str) -> None:
    """Offered by the client, per-message deflate is not negotiated (off unless configured)."""
    separator = "&" if "?" in path else "?"
    url = f"{limits_server.ws_url}{path}{separator}token={tokens.make('deflate')}"
    async with websockets.connect(url, compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers, ws.response.headers


# --- sessions that never authenticate


async def test_unauthenticated_polling_session_is_closed(limits_server: Server) -> None:
    async with httpx.AsyncClient(base_url=limits_server.url, timeout=TIMEOUT) as http:
        eio = EioPolling(http)
        began = time.monotonic()
        assert (await eio.open()).status_code == 200
        while True:
            response = await eio.get()
            elapsed = time.monotonic() - began
            if response.status_code != 200 or "1" in EioPolling.packets(response):
                break
            if "2" in EioPolling.packets(response):
                await eio.post("3")  # answer pings: only the missing CONNECT counts
            assert elapsed < AUTH_TIMEOUT + 5, "the session outlived the authentication timeout"
        assert elapsed >= AUTH_TIMEOUT - 0.5, f"closed after {elapsed:.1f} s"
        assert elapsed < AUTH_TIMEOUT + 5, f"closed after {elapsed:.1f} s"
        gone = await eio.get()
        assert gone.status_code == 400, gone.text


async def test_unauthenticated_websocket_session_is_closed(limits_server: Server) -> None:
    async with websockets.connect(
        f"{limits_server.ws_url}{EIO_PATH}?EIO=4&transport=websocket"
    ) as ws:
        began = time.monotonic()
        opened = await ws.recv()
        assert isinstance(opened, str) and opened.startswith("0"), opened
        with contextlib.suppress(websockets.ConnectionClosed):
            while time.monotonic() - began < AUTH_TIMEOUT + 5:
                packet = await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT + 5)
                if packet == "2":
                    await ws.send("3")
                if packet == "1":
                    break
        elapsed = time.monotonic() - began
        assert AUTH_TIMEOUT - 0.5 <= elapsed < AUTH_TIMEOUT + 5, f"closed after {elapsed:.1f} s"


async def test_a_session_that_authenticates_in_time_stays(
    limits_server: Server, tokens: Tokens
) -> None:
    async with httpx.AsyncClient(base_url=limits_server.url, timeout=TIMEOUT) as http:
        eio = EioPolling(http)
        assert (await eio.open()).status_code == 200
        await asyncio.sleep(AUTH_TIMEOUT / 2)
        assert (await eio.post("40" + json.dumps({"token": tokens.make("in-time")}))).is_success
        await asyncio.sleep(AUTH_TIMEOUT + 1)
        assert (await eio.post('42["ping",{}]')).is_success
        seen: list[str] = []
        for _ in range(4):
            seen += EioPolling.packets(await eio.get())
            if any('"pong"' in p for p in seen):
                break
        assert any('"pong"' in p for p in seen), seen
        assert "1" not in seen, "an authenticated session was closed"


async def test_abandoned_handshakes_leave_nothing_behind(redis_server: Any) -> None:
    """Engine.IO handshakes that never poll again (a cheap flood) are closed at the
    authentication timeout and then forgotten: no Engine.IO socket and no timer task of
    theirs outlives them. (Counted inside the process, so this one runs an in-process
    uvicorn with the product's app on the session's Redis.)"""
    import gc

    import uvicorn
    from engineio.async_socket import AsyncSocket

    from api.factory import create_app
    from notifier.contract.settings import Settings

    settings = Settings(_env_file=None, auth_timeout_seconds=1.0)

    def sockets() -> int:
        gc.collect()
        return sum(isinstance(o, AsyncSocket) for o in gc.get_objects())

    def timers() -> int:
        return sum(
            "_expire_unauthenticated" in t.get_coro().__qualname__ for t in asyncio.all_tasks()
        )

    port = free_port()
    gc_threshold = gc.get_threshold()  # the notifier tunes the process's GC: put it back
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        assert await wait_until_async(lambda: server.started or serving.done(), TIMEOUT)
        assert not serving.done(), "the in-process server did not start"
        before = sockets()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
            for _ in range(3):
                responses = await asyncio.gather(
                    *(http.get(f"{EIO_PATH}?EIO=4&transport=polling") for _ in range(100))
                )
                assert all(r.status_code == 200 for r in responses)
        assert sockets() >= before + 300, "the handshakes did not open sessions"
        # The authentication timeout, then Engine.IO's own clean-up (ping timeout).
        bound = settings.auth_timeout_seconds + max(5.0, settings.heartbeat_seconds) + 3
        for _ in range(int(bound / 0.5)):
            if sockets() <= before + 5 and not timers():
                break
            await asyncio.sleep(0.5)
        assert timers() == 0, f"{timers()} timer tasks of closed sessions still parked"
        left = sockets() - before
        assert left <= 5, f"{left} of 300 abandoned Engine.IO sessions still held in memory"
    finally:
        server.should_exit = True
        server.force_exit = True  # uvicorn would wait for the parked timers, if any
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(serving, TIMEOUT)
        for task in asyncio.all_tasks():  # leave this test process's loop clean
            if "_expire_unauthenticated" in task.get_coro().__qualname__:
                task.cancel()
        gc.set_threshold(*gc_threshold)


# --- a slow reader


async def test_slow_reader_is_closed_and_memory_stays_bounded(
    limits_server: Server, tokens: Tokens, tmp_path: Path
) -> None:
    user = "slow-reader"
    pid = limits_server.proc.pid
    raw = await asyncio.to_thread(
        RawWebSocket, limits_server.port, query={"token": tokens.make(user)}, rcvbuf=4096
    )
    bystander = await connect_native(limits_server.native_url, tokens.make("slow-bystander"))
    try:
        assert (await asyncio.to_thread(raw.read_message))["type"] == "connection_established"
        await bystander.wait_for_type("connection_established")
        rss_before = rss_bytes(pid)
        # 3,000 results of 8 KiB for the user who stopped reading: 24 MiB, while the
        # server may queue 64 KiB for it (the kernel's buffers hold a few MiB more).
        await produce(
            "completions", tmp_path / "events.jsonl", users=user, count=3000, result_bytes=8192
        )
        # The bystander's round trip proves the server is still serving; by then the
        # reader has dispatched most of the stream.
        assert (await bystander.ping())["type"] == "pong"
        await asyncio.sleep(1.0)
        grown = rss_bytes(pid) - rss_before
        await asyncio.to_thread(raw.read_all)
        assert (raw.close_code, raw.close_reason) == (CLOSE_POLICY, "slow_consumer"), (
            raw.close_code,
            raw.close_reason,
            len(raw.messages),
        )
        assert len(raw.messages) < 3000, "everything was delivered: the reader was not slow"
        assert grown < 12 * MiB, f"the server grew by {grown / MiB:.1f} MiB for a slow reader"
        assert not bystander.closed
    finally:
        raw.close()
        await bystander.close()
