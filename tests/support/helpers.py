"""Test clients and helpers shared by the integration tests.

Both client kinds record every message the server sends into ``messages`` (a list of
dicts, each with its ``type``) and offer the same bounded waits, so a test can run
unchanged over Socket.IO (WebSocket or polling) and the native WebSocket endpoint.
:class:`RawWebSocket` is the WebSocket client below them: frames by hand on a raw socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import socketio
import websockets

from notifier.contract.events import TERMINAL_TYPES, parse_event_id
from notifier.edge.auth import mint_token
from notifier.transport.client_session import close_client, socketio_client
from tests.support.waiting import wait_until_async

#: Generous bound for anything a test waits for (clear failure instead of a hang).
TIMEOUT = 20.0
SOCKETIO_PATH = "/ws/job-status"
NATIVE_PATH = "/ws/job-status-native"
JOB_MESSAGE_TYPES = ("job_status_update", "job_completed", "job_error")

Predicate = Callable[[dict[str, Any]], bool]


# --- tokens


class Tokens:
    """Users of the tests: alice (numeric sub 1), bob (string sub "bob-2"), an admin."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.alice = self.make(1, username="alice")
        self.bob = self.make("bob-2", username="bob")
        self.admin = self.make("admin-9", username="admin", roles=["ADMIN"])

    def make(self, sub: str | int, **kwargs: Any) -> str:
        return mint_token(self.secret, sub, **kwargs)

    def expired(self, sub: str | int = 1) -> str:
        # An hour past exp: far beyond the verifier's clock leeway.
        return self.make(sub, ttl_seconds=-3600)

    def bad_signature(self, sub: str | int = 1) -> str:
        return mint_token("another-secret-that-is-long-enough-for-hs256-" + "x" * 32, sub)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- message helpers


def is_type(kind: str, **fields: Any) -> Predicate:
    def check(msg: dict[str, Any]) -> bool:
        return msg.get("type") == kind and all(msg.get(k) == v for k, v in fields.items())

    return check


def is_job_status(job_id: str, status: str) -> Predicate:
    def check(msg: dict[str, Any]) -> bool:
        return (
            msg.get("type") == "job_status_update"
            and msg.get("jobId") == job_id
            and msg.get("data", {}).get("status") == status
        )

    return check


def is_terminal(job_id: str) -> Predicate:
    return lambda msg: msg.get("type") in TERMINAL_TYPES and msg.get("jobId") == job_id


def event_key(msg: dict[str, Any]) -> tuple[int, int]:
    return parse_event_id(msg["eventId"])


def assert_strictly_increasing(messages: list[dict[str, Any]]) -> None:
    keys = [event_key(m) for m in messages]
    assert all(a < b for a, b in itertools.pairwise(keys)), (
        f"eventIds not strictly increasing: {[m['eventId'] for m in messages]}"
    )


# --- clients


