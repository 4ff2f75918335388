"""Missing, expired and badly signed tokens on every door: Socket.IO (both transports),
the native WebSocket (close 4401) and REST (401), each with its documented code."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.helpers import TIMEOUT, Tokens, bearer, refused_sio

pytestmark = pytest.mark.integration

#: (case, expected code); the token of each case comes from ``refusal_token``.
REFUSALS = [
    ("missing", "auth_required"),
    ("expired", "token_expired"),
    ("bad_signature", "invalid_token"),
    ("not_a_jwt", "invalid_token"),
]


def refusal_token(tokens: Tokens, case: str) -> str | None:
    return {
        "missing": None,
        "expired": tokens.expired(),
        "bad_signature": tokens.bad_signature(),
        "not_a_jwt": "not-a-jwt",
    }[case]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize(("case", "code"), REFUSALS)
async def test_socketio_refusal(
    server: Any, tokens: Tokens, transport: str, case: str, code: str
) -> None:
    payload = await refused_sio(server.url, refusal_token(tokens, case), [transport])
    assert payload["data"] == {"code": code}
    assert isinstance(payload["message"], str) and payload["message"]


@pytest.mark.parametrize(("case", "code"), REFUSALS)
async def test_native_refusal(native_client: Any, tokens: Tokens, case: str, code: str) -> None:
    client = await native_client(refusal_token(tokens, case), wait_welcome=False)
    close_code, reason = await client.wait_closed()
    assert close_code == 4401
    assert reason is not None and reason.startswith(f"{code}:"), reason
    assert client.messages == [], "a refused connection is sent nothing"


async def test_native_refusal_of_a_header_token(native_client: Any, tokens: Tokens) -> None:
    client = await native_client(None, headers=bearer(tokens.expired()), wait_welcome=False)
    close_code, reason = await client.wait_closed()
    assert (close_code, (reason or "").split(":")[0]) == (4401, "token_expired")


@pytest.mark.parametrize(("case", "code"), REFUSALS)
async def test_rest_refusal(http: Any, tokens: Tokens, case: str, code: str) -> None:
    token = refusal_token(tokens, case)
    headers = bearer(token) if token is not None else {}
    response = await http.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]


async def test_rest_accepts_the_token_as_query_parameter(http: Any, tokens: Tokens) -> None:
    response = await http.get("/api/v1/jobs", params={"token": tokens.alice})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"jobs": []}


# --- accepted connections


async def test_socketio_welcome_keeps_the_type_of_sub(sio_client: Any, tokens: Tokens) -> None:
    for transport in ("websocket", "polling"):
        alice = await sio_client(tokens.alice, transports=[transport])
        bob = await sio_client(tokens.bob, transports=[transport])
        check_welcome(alice.of_type("connection_established"), 1, "alice")
        check_welcome(bob.of_type("connection_established"), "bob-2", "bob")


async def test_native_welcome_with_query_or_header_token(
    native_client: Any, tokens: Tokens
) -> None:
    by_query = await native_client(tokens.alice)
    by_header = await native_client(None, headers=bearer(tokens.bob))
    check_welcome(by_query.of_type("connection_established"), 1, "alice")
    check_welcome(by_header.of_type("connection_established"), "bob-2", "bob")


def check_welcome(welcomes: list[dict[str, Any]], user_id: Any, username: str) -> None:
    assert len(welcomes) == 1, welcomes
    welcome = welcomes[0]
    assert welcome["userId"] == user_id and type(welcome["userId"]) is type(user_id)
    assert welcome["username"] == username
    assert welcome["recovered"] is False
    assert isinstance(welcome["timestamp"], int)
    assert welcome["message"] == "WebSocket connection established successfully"


async def test_tokens_never_reach_the_server_log(
    server: Any, http: Any, native_client: Any, tokens: Tokens
) -> None:
    token = tokens.make(1, username="log-probe", jti="log-probe-unique")
    expired = tokens.expired()
    offset = len(server.log_text())
    client = await native_client(token)
    await client.ping()
    await client.close()
    response = await http.get("/api/v1/jobs", params={"token": token})
    assert response.status_code == 200
    refused = await native_client(expired, wait_welcome=False)
    await refused.wait_closed()

    # Wait (bounded) until this test's access lines are in the log, then look.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    new = server.log_text()[offset:]
    while new.count("/ws/job-status-native") < 2 or "/api/v1/jobs" not in new:
        assert loop.time() < deadline, f"access lines never logged:\n{new[-2000:]}"
        await asyncio.sleep(0.1)
        new = server.log_text()[offset:]
    log = server.log_text()
    for secret in (token, expired):
        signature = secret.rsplit(".", 1)[1]
        assert signature not in log, "a token reached the server log"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_token_from_header_or_query(
    sio_client: Any, tokens: Tokens, transport: str
) -> None:
    by_header = await sio_client(None, transports=[transport], headers=bearer(tokens.bob))
    by_query = await sio_client(None, transports=[transport], query={"token": tokens.alice})
    check_welcome(by_header.of_type("connection_established"), "bob-2", "bob")
    check_welcome(by_query.of_type("connection_established"), 1, "alice")
