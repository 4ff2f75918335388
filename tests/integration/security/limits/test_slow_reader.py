"""A slow reader (SPEC section 8): a native client that stops reading while 24 MiB are
meant for it is closed ``slow_consumer`` once its send queue (64 KiB on this package's limits
server) is full, the server's memory stays bounded, and a bystander is served throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from notifier.core.outbox import CLOSE_POLICY
from tests.support.fault_helpers import produce
from tests.support.helpers import RawWebSocket, Tokens, connect_native
from tests.support.limits_helpers import MiB
from tests.support.processes import Server, rss_bytes

pytestmark = pytest.mark.integration


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
