"""Helpers of the security (hostile client) tests: keys and crafted JWTs, dedicated servers
with tuned limits, one "connect and tell me what happened" per connection kind, a raw
Engine.IO polling client (the raw WebSocket one is ``helpers.RawWebSocket``), a recording
HTTP server (to prove nothing is fetched), and the server's memory from ``/proc``.

Every process is started by the tests and stopped by PID (``stop_process`` in ``finally``);
all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from notifier.transport.client_session import socketio_client
from tests.support.env import child_env
from tests.support.helpers import (
    SOCKETIO_PATH,
    TIMEOUT,
    NativeClient,
    SioClient,
    connect_native,
    connect_sio,
)
from tests.support.processes import RedisServer, Server, running_server
from tests.support.waiting import wait_until_async

#: The connection kinds of the JWT and origin matrices; "rest" is ``GET /api/v1/jobs``.
SOCKET_KINDS = ("websocket", "polling", "native")
ALL_KINDS = (*SOCKET_KINDS, "rest")

EIO_PATH = f"{SOCKETIO_PATH}/"


# --- keys and tokens


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def _pems(private: Any) -> KeyPair:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private_pem, public_pem)


def rsa_keys() -> KeyPair:
    return _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_keys() -> KeyPair:
    return _pems(ec.generate_private_key(ec.SECP256R1()))


def claims(sub: Any = 1, ttl: float = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unsigned(body: dict[str, Any], alg: str = "none") -> str:
    """``alg: none`` (any spelling): header.payload. with an empty signature."""
    return f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(body)}."


def hs256_with_key_material(body: dict[str, Any], key_material: str) -> str:
    """HS256 signed by hand with ``key_material`` (e.g. an RSA public key's PEM) as the HMAC
    secret: the HS/RS algorithm-confusion forgery (PyJWT refuses to produce it itself)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(body)}"
    mac = hmac.new(key_material.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tampered(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with ``changes`` applied."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{header}.{_segment(body)}.{signature}"


def sign(body: dict[str, Any], key: str, alg: str, headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(body, key, algorithm=alg, headers=headers)


# --- dedicated servers


@contextlib.contextmanager
def dedicated_server(log_dir: Path, name: str, **env: str) -> Iterator[Server]:
    """``python -m api`` of this module's own, on the session's Redis, with ``env`` on top of
    the tests' environment; stopped by PID when the block ends.

    Its authentication timeout is 3 s unless ``env`` says otherwise: uvicorn's graceful
    shutdown waits for the timers of Engine.IO sessions that never authenticated (the
    refusal and origin tests leave some), which would otherwise add 10 s to each stop."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {"JOBCAST_AUTH_TIMEOUT_SECONDS": "3", **env}
    with running_server(log_dir / f"{name}.log", child_env(**env)) as handle:
        try:
            yield handle
        finally:
            _quick_stop(handle.proc)


def _quick_stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM; if uvicorn is still waiting for background tasks 2 s later (the timers of
    sessions that never authenticated), SIGINT, which uvicorn then takes as "force quit"
    (its lifespan shutdown still runs). ``running_server`` then reaps it by PID."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


# --- one outcome per connection kind


@dataclass
class Outcome:
    """What happened to one connection attempt."""

    accepted: bool
    code: str | None = None  # the documented refusal code (connect_error data.code, ...)
    detail: Any = None  # close code / status / payload, for messages
    welcome: dict[str, Any] | None = None


async def attempt(kind: str, server: Server, token: str | None) -> Outcome:
    """Connect with ``token`` over ``kind`` and report acceptance or the refusal code.

    websocket / polling: python-socketio, token in ``auth``; native: ``?token=``; rest:
    ``GET /api/v1/jobs`` with ``Authorization: Bearer``.
    """
    if kind == "rest":
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            # As bytes: a hostile token may hold any character (sent as UTF-8).
            headers = {"Authorization": f"Bearer {token}".encode()} if token is not None else {}
            response = await http.get("/api/v1/jobs", headers=headers)
        if response.status_code == 200:
            return Outcome(True, detail=200)
        body = response.json()
        assert response.status_code == 401, response.text
        assert isinstance(body.get("message"), str) and body["message"], body
        return Outcome(False, body.get("code"), 401)
    if kind == "native":
        try:
            native = await connect_native(server.native_url, token)
        except websockets.InvalidStatus as exc:
            return Outcome(False, None, f"HTTP {exc.response.status_code}")
        try:
            await wait_until_async(lambda: bool(native.messages) or native.closed, TIMEOUT)
            if native.messages and native.messages[0].get("type") == "connection_established":
                return Outcome(True, welcome=native.messages[0])
            code, reason = await native.wait_closed()
            assert native.messages == [], f"a refused connection was sent {native.messages}"
            return Outcome(False, (reason or "").split(":")[0] or None, code)
        finally:
            await native.close()
    # Socket.IO
    client = SioClient(socketio_client(reconnection=False))
    try:
        await client.sio.connect(
            server.url,
            socketio_path=SOCKETIO_PATH,
            transports=[kind],
            auth={"token": token} if token is not None else None,
            wait=False,
        )
        answered = await wait_until_async(
            lambda: bool(client.connect_errors) or bool(client.of_type("connection_established")),
            TIMEOUT,
        )
        assert answered, f"{kind}: the server neither accepted nor refused the connection"
        if client.connect_errors:
            payload = client.connect_errors[0]
            assert isinstance(payload, dict), payload
            assert isinstance(payload.get("message"), str) and payload["message"], payload
            data = payload.get("data") or {}
            return Outcome(False, data.get("code"), payload)
        return Outcome(True, welcome=client.of_type("connection_established")[0])
    finally:
        await dispose(client)


async def dispose(client: SioClient) -> None:
    """Close ``client`` and its HTTP session, which python-engineio keeps open after a
    refused connect (:meth:`SioClient.close` closes both)."""
    await client.close()


async def open_client(kind: str, url: str, token: str, **kwargs: Any) -> SioClient | NativeClient:
    """A connected client of ``kind`` (websocket, polling, native) that got its welcome."""
    client: SioClient | NativeClient
    if kind == "native":
        client = await connect_native(f"{url.replace('http', 'ws', 1)}/ws/job-status-native", token)
    else:
        client = await connect_sio(url, token, [kind], **kwargs)
    try:
        await client.wait_for_type("connection_established")
    except BaseException:
        await client.close()
        raise
    return client


async def wait_closed(client: SioClient | NativeClient, within: float = TIMEOUT) -> Any:
    """Wait (bounded) for the server to close ``client``; native: ``(code, reason)``."""
    if isinstance(client, NativeClient):
        return await client.wait_closed(within)
    ok = await wait_until_async(lambda: client.closed, within)
    assert ok, f"the server did not close the connection within {within:g} s"
    return None


@contextlib.asynccontextmanager
async def clients() -> Any:
    """Collects clients (``bag.append``) and closes each when the block ends."""
    bag: list[SioClient | NativeClient] = []
    try:
        yield bag
    finally:
        await asyncio.gather(*(c.close() for c in bag), return_exceptions=True)


# --- raw Engine.IO over httpx (polling)


class EioPolling:
    """Engine.IO v4 long-polling by hand: ``open()``, ``post()``, ``get()``."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.headers = headers or {}
        self.sid: str | None = None
        self.handshake: dict[str, Any] = {}

    def _url(self, **params: str) -> str:
        query = {"EIO": "4", "transport": "polling", **params}
        if self.sid:
            query["sid"] = self.sid
        return f"{EIO_PATH}?{urlencode(query)}"

    async def open(self, **params: str) -> httpx.Response:
        response = await self.http.get(self._url(**params), headers=self.headers)
        if response.status_code == 200:
            assert response.text.startswith("0"), response.text
            self.handshake = json.loads(response.text[1:])
            self.sid = self.handshake["sid"]
        return response

    async def post(self, payload: str | bytes, **kwargs: Any) -> httpx.Response:
        return await self.http.post(self._url(), content=payload, headers=self.headers, **kwargs)

    async def get(self, **kwargs: Any) -> httpx.Response:
        return await self.http.get(self._url(), headers=self.headers, **kwargs)

    @staticmethod
    def packets(response: httpx.Response) -> list[str]:
        return response.text.split("\x1e") if response.text else []


# --- a local HTTP server that records every request (nothing may be fetched)


class RecordingHttpServer:
    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.append(self.path)
                body = b'{"keys": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> RecordingHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


async def log_settled(server: Server, marker: str, within: float = TIMEOUT) -> str:
    """The server's log once ``marker`` appears in it (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        text = server.log_text()
        if marker in text:
            return text
        assert loop.time() < deadline, f"{marker!r} never logged; log tail:\n{text[-3000:]}"
        await asyncio.sleep(0.1)


# --- a Redis with a password


class PasswordRedis(RedisServer):
    """A redis-server of our own with ``--requirepass``; ``stop()`` / ``start()`` keep the
    port (for an outage)."""

    def __init__(self, port: int, workdir: Path, password: str) -> None:
        super().__init__(port, workdir, password=password)
        self.log_path = workdir / "redis-password.log"


async def instance_leases(redis_client: Any, count: int, within: float = TIMEOUT) -> None:
    """Wait (bounded) until ``count`` notifier instances hold a live lease in Redis.

    A connection counts (limits, user status) only while its instance's lease is live, and
    each test starts with FLUSHALL: until every server has renewed its lease (once a
    second), presence checks would prune the entries of new connections."""
    from notifier.contract import keys

    def live() -> int:
        now_ms = int(time.time() * 1000)
        return int(redis_client.zcount(keys.INSTANCES, now_ms, "+inf"))

    ok = await wait_until_async(lambda: live() >= count, within)
    assert ok, f"{live()} of {count} notifier instances have a live lease"
