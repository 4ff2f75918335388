"""Connections per user (SPEC section 8), 2 on this package's limits server: a 3rd is
refused ``too_many_connections`` over every kind (native: close 4429), REST is not a
connection, a closed connection frees its slot, and the count lives in Redis, across
instances."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifier.core.outbox import CLOSE_TOO_MANY
from tests.support.helpers import TIMEOUT, Tokens
from tests.support.hostile_helpers import (
    SOCKET_KINDS,
    attempt,
    clients,
    instance_leases,
    open_client,
)
from tests.support.processes import Server

pytestmark = pytest.mark.integration


async def test_connections_per_user(
    limits_server: Server, tokens: Tokens, redis_client: Any
) -> None:
    await instance_leases(redis_client, 2)  # the session's server and the limits server
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
