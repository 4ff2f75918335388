"""Message size (SPEC section 8): a client message over 4 KiB is answered
``message_too_large`` and the connection closed (native: 1009); the size is counted in bytes
of UTF-8, not characters. On every connection kind, on this package's limits server."""

from __future__ import annotations

import pytest

from notifier.core.outbox import CLOSE_TOO_BIG
from tests.support.helpers import NativeClient, Tokens
from tests.support.hostile_helpers import SOCKET_KINDS, clients, open_client, wait_closed
from tests.support.limits_helpers import MAX_MESSAGE, send_raw_ping
from tests.support.processes import Server

pytestmark = pytest.mark.integration


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
