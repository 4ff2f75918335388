"""A client that stops reading (SPEC section 5, slow clients).

A dedicated server runs with a small send queue (``JOBCAST_SEND_QUEUE_BYTES=65536``). A
native WebSocket client on a raw socket (4 KiB receive buffer) reads its welcome and then
nothing, while 1,000 job_completed events of ~8 KB each (about 8 MB) are addressed to its
user, interleaved with as many for another user, whose normal client keeps reading. The
server must close the stalled connection with reason ``slow_consumer`` without its memory
growing by what was addressed to it, keep serving the other client, and a reconnection
with ``lastEventId`` must replay everything the stalled client missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import child_env
from tests.support.fault_helpers import History, ServerProc, produce
from tests.support.helpers import RawWebSocket, connect_native
from tests.support.processes import rss_bytes
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

QUEUE_BYTES = 64 * 1024
COUNT = 1000  # per user: the inbox keeps 1,000 events, so all of them stay replayable
RESULT_BYTES = 8000
#: ~8 MB is addressed to the stalled connection; the kernel buffers absorb about 3 MB of it
#: (loopback autotuning); a server queueing the rest would grow by about 5 MB.
MAX_GROWTH = 2 * 1024 * 1024


@pytest.fixture
def small_queue_server(tmp_path: Path) -> Iterator[ServerProc]:
    server = ServerProc(
        tmp_path, module="api", env=child_env(JOBCAST_SEND_QUEUE_BYTES=str(QUEUE_BYTES))
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def test_stalled_reader_is_closed_slow_consumer(
    small_queue_server: ServerProc, tmp_path: Path, tokens: Any
) -> None:
    server = small_queue_server
    fast = await connect_native(server.native_url, tokens.make("fast-1"))
    raw = await asyncio.to_thread(
        RawWebSocket, server.port, query={"token": tokens.make("slow-1")}, rcvbuf=4096
    )
    again = None
    try:
        await fast.wait_for_type("connection_established")
        welcome = await asyncio.to_thread(raw.read_message)
        assert welcome["type"] == "connection_established", welcome
        await fast.ping()
        rss_before = rss_bytes(server.pid)

        produced = await produce(
            "completions", tmp_path / "events.jsonl", users=["slow-1", "fast-1"], count=COUNT,
            result_bytes=RESULT_BYTES, prefix="sc", seconds=3,
        )  # fmt: skip
        history = History(produced)
        fast_inbox = set(history.inbox("fast-1"))
        assert await wait_until_async(
            lambda: fast_inbox <= {m.get("eventId") for m in fast.messages}, 30, interval=0.05
        ), "the reading client was held up by the stalled one"
        await fast.settle(0.5)
        history.check("fast-1", fast.messages)
        assert "slow consumer" in server.log_text(), "the server never gave up on the client"
        growth = rss_bytes(server.pid) - rss_before
        assert growth < MAX_GROWTH, f"the server grew by {growth / 2**20:.1f} MiB"

        # The stalled client reads again: a prefix of its events, in order, then the close.
        await asyncio.to_thread(raw.read_all)
        assert (raw.close_code, raw.close_reason) == (1008, "slow_consumer"), (
            raw.close_code,
            raw.close_reason,
        )
        got = [m for m in raw.messages if m.get("type") == "job_completed"]
        expected = history.inbox("slow-1")
        assert [m["eventId"] for m in got] == expected[: len(got)], "not a prefix, in order"
        assert len(got) < COUNT, "the stalled client was sent everything anyway"

        # Reconnecting with the last id it read replays the rest.
        query = {"lastEventId": got[-1]["eventId"]} if got else {}
        again = await connect_native(server.native_url, tokens.make("slow-1"), query=query)
        missed = len(expected) - len(got)
        await wait_until_async(
            lambda: (
                again.closed or set(expected) <= {m.get("eventId") for m in [*got, *again.messages]}
            ),
            20,
            interval=0.05,
        )
        assert not again.closed, (
            f"replaying {missed} events ({missed * RESULT_BYTES / 2**20:.1f} MiB) closed the "
            f"reconnected client ({again.close_code} {again.close_reason!r}) after "
            f"{len(again.messages)} messages"
        )
        welcome = again.messages[0]
        assert welcome["type"] == "connection_established", welcome
        assert welcome["recovered"] is bool(got), welcome
        await again.settle(0.5)
        history.check("slow-1", [*got, *again.messages])
    finally:
        raw.close()
        await fast.close()
        if again is not None:
            await again.close()
