"""What a new connection is owed: the replay after ``lastEventId``, or offline delivery.

Both read the user's inbox (terminal events of their jobs) and the broadcast stream; the
entries carry the ids of the event stream, so the two merge into one ordered history.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from notifier.contract import keys
from notifier.contract.events import StreamEvent, now_ms, parse_event_id
from notifier.core.bus import stream_events, text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Replay:
    recovered: bool
    events: list[StreamEvent] = field(default_factory=list)


class Recovery:
    def __init__(self, client: aioredis.Redis, *, retention_seconds: int, inbox_max: int) -> None:
        self._redis = client
        self._retention_ms = retention_seconds * 1000
        self._cap = inbox_max

    def _floor(self) -> str:
        return f"{max(0, now_ms() - self._retention_ms)}-0"

    async def after(self, user_id: str, last_event_id: str) -> Replay:
        """Everything addressed to the user after ``last_event_id``; ``recovered`` only when
        the id is the user's, inside retention, and nothing after it has been trimmed."""
        if not await self._resumable(user_id, last_event_id):
            return Replay(recovered=False)
        return Replay(recovered=True, events=await self._history(user_id, last_event_id))

    async def offline(self, user_id: str, since: str | None) -> list[StreamEvent]:
        """What reached the user's inbox after ``since`` (or in the whole retention window)."""
        start = since if since and _newer(since, self._floor()) else self._floor()
        return await self._history(user_id, start)

    async def _history(self, user_id: str, after: str) -> list[StreamEvent]:
        start = max(after, self._floor(), key=parse_event_id)
        inbox = await self._redis.xrange(keys.user_inbox(user_id), min=f"({start}", count=self._cap)
        shared = await self._redis.xrange(keys.BROADCASTS, min=f"({start}", count=self._cap)
        mine = stream_events(inbox)
        everyone = (event for event in stream_events(shared) if event.route == "all")
        return list(heapq.merge(mine, everyone, key=lambda e: e.key))

    async def _resumable(self, user_id: str, last_event_id: str) -> bool:
        try:
            last = parse_event_id(last_event_id)
        except ValueError:
            return False
        if last[0] < now_ms() - self._retention_ms or last[0] > now_ms() + 60_000:
            return False
        if not await self._belongs(user_id, last_event_id):
            return False
        for stream in (keys.user_inbox(user_id), keys.BROADCASTS):
            if await self._redis.xlen(stream) >= self._cap:
                first = await self._redis.xrange(stream, count=1)
                if first and parse_event_id(text(first[0][0])) > last:
                    return False  # trimmed past the client's id: a gap we cannot fill
        return True

    async def _belongs(self, user_id: str, event_id: str) -> bool:
        for stream in (keys.EVENTS, keys.user_inbox(user_id), keys.BROADCASTS):
            found = await self._redis.xrange(stream, min=event_id, max=event_id)
            for event in stream_events(found):
                return event.user_id == user_id or event.route in ("all", "channel")
        return False


def _newer(a: str, b: str) -> bool:
    return parse_event_id(a) > parse_event_id(b)
