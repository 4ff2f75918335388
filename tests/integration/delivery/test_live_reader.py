"""The partition reader on one Redis (``notifier.core.reader``): it reads the partitions'
live channels, and the streams for whatever the channels did not bring. Every entry of a
read partition is handed on once, in id order, however it came: announced, appended
without an announcement, published while the reader's connection was cut, or among
garbage on the channel. Against a real Redis, with the real publish path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from notifier.contract import events
from notifier.contract.events import StreamEvent
from notifier.contract.keys import keyspace
from notifier.contract.settings import Settings
from notifier.core import bus
from notifier.core.reader import PartitionReader
from tests.support.waiting import wait_until_async

# The live channels are how a notifier reads one Redis; on a cluster it blocks on XREAD.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]


class Reading:
    """A running reader of one partition, and what it handed on."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.space = keyspace(settings.partitions)
        self.index = 5
        self.part = self.space.partitions[self.index]
        self.user = next(u for u in (f"lr{i}" for i in range(10_000)) if self.owned(u))
        self.got: list[StreamEvent] = []
        self.reader = PartitionReader(client, self.on_events, self.space, cluster=False)

    def owned(self, user: str) -> bool:
        return self.space.index_of(user) == self.index

    async def on_events(self, batch: Sequence[StreamEvent]) -> None:
        self.got.extend(batch)

    async def publish(self, count: int, start: int = 0) -> list[str]:
        ids = []
        for n in range(start, start + count):
            event = events.status_update(f"lr-job-{n}", self.user, events.QUEUED)
            event_id = await bus.publish(self.client, event, self.settings)
            assert event_id is not None
            ids.append(event_id)
        return ids

    async def wait_for(self, ids: list[str]) -> None:
        """Wait (at most 10 s) until as many entries as ``ids`` were handed on."""
        arrived = await wait_until_async(lambda: len(self.got) >= len(ids), 10, interval=0.02)
        assert arrived, self.describe(ids)

    def describe(self, ids: list[str]) -> str:
        got = [e.event_id for e in self.got]
        live = self.reader._shared
        conn = live.conn if live is not None else None
        return (
            f"handed on {len(got)} of {len(ids)}; missing {[i for i in ids if i not in got]}; "
            f"reader connected={self.reader.connected} healthy={self.reader.healthy} "
            f"last ids={self.reader.last_ids} channels' connection "
            f"{'open' if conn is not None and conn.is_connected else 'none or closed'}"
        )

    def check(self, ids: list[str]) -> None:
        got = [e.event_id for e in self.got]
        assert got == ids, f"handed on {len(got)} entries, expected {len(ids)} in order, once"


@pytest.fixture
async def reading(redis_server: Any) -> AsyncIterator[Reading]:
    settings = Settings(_env_file=None, redis_url=redis_server.url, replica_wait_ms=0)
    client = bus.async_client(settings)
    await client.flushall()
    reading = Reading(client, settings)
    task = asyncio.create_task(reading.reader.run())
    reading.reader.add(reading.index)
    await reading.reader.started(reading.index)
    assert reading.reader.last_id(reading.index) is not None, "the partition was not started"
    try:
        yield reading
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()


async def test_announced_entries_are_handed_on_in_order(reading: Reading) -> None:
    ids = await reading.publish(50)
    await reading.wait_for(ids)
    await asyncio.sleep(0.2)  # nothing more comes
    reading.check(ids)


async def test_entries_appended_without_announcement_are_read_from_the_stream(
    reading: Reading,
) -> None:
    """The once-a-second read of the streams: entries no channel message announced (a
    publisher of a release before the live channels) still reach the reader, in order."""
    before = await reading.publish(3)
    await reading.wait_for(before)
    quiet = []
    for n in range(3):
        fields = {"r": "user", "t": "system_notification", "u": reading.user, "j": "", "c": "",
                  "p": f'{{"type":"system_notification","message":"quiet {n}"}}'}  # fmt: skip
        quiet.append(await reading.client.xadd(reading.part.events, fields))
    await reading.wait_for([*before, *quiet])
    after = await reading.publish(3, start=3)
    ids = [*before, *quiet, *after]
    await reading.wait_for(ids)
    await asyncio.sleep(1.5)  # past a read of the stream: nothing is handed on twice
    reading.check(ids)


async def test_entries_published_while_the_connection_is_cut_are_not_lost(
    reading: Reading,
) -> None:
    first = await reading.publish(5)
    await reading.wait_for(first)
    killed = await reading.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= 1, "the reader's channel connection was not found"
    during = await reading.publish(20, start=5)
    after = await reading.publish(5, start=25)
    ids = [*first, *during, *after]
    await reading.wait_for(ids)
    await asyncio.sleep(1.5)
    reading.check(ids)


async def test_garbage_on_the_channel_changes_nothing(reading: Reading) -> None:
    before = await reading.publish(2)
    for junk in (
        b"",
        b"garbage",
        b"1-1 job t 99 0 0\nshort",
        b"\xff\xfe 1 2\n",
        b"9-9 a b c d e\n",
    ):
        await reading.client.publish(reading.part.live, junk)
    after = await reading.publish(2, start=2)
    ids = [*before, *after]
    await reading.wait_for(ids)
    await asyncio.sleep(0.2)
    reading.check(ids)
    assert reading.reader.healthy


async def test_a_silent_connection_is_cut_and_nothing_is_lost(
    reading: Reading, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops answering (``CLIENT PAUSE``) for longer than three of the reader's
    intervals: the reader gives up on that connection, connects again, and reads what was
    published meanwhile from the stream."""
    first = await reading.publish(2)
    await reading.wait_for(first)
    await reading.client.execute_command("CLIENT", "PAUSE", 4500, "ALL")
    during = await reading.publish(3, start=2)  # waits out the pause
    after = await reading.publish(2, start=5)
    ids = [*first, *during, *after]
    await reading.wait_for(ids)
    await asyncio.sleep(1.5)
    reading.check(ids)
    assert "no answer on the live channels' connection" in caplog.text


async def test_a_read_of_the_streams_goes_to_the_end_however_far_behind(
    redis_server: Any,
) -> None:
    """After a long cut the stream holds more than many batches: one read of the streams
    hands on all of it, so that no channel message can move the last id past entries not
    read yet."""
    settings = Settings(_env_file=None, redis_url=redis_server.url, replica_wait_ms=0)
    client = bus.async_client(settings)
    try:
        await client.flushall()
        reading = Reading(client, settings)
        reader = PartitionReader(client, reading.on_events, reading.space, cluster=False, batch=5)
        reader.add(reading.index)
        await reader.start_pending({reading.index})  # from the stream's newest entry
        backlog = await reading.publish(700)  # 140 batches; nobody reads the channel
        await reader.sweep()
        reading.check(backlog)
    finally:
        await client.aclose()
