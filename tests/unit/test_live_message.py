"""The live channel's message (``lua/live.lua``) carries exactly the stream entry the script
appended, whatever bytes the names hold; ``StreamEvent.from_live`` reads it back, and
refuses what is not one. Against a real Redis (the encoder is the Lua script)."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.contract import events
from notifier.contract.events import StreamEvent
from notifier.contract.keys import keyspace
from notifier.contract.settings import Settings
from notifier.core import bus

NAMES = ["plain", "émile 日本", "with space", "new\nline", "3 4 5\n", ""]


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, replica_wait_ms=0)


def announced(redis_client: Any, settings: Settings, event: events.Event) -> list[StreamEvent]:
    """Publish ``event`` and return what its partition's channel carried, decoded."""
    space = keyspace(settings.partitions)
    index = space.index_of(event.user_id)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(space.partitions[index].live)
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        assert bus.publish_sync(redis_client, event, settings) is not None
        message = pubsub.get_message(timeout=5)
    finally:
        pubsub.close()
    assert message is not None and message["type"] == "message"
    data = message["data"]  # decoded by the client: the same bytes as UTF-8
    return [StreamEvent.from_live(data.encode() if isinstance(data, str) else data, index)]


def entry(redis_client: Any, settings: Settings, event: StreamEvent) -> StreamEvent:
    part = keyspace(settings.partitions).partitions[event.partition]
    [(eid, fields)] = redis_client.xrange(part.events, min=event.event_id, max=event.event_id)
    return StreamEvent.from_entry(eid, fields, event.partition)


@pytest.mark.parametrize("name", NAMES)
def test_the_live_message_is_the_stream_entry(
    redis_client: Any, settings: Settings, name: str
) -> None:
    redis_client.flushall()
    user = f"u-{name}" if name else "u"
    for event in (
        events.status_update(f"job-{name}", user, events.QUEUED),
        events.job_completed(f"job-{name}", user, {"text": name}),
        events.channel_message("notifications", f"note {name}"),
    ):
        [live] = announced(redis_client, settings, event)
        assert live == entry(redis_client, settings, live)
        assert live.message()["type"] == event.type


def test_a_step_of_the_hot_path_is_announced_too(redis_client: Any, settings: Settings) -> None:
    redis_client.flushall()
    user, job = "émile", "job 7"
    for seq, state in enumerate((events.QUEUED, events.STARTED, events.PROCESSING)):
        bus.publish_sync(redis_client, events.status_update(job, user, state, seq=seq), settings)
    step = events.status_update(job, user, events.PROCESSING, progress=50, seq=5)
    [live] = announced(redis_client, settings, step)
    assert live == entry(redis_client, settings, live)
    assert live.message()["data"]["progress"] == 50


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"1-1 job t 99 0 0\nshort", b"1-1 a b c d e\n", b"1-1 a b 1 1\nxy"],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        StreamEvent.from_live(data)
