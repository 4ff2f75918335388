"""What a new connection is owed: the replay after ``lastEventId``, or offline delivery.

Both read the user's inbox (terminal events of their jobs) and the broadcast stream of the
user's partition; the entries carry the ids of that partition's event stream, so the two
merge into one ordered history (every broadcast is in every partition, each copy with its
partition's id: a user's feed is one id space).

The broadcast stream also holds the channel messages. A user is replayed a channel message
only if they held a subscription to its channel when it was published: when a notifier
dispatches a channel message, it records its id for every user with a connection
subscribed to the channel (:func:`remember_channel_event`, in
``Partition.user_channel_events``), and the replay keeps exactly the recorded ones. The
``job_error`` messages an ``ops`` subscriber gets of other users' jobs are recorded there
too, so that their ids are valid ``lastEventId`` values for that user; they are not
replayed to them (they live in their owners' inboxes).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from notifier.contract.events import StreamEvent, now_ms, parse_event_id
from notifier.contract.keys import Keyspace, Partition
from notifier.core.bus import AsyncRedis, stream_events, text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Replay:
    recovered: bool
    events: list[StreamEvent] = field(default_factory=list)


class Recovery:
    def __init__(
        self,
        client: AsyncRedis,
        space: Keyspace,
        *,
        retention_seconds: int,
        inbox_max: int,
        feeds_since_ms: int = 0,
    ) -> None:
        self._redis = client
        self._space = space
        #: When the feeds started (``jobcast migrate-partitions``): no replay from before.
        self._since_ms = feeds_since_ms
        self._retention_ms = retention_seconds * 1000
        self._cap = inbox_max

    def _floor(self) -> str:
        return f"{max(0, now_ms() - self._retention_ms)}-0"

    async def after(self, user_id: str, last_event_id: str) -> Replay:
        """Everything addressed to the user after ``last_event_id``; ``recovered`` only when
        the id is the user's, inside retention, and nothing after it has been trimmed."""
        part = self._space.of_user(user_id)
        if not await self._resumable(part, user_id, last_event_id):
            return Replay(recovered=False)
        return Replay(recovered=True, events=await self._history(part, user_id, last_event_id))

    async def offline(self, user_id: str, since: str | None) -> list[StreamEvent]:
        """What reached the user's inbox after ``since`` (or in the whole retention window)."""
        start = since if since and _newer(since, self._floor()) else self._floor()
        return await self._history(self._space.of_user(user_id), user_id, start)

    async def _history(self, part: Partition, user_id: str, after: str) -> list[StreamEvent]:
        start = max(after, self._floor(), key=parse_event_id)
        inbox = await self._redis.xrange(part.user_inbox(user_id), min=f"({start}", count=self._cap)
        shared = stream_events(
            await self._redis.xrange(part.broadcasts, min=f"({start}", count=self._cap),
            part.index,
        )
        held: set[str] = set()
        if any(event.route == "channel" for event in shared):
            held = await self._held(part, user_id, parse_event_id(start)[0])
        mine = stream_events(inbox, part.index)
        everyone = (
            event
            for event in shared
            if event.route == "all" or (event.route == "channel" and event.event_id in held)
        )
        return list(heapq.merge(mine, everyone, key=lambda e: e.key))

    async def _held(self, part: Partition, user_id: str, since_ms: int) -> set[str]:
        """Ids of the channel messages the user held a subscription for, from ``since_ms``."""
        ids = await self._redis.zrangebyscore(part.user_channel_events(user_id), since_ms, "+inf")
        return {text(event_id) for event_id in ids}

    async def _resumable(self, part: Partition, user_id: str, last_event_id: str) -> bool:
        try:
            last = parse_event_id(last_event_id)
        except ValueError:
            return False
        if last[0] < max(now_ms() - self._retention_ms, self._since_ms):
            return False
        if last[0] > now_ms() + 60_000:
            return False
        if not await self._belongs(part, user_id, last_event_id):
            return False
        for stream in (part.user_inbox(user_id), part.broadcasts):
            if await self._redis.xlen(stream) >= self._cap:
                first = await self._redis.xrange(stream, count=1)
                if first and parse_event_id(text(first[0][0])) > last:
                    return False  # trimmed past the client's id: a gap we cannot fill
        return True

    async def _belongs(self, part: Partition, user_id: str, event_id: str) -> bool:
        """Whether ``event_id`` is an event of the user's feed still held by Redis (after a
        failover that lost it, it is not: the replay is then not ``recovered``)."""
        held = part.user_channel_events(user_id)
        if await self._redis.zscore(held, event_id) is not None:
            return True  # a channel message, or a foreign job_error seen through `ops`
        for stream in (part.events, part.user_inbox(user_id), part.broadcasts):
            found = await self._redis.xrange(stream, min=event_id, max=event_id)
            for event in stream_events(found):
                return event.route == "all" or (
                    event.route != "channel" and event.user_id == user_id
                )
        return False


async def remember_channel_event(
    client: AsyncRedis,
    space: Keyspace,
    event: StreamEvent,
    users: Iterable[str],
    *,
    retention_seconds: int,
    cap: int,
) -> None:
    """Record that ``users`` held ``event``'s channel when it was dispatched (kept for the
    retention window, at most ``cap`` per user, like the inbox)."""
    ms = event.key[0]
    floor = ms - retention_seconds * 1000
    async with client.pipeline(transaction=False) as pipe:
        for user in users:
            key = space.of_user(user).user_channel_events(user)
            pipe.zadd(key, {event.event_id: ms})
            pipe.zremrangebyscore(key, "-inf", f"({floor}")
            pipe.zremrangebyrank(key, 0, -(cap + 1))
            pipe.expire(key, retention_seconds)
        await pipe.execute()


def _newer(a: str, b: str) -> bool:
    return parse_event_id(a) > parse_event_id(b)
