"""Token lifetime on live connections (SPEC section 2): ``session_expiring`` before ``exp``
(at once when less remains at connect), ``session_expired`` and a disconnect at ``exp``
(native: close 4401), unless ``refresh_token`` with a valid token for the same ``sub``
came first.

A dedicated server shortens the warning to 3 s and sets the clock leeway to 0, so a token
that expires 5 s after connecting shows the whole life cycle. The three connection kinds
run side by side in each test (the waits are the contract's own, a few seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.support.env import JWT_SECRET
from tests.support.helpers import NativeClient, Recorder, is_type
from tests.support.hostile_helpers import (
    SOCKET_KINDS,
    claims,
    clients,
    dedicated_server,
    open_client,
    sign,
    wait_closed,
)
from tests.support.processes import Server

pytestmark = pytest.mark.integration

WARNING = 3.0
#: Slack for "at exp": the server's timers and the delivery of the message.
SLACK = 1.5


@pytest.fixture(scope="module")
def session_server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        tmp_path_factory.mktemp("sessions"),
        "sessions",
        JOBCAST_SESSION_WARNING_SECONDS=str(WARNING),
        JOBCAST_JWT_LEEWAY_SECONDS="0",
    ) as handle:
        yield handle


def token(sub: Any, exp: int) -> str:
    return sign({**claims(sub), "exp": exp}, JWT_SECRET, "HS256")


async def arrival(client: Recorder, kind: str, within: float, **fields: Any) -> float:
    """Wait for a message of ``kind``; returns the wall-clock time it was seen."""
    await client.wait_for(is_type(kind, **fields), within=within, what=kind)
    return time.time()


async def all_kinds(check: Callable[[str], Awaitable[None]]) -> None:
    """Run ``check`` for every connection kind side by side; report every failure."""
    results = await asyncio.gather(*(check(kind) for kind in SOCKET_KINDS), return_exceptions=True)
    failures = [
        f"{kind}: {type(result).__name__}: {result}"
        for kind, result in zip(SOCKET_KINDS, results, strict=True)
        if isinstance(result, BaseException)
    ]
    assert not failures, "\n".join(failures)


async def test_session_expiring_then_expired_and_closed(session_server: Server) -> None:
    async def check(kind: str) -> None:
        async with clients() as bag:
            exp = int(time.time()) + 6
            client = await open_client(kind, session_server.url, token(f"exp-{kind}", exp))
            bag.append(client)
            # Until the warning, the session is quiet and works.
            assert (await client.ping())["type"] == "pong"
            assert not client.of_type("session_expiring")

            warned_at = await arrival(client, "session_expiring", within=exp - time.time() + 5)
            warning = client.of_type("session_expiring")[0]
            assert warning["expiresAt"] == exp * 1000, warning
            assert isinstance(warning["timestamp"], int) and warning["message"]
            assert warned_at >= exp - WARNING - SLACK, "warned too early"
            assert not client.of_type("session_expired"), "expired before exp"

            expired_at = await arrival(client, "session_expired", within=exp - time.time() + 5)
            assert expired_at >= exp - 0.5, f"session_expired {exp - expired_at:.1f} s early"
            closed = await wait_closed(client, within=5)
            if isinstance(client, NativeClient):
                assert closed == (4401, "session_expired"), closed
            order = [m["type"] for m in client.messages if m["type"].startswith("session_")]
            assert order == ["session_expiring", "session_expired"], order

    await all_kinds(check)


async def test_warning_at_once_when_less_remains(session_server: Server) -> None:
    async def check(kind: str) -> None:
        async with clients() as bag:
            exp = int(time.time()) + 2  # less than the 3 s warning
            client = await open_client(kind, session_server.url, token(f"soon-{kind}", exp))
            bag.append(client)
            await client.wait_for_type("session_expiring", within=exp - time.time() + 1)
            welcome = client.messages.index(client.of_type("connection_established")[0])
            warning = client.messages.index(client.of_type("session_expiring")[0])
            assert welcome < warning
            await client.wait_for_type("session_expired", within=exp - time.time() + 5)
            await wait_closed(client, within=5)

    await all_kinds(check)


async def test_refresh_token_extends_the_session(session_server: Server) -> None:
    async def check(kind: str) -> None:
        async with clients() as bag:
            sub = f"refresh-{kind}"
            exp = int(time.time()) + 5
            client = await open_client(kind, session_server.url, token(sub, exp))
            bag.append(client)
            later = int(time.time()) + 3600
            start = client.mark()
            await client.send("refresh_token", token=token(sub, later))
            refreshed = await client.wait_for_type("token_refreshed", after=start)
            assert refreshed["expiresAt"] == later * 1000, refreshed

            # Past the old exp (and its warning): nothing happens, the connection works.
            await asyncio.sleep(max(0.0, exp + SLACK - time.time()))
            assert (await client.ping())["type"] == "pong"
            assert not client.closed
            assert not client.of_type("session_expired")
            assert not client.of_type("session_expiring"), "warned about the replaced exp"

    await all_kinds(check)


async def test_refresh_with_a_numeric_sub_matches_its_string_form(session_server: Server) -> None:
    """``sub`` 7 and ``"7"`` are the same user (compared as strings)."""
    async with clients() as bag:
        client = await open_client("native", session_server.url, token(7, int(time.time()) + 60))
        bag.append(client)
        start = client.mark()
        await client.send("refresh_token", token=token("7", int(time.time()) + 120))
        assert (await client.wait_for_type("token_refreshed", after=start))["expiresAt"]


async def test_refresh_refused_keeps_the_old_expiry(session_server: Server) -> None:
    """Another user's token, an expired one, a forged one, garbage: each is ``error``
    ``invalid_token``, the connection stays open, and it still expires at its own exp."""

    async def check(kind: str) -> None:
        async with clients() as bag:
            sub = f"refused-{kind}"
            exp = int(time.time()) + 5
            client = await open_client(kind, session_server.url, token(sub, exp))
            bag.append(client)
            far = int(time.time()) + 3600
            bad_tokens = {
                "another sub": token(f"other-{kind}", far),
                "expired": token(sub, int(time.time()) - 60),
                "bad signature": sign(
                    {**claims(sub), "exp": far}, "not-the-secret-" + "x" * 50, "HS256"
                ),
                "garbage": "not.a.jwt",
            }
            for label, bad in bad_tokens.items():
                start = client.mark()
                await client.send("refresh_token", token=bad)
                error = await client.wait_for_type("error", after=start)
                assert error["code"] == "invalid_token", (label, error)
                assert error.get("request") == "refresh_token", (label, error)
                assert (await client.ping())["type"] == "pong", label
            start = client.mark()
            await client.send("refresh_token", token=12345)
            error = await client.wait_for_type("error", after=start)
            assert error["code"] in ("bad_request", "invalid_token"), error
            assert not client.of_type("token_refreshed")

            await client.wait_for_type("session_expired", within=exp - time.time() + 5)
            closed = await wait_closed(client, within=5)
            if isinstance(client, NativeClient):
                assert closed == (4401, "session_expired"), closed

    await all_kinds(check)