class Recorder:
    """Collects server messages; ``wait_for`` waits (bounded) for one that matches."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()

    def _record(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        self._changed.set()

    def _mark_closed(self) -> None:
        self.closed = True
        self._changed.set()

    def mark(self) -> int:
        """The index of the next message (pass as ``after=`` to look only at newer ones)."""
        return len(self.messages)

    def of_type(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        check = is_type(kind, **fields)
        return [m for m in self.messages if check(m)]

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m.get("type") in JOB_MESSAGE_TYPES and m.get("jobId") == job_id
        ]

    def describe(self, limit: int = 15) -> str:
        shown = self.messages[-limit:]
        return "\n  ".join(json.dumps(m, default=str)[:300] for m in shown) or "(nothing)"

    async def wait_for(
        self,
        predicate: Predicate,
        *,
        after: int = 0,
        within: float = TIMEOUT,
        what: str = "a matching message",
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            self._changed.clear()
            for msg in self.messages[after:]:
                if predicate(msg):
                    return msg
            remaining = deadline - loop.time()
            if self.closed or remaining <= 0:
                state = "the connection closed" if self.closed else f"{within:g} s passed"
                raise AssertionError(
                    f"{state} while waiting for {what}; last messages:\n  {self.describe()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for_type(
        self, kind: str, *, after: int = 0, within: float = TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        what = f"{kind} {fields}" if fields else kind
        return await self.wait_for(is_type(kind, **fields), after=after, within=within, what=what)

    async def send(self, kind: str, **fields: Any) -> None:
        raise NotImplementedError

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a client message and return its first answer (the reply or an ``error``)."""
        start = self.mark()
        await self.send(kind, **fields)

        def answer(msg: dict[str, Any]) -> bool:
            if msg.get("type") == "error":
                return msg.get("request") in (kind, None)
            expected = {
                "subscribe_job": "subscribed",
                "subscribe_channel": "subscribed",
                "unsubscribe_job": "unsubscribed",
                "unsubscribe_channel": "unsubscribed",
                "ping": "pong",
            }.get(kind)
            return msg.get("type") == expected

        return await self.wait_for(answer, after=start, what=f"the answer to {kind}")

    async def ping(self) -> dict[str, Any]:
        """A round trip: every message the server sent before the pong has arrived."""
        start = self.mark()
        await self.send("ping")
        return await self.wait_for_type("pong", after=start)

    async def settle(self, grace: float = 0.5) -> None:
        """Give duplicates or late messages a (bounded) chance to show up."""
        await self.ping()
        await asyncio.sleep(grace)
        await self.ping()

    async def close(self) -> None:
        raise NotImplementedError


class SioClient(Recorder):
    """A python-socketio AsyncClient; event name and payload type are checked to agree."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        super().__init__()
        self.sio = sio
        self.name_mismatches: list[tuple[str, Any]] = []
        self.connect_errors: list[Any] = []

        @sio.on("*")
        async def any_event(event: str, data: Any = None) -> None:
            if not isinstance(data, dict) or data.get("type") != event:
                self.name_mismatches.append((event, data))
            self._record(data if isinstance(data, dict) else {"type": event, "raw": data})

        @sio.event
        async def connect_error(data: Any = None) -> None:
            self.connect_errors.append(data)

        @sio.event
        async def disconnect(reason: Any = None) -> None:
            self._mark_closed()

    @property
    def transport(self) -> str:
        return str(self.sio.transport())

    async def send(self, kind: str, **fields: Any) -> None:
        await self.sio.emit(kind, fields)

    async def call(self, kind: str, payload: Any = None) -> Any:
        """Emit with an ack callback; returns what the server passed to it."""
        return await self.sio.call(kind, payload if payload is not None else {}, timeout=TIMEOUT)

    async def close(self) -> None:
        """Disconnect without waiting out a pending long-poll; the HTTP session is closed
        (see :func:`notifier.transport.client_session.close_client`)."""
        await close_client(self.sio, TIMEOUT)


async def connect_sio(
    url: str,
    token: str | None,
    transports: list[str],
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> SioClient:
    """A connected client; ``token`` goes into ``auth`` (``headers`` and ``query`` are
    the other places a token may be)."""
    client = SioClient(socketio_client(reconnection=False))
    try:
        await client.sio.connect(
            f"{url}?{urlencode(query)}" if query else url,
            headers=headers or {},
            socketio_path=SOCKETIO_PATH,
            transports=transports,
            auth={"token": token} if token is not None else None,
            wait_timeout=TIMEOUT,
        )
    except BaseException:
        await client.close()
        raise
    return client


async def refused_sio(
    url: str, token: str | None, transports: list[str], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Connect expecting a refusal; returns the ``connect_error`` payload
    (``{"message": ..., "data": {"code": ...}}``).

    ``wait=False``: with ``wait=True`` python-socketio disconnects inside ``connect()``
    after a refusal, which over polling waits for the pending long-poll (ping interval +
    timeout); :meth:`SioClient.close` aborts it instead, as a browser does.
    """
    client = SioClient(socketio_client(reconnection=False))
    try:
        await client.sio.connect(
            url,
            socketio_path=SOCKETIO_PATH,
            transports=transports,
            auth={"token": token} if token is not None else None,
            headers=headers or {},
            wait=False,
        )
        answered = await wait_until_async(
            lambda: bool(client.connect_errors) or "/" in client.sio.namespaces, TIMEOUT
        )
        assert answered, "the server neither accepted nor refused the connection"
    finally:
        await client.close()
    assert "/" not in client.sio.namespaces, f"connection with token {token!r:.20} was accepted"
    assert len(client.connect_errors) == 1, f"connect_error payloads: {client.connect_errors}"
    payload = client.connect_errors[0]
    assert isinstance(payload, dict), payload
    return payload


