"""Secrets never reach the server's log (SPEC section 2): tokens in ``?token=`` (native,
polling, Socket.IO's WebSocket, REST), in ``Authorization`` headers, in a URL path, in a
``refresh_token`` message and as a message type; the Redis password of ``REDIS_URL``, even
while Redis is away; the JWT secret. uvicorn's own access and error loggers included.

The server of this module runs at DEBUG level (the most it will ever say) on a Redis of
its own that requires a password. ``auth/test_refusals.py`` covers the basic
``?token=`` case at INFO on the session's server.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.env import JWT_SECRET, free_port
from tests.support.helpers import Tokens, bearer, connect_native, connect_sio
from tests.support.hostile_helpers import EioPolling, PasswordRedis, dedicated_server, log_settled
from tests.support.processes import Server

pytestmark = pytest.mark.integration

PASSWORD = "redis-pw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedis]:
    redis = PasswordRedis(free_port(), tmp_path_factory.mktemp("redis-pw"), PASSWORD)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def log_server(
    redis_server: Any, password_redis: PasswordRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with dedicated_server(
        tmp_path_factory.mktemp("logs"),
        "logs",
        REDIS_URL=password_redis.url,
        JOBCAST_LOG_LEVEL="DEBUG",
    ) as handle:
        yield handle


async def wait_status(http: httpx.AsyncClient, path: str, status: int) -> None:
    async def check() -> bool:
        try:
            return (await http.get(path)).status_code == status
        except httpx.HTTPError:
            return False

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await check():
        assert loop.time() < deadline, f"{path} never answered {status}"
        await asyncio.sleep(0.2)


async def test_no_secret_in_the_log(
    log_server: Server, password_redis: PasswordRedis, tokens: Tokens
) -> None:
    made: dict[str, str] = {}

    def token(label: str, **kwargs: Any) -> str:
        made[label] = tokens.make(f"log-{label}", jti=secrets.token_hex(8), **kwargs)
        return made[label]

    # native: ?token= and the Authorization header
    by_query = await connect_native(log_server.native_url, token("native-query"))
    by_header = await connect_native(
        log_server.native_url, None, headers=bearer(token("native-header"))
    )
    for native in (by_query, by_header):
        await native.wait_for_type("connection_established")
    # messages carrying tokens: refresh_token, and a token as the message type
    start = by_query.mark()
    made["refresh"] = tokens.make("log-native-query", jti="refresh")
    await by_query.send("refresh_token", token=made["refresh"])
    await by_query.wait_for_type("token_refreshed", after=start)
    await by_query.send(token("as-type"))
    await by_query.send("subscribe_job", jobId=token("as-job-id"))
    await by_query.ping()
    # refused: an expired token in the query
    made["expired"] = tokens.make("log-expired", ttl_seconds=-3600, jti="expired")
    refused = await connect_native(log_server.native_url, made["expired"])
    await refused.wait_closed()

    # Socket.IO: ?token= over polling and WebSocket, the header over polling
    sio = [
        await connect_sio(log_server.url, None, ["polling"], query={"token": token("polling-q")}),
        await connect_sio(log_server.url, None, ["websocket"], query={"token": token("ws-query")}),
        await connect_sio(
            log_server.url, None, ["polling"], headers=bearer(token("polling-header"))
        ),
    ]
    for client in sio:
        await client.wait_for_type("connection_established")
    async with httpx.AsyncClient(base_url=log_server.url, timeout=20) as http:
        # a raw polling session with the token in every request's query
        eio = EioPolling(http)
        assert (await eio.open(token=token("raw-polling"))).status_code == 200
        await eio.post("40")
        await eio.get()

        # REST: query, header, and a token where an id goes (logged as the path)
        assert (await http.get("/api/v1/jobs", params={"token": token("rest-q")})).is_success
        assert (await http.get("/api/v1/jobs", headers=bearer(token("rest-h")))).is_success
        in_path = await http.get(f"/api/v1/jobs/{token('in-path')}", headers=bearer(tokens.alice))
        assert in_path.status_code == 404

        # Redis goes away and comes back: the errors name the server, not its password
        await asyncio.gather(*(c.close() for c in (by_query, by_header, *sio)))
        password_redis.stop()
        await wait_status(http, "/readyz", 503)
        await log_settled(log_server, "event reader lost Redis")
        password_redis.start()
        await wait_status(http, "/readyz", 200)

    log = await log_settled(log_server, "/api/v1/jobs/[redacted-jwt]")
    # The test saw its own traffic logged (it is not looking at an empty file).
    assert log.count("/ws/job-status-native?token=[redacted]") >= 2, "native access lines"
    assert "transport=polling" in log and "token=[redacted]" in log
    assert "GET /readyz" in log and "503" in log

    leaks = [label for label, value in made.items() if value.rsplit(".", 1)[1] in log]
    assert not leaks, f"tokens in the log: {leaks}"
    assert PASSWORD not in log, "the Redis password is in the log"
    assert JWT_SECRET not in log, "the JWT secret is in the log"
    assert json.dumps(PASSWORD)[1:-1] not in log
