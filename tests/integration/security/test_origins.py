"""Cross-site WebSocket hijacking (SPEC sections 2 and 8): a connection whose ``Origin`` is
neither in ``JOBCAST_CORS_ORIGINS`` nor the server's own is refused at the HTTP handshake,
on polling (400/403), Socket.IO's WebSocket and the native endpoint (403, before accept);
listed origins and the server's own pass; no ``Origin`` (not a browser) still needs a
token; REST CORS answers preflights for the listed origins only.

A dedicated server lists one origin of its own (so the defaults, localhost:3000 and
localhost:5173, are not allowed there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
import websockets

from notifier.transport.client_session import socketio_client
from tests.support.helpers import SOCKETIO_PATH, SioClient, connect_native, connect_sio
from tests.support.hostile_helpers import EIO_PATH, EioPolling, dedicated_server, dispose
from tests.support.processes import Server

pytestmark = pytest.mark.integration

ALLOWED = "https://app.jobcast.test"


@pytest.fixture(scope="module")
def origin_server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        tmp_path_factory.mktemp("origins"), "origins", JOBCAST_CORS_ORIGINS=f"{ALLOWED}, "
    ) as handle:
        yield handle


def foreign_origins(server: Server) -> list[str]:
    own_host = f"127.0.0.1:{server.port}"
    return [
        "http://evil.test",
        "null",
        f"{ALLOWED}.evil.test",  # a prefix of an allowed origin
        f"{ALLOWED}:8443",  # another port
        "http://app.jobcast.test",  # another scheme
        f"https://{own_host}",  # the server's own host, another scheme
        f"http://{own_host}.evil.test",
        "http://localhost:3000",  # a default, replaced by the configured list
    ]


def own_origin(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


async def handshake_status(kind: str, server: Server, origin: str) -> int:
    """The HTTP status of a bare handshake from ``origin`` (101 for an accepted upgrade)."""
    if kind == "polling":
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            response = await http.get(
                f"{EIO_PATH}?EIO=4&transport=polling", headers={"Origin": origin}
            )
            return response.status_code
    native = kind == "native"
    path = "/ws/job-status-native" if native else f"{EIO_PATH}?EIO=4&transport=websocket"
    try:
        async with websockets.connect(
            f"{server.ws_url}{path}",
            origin=websockets.Origin(origin),
            open_timeout=20,
        ):
            return 101
    except websockets.InvalidStatus as exc:
        return int(exc.response.status_code)


@pytest.mark.parametrize("kind", ["polling", "websocket", "native"])
async def test_foreign_origins_are_refused_at_the_handshake(
    origin_server: Server, kind: str
) -> None:
    for origin in foreign_origins(origin_server):
        status = await handshake_status(kind, origin_server, origin)
        expected = (400, 403) if kind == "polling" else (403,)
        assert status in expected, f"{kind} from {origin}: HTTP {status}"


@pytest.mark.parametrize("kind", ["polling", "websocket", "native"])
async def test_listed_and_own_origins_pass(origin_server: Server, kind: str) -> None:
    for origin in (ALLOWED, f"{ALLOWED}/", own_origin(origin_server)):
        status = await handshake_status(kind, origin_server, origin)
        assert status in (200, 101), f"{kind} from {origin}: HTTP {status}"


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_socketio_client_with_an_origin(
    origin_server: Server, tokens: Any, transport: str
) -> None:
    """A real client: welcomed from a listed origin, refused from a foreign one even with
    a valid token."""
    for origin in (ALLOWED, own_origin(origin_server)):
        client = await connect_sio(
            origin_server.url, tokens.alice, [transport], headers={"Origin": origin}
        )
        try:
            welcome = await client.wait_for_type("connection_established")
            assert welcome["userId"] == 1
        finally:
            await client.close()
    refused = SioClient(socketio_client(reconnection=False))
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.sio.connect(
                origin_server.url,
                headers={"Origin": "http://evil.test"},
                socketio_path=SOCKETIO_PATH,
                transports=[transport],
                auth={"token": tokens.alice},
                wait_timeout=20,
            )
    finally:
        await dispose(refused)
    assert not refused.of_type("connection_established")


async def test_native_client_with_an_origin(origin_server: Server, tokens: Any) -> None:
    client = await connect_native(
        origin_server.native_url, tokens.alice, headers={"Origin": ALLOWED}
    )
    try:
        assert (await client.wait_for_type("connection_established"))["userId"] == 1
    finally:
        await client.close()
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect_native(
            origin_server.native_url, tokens.alice, headers={"Origin": "http://evil.test"}
        )
    assert info.value.response.status_code == 403


async def test_no_origin_still_needs_a_token(origin_server: Server, tokens: Any) -> None:
    """Non-browser clients send no Origin: the handshake passes, the token decides."""
    async with httpx.AsyncClient(base_url=origin_server.url, timeout=20) as http:
        eio = EioPolling(http)
        assert (await eio.open()).status_code == 200
        assert (await eio.post("40")).status_code == 200  # CONNECT without auth
        seen: list[str] = []
        for _ in range(3):  # the answer may come after a ping or a no-op
            seen += EioPolling.packets(await eio.get())
            if any(p.startswith("44") for p in seen):
                break
        refused = [p for p in seen if p.startswith("44")]
        assert refused, f"no CONNECT_ERROR among {seen}"
        assert json.loads(refused[0][2:])["data"] == {"code": "auth_required"}

        rest = await http.get("/api/v1/jobs")
        assert rest.status_code == 401 and rest.json()["code"] == "auth_required"
    native = await connect_native(origin_server.native_url, None)
    assert (await native.wait_closed())[0] == 4401
    accepted = await connect_native(origin_server.native_url, tokens.alice)
    try:
        await accepted.wait_for_type("connection_established")
    finally:
        await accepted.close()


async def test_rest_cors_preflight_for_listed_origins_only(
    origin_server: Server, tokens: Any
) -> None:
    async with httpx.AsyncClient(base_url=origin_server.url, timeout=20) as http:

        def preflight(origin: str) -> Any:
            return http.options(
                "/api/v1/jobs",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )

        allowed = await preflight(ALLOWED)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert allowed.headers.get("access-control-allow-credentials") == "true"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

        for origin in foreign_origins(origin_server):
            refused = await preflight(origin)
            assert refused.status_code == 400, (origin, refused.status_code)
            assert "access-control-allow-origin" not in refused.headers, origin

        # A simple request from a foreign origin: answered (CORS is the browser's to
        # enforce) but without any header that would let the page read it.
        response = await http.get(
            "/api/v1/jobs",
            headers={"Origin": "http://evil.test", "Authorization": f"Bearer {tokens.alice}"},
        )
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        # (Starlette adds Allow-Credentials to every response; without Allow-Origin a
        # browser still refuses the page the response.)
        listed = await http.get(
            "/api/v1/jobs", headers={"Origin": ALLOWED, "Authorization": f"Bearer {tokens.alice}"}
        )
        assert listed.headers["access-control-allow-origin"] == ALLOWED