class NativeClient(Recorder):
    """A ``websockets`` client on ``/ws/job-status-native`` reading JSON text frames."""

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self._record(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self._mark_closed()

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def wait_closed(self, within: float = TIMEOUT) -> tuple[int | None, str | None]:
        await asyncio.wait_for(asyncio.shield(self._reader), within)
        return self.close_code, self.close_reason

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, TIMEOUT)


async def connect_native(
    url: str,
    token: str | None,
    *,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> NativeClient:
    params = dict(query or {})
    if token is not None:
        params["token"] = token
    full = f"{url}?{urlencode(params)}" if params else url
    ws = await websockets.connect(full, additional_headers=headers, open_timeout=TIMEOUT)
    return NativeClient(ws)


class RawWebSocket:
    """A WebSocket client on a raw blocking socket, RFC 6455 by hand: it sends frames as
    built (even a header announcing more payload than ever follows) and reads only when
    asked, so it can also stop reading (a slow consumer: give it a small ``rcvbuf``).
    Blocking: call it through ``asyncio.to_thread`` from a coroutine. The handshake must
    be accepted (101)."""

    def __init__(
        self,
        port: int,
        path: str = NATIVE_PATH,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting: it sets the window the server sees
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        target = f"{path}?{urlencode(query)}" if query else path
        nonce = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            (
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed during the handshake"
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        self.status_line = head.split(b"\r\n")[0].decode()
        assert self.status_line.startswith("HTTP/1.1 101"), head
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # --- sending

    def send_header(self, opcode: int, length: int) -> None:
        """A masked frame header announcing ``length`` bytes of payload."""
        first = bytes([0x80 | opcode])
        if length < 126:
            head = first + bytes([0x80 | length])
        elif length < 1 << 16:
            head = first + bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            head = first + bytes([0x80 | 127]) + struct.pack("!Q", length)
        self.sock.sendall(head + b"\x00\x00\x00\x00")  # zero mask: payload as is

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.send_header(opcode, len(payload))
        self.sock.sendall(payload)

    # --- reading (the server's frames are not masked)

    def _recv_exact(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read_frame(self) -> tuple[int, bytes] | None:
        """The next frame, ``(opcode, payload)``; None at the end of the stream."""
        head = self._recv_exact(2)
        if head is None:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length in (126, 127):
            ext = self._recv_exact(2 if length == 126 else 8)
            if ext is None:
                return None
            length = struct.unpack("!H" if length == 126 else "!Q", ext)[0]
        payload = self._recv_exact(length)
        if payload is None:
            return None
        if opcode == 8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode(errors="replace")
        return opcode, payload

    def read_message(self) -> dict[str, Any]:
        """The next frame, which must be a JSON text frame (the native endpoint's)."""
        frame = self.read_frame()
        assert frame is not None and frame[0] == 1, f"expected a text frame, got {frame}"
        message: dict[str, Any] = json.loads(frame[1])
        self.messages.append(message)
        return message

    def read_all(self) -> None:
        """Record every JSON text frame until the server's close frame, the end of the
        stream or a read timeout (see ``close_code`` and ``close_reason``)."""
        while True:
            try:
                frame = self.read_frame()
            except (TimeoutError, OSError):
                return
            if frame is None or frame[0] == 8:
                return
            if frame[0] == 1:
                self.messages.append(json.loads(frame[1]))

    def read_until_close(self, within: float) -> int | None:
        """Skip frames until the server's close frame and return its code (1005 when it has
        none); None when the connection ended without one. Fails after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no close from the server within {within:g} s")
            self.sock.settimeout(remaining)
            try:
                frame = self.read_frame()
            except TimeoutError as exc:
                raise AssertionError(f"no close from the server within {within:g} s") from exc
            except ConnectionResetError:
                return None
            if frame is None:
                return None
            if frame[0] == 8:
                return self.close_code

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# --- REST


async def start_job(http: httpx.AsyncClient, token: str, **body: Any) -> str:
    """``POST /api/v1/jobs``; returns the job id (the answer must be 202 queued)."""
    body.setdefault("topic", "testing")
    response = await http.post("/api/v1/jobs", json=body, headers=bearer(token))
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["status"] == "queued", data
    return str(data["jobId"])


async def job_events(
    http: httpx.AsyncClient, token: str, job_id: str, after: str = "0-0"
) -> list[dict[str, Any]]:
    response = await http.get(
        f"/api/v1/jobs/{job_id}/events", params={"after": after}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


async def wait_task_finished(redis_client: Any, task_id: str, within: float = 40.0) -> str:
    """Wait (bounded) until Celery's result backend holds the task's outcome; returns its
    state. Used to know a task really ended, whatever jobcast showed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    state = None
    while loop.time() < deadline:
        raw = await asyncio.to_thread(redis_client.get, f"celery-task-meta-{task_id}")
        state = json.loads(raw).get("status") if raw else None
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            return str(state)
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish within {within:g} s (state {state})")


async def get_job(http: httpx.AsyncClient, token: str, job_id: str) -> httpx.Response:
    return await http.get(f"/api/v1/jobs/{job_id}", headers=bearer(token))


async def wait_job_status(
    http: httpx.AsyncClient,
    token: str,
    job_id: str,
    statuses: Collection[str],
    within: float = TIMEOUT,
) -> dict[str, Any]:
    """Poll ``GET /api/v1/jobs/{id}`` (bounded) until its status is one of ``statuses``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    job: dict[str, Any] = {}
    while loop.time() < deadline:
        response = await get_job(http, token, job_id)
        assert response.status_code == 200, response.text
        job = response.json()["data"]
        if job["status"] in statuses:
            return job
        await asyncio.sleep(0.1)  # 10 requests/s: well inside the REST rate limit
    raise AssertionError(f"job {job_id} never reached {statuses} in {within:g} s; last: {job}")


def is_snapshot(job_id: str) -> Predicate:
    return lambda msg: msg.get("snapshot") is True and msg.get("jobId") == job_id


# --- live output


def assemble_output(messages: Sequence[dict[str, Any]], job_id: str) -> str:
    """The job's output as a client assembles it from ``messages`` (as received): the
    snapshot's ``data.output``, then each ``job_output`` chunk, which must start exactly
    where the text so far ends (offsets in code points: no gap, no overlap). A snapshot
    replaces the text (it holds all output up to its eventId)."""
    text = ""
    for msg in messages:
        if msg.get("jobId") != job_id:
            continue
        if msg.get("snapshot"):
            data = msg["data"]
            assert len(data["output"]) == data["outputLength"], data.get("outputLength")
            assert data["output"].startswith(text), "a snapshot went back on the output"
            text = data["output"]
        elif msg.get("type") == "job_output":
            offset, chunk = msg["data"]["offset"], msg["data"]["text"]
            assert offset == len(text), f"chunk at {offset}, but the text has {len(text)}"
            assert chunk, "an empty chunk"
            text += chunk
    return text
