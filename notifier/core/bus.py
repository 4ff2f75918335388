"""The Redis Streams event bus: one atomic publish script, and a fan-out reader.

Publishing appends the event to the event stream and, in the same Lua script, updates the
job's state, the owner's job list, the owner's inbox and the job's own history, so that a
snapshot, a replay and a live read never disagree. Ordering rules live here too: a terminal
state is final, and events of an older attempt or step of a task are dropped. A job holds a
lease in the running set while it runs; a ``retrying`` job waits in the queue (its retry
countdown may outlast any lease), so, like a ``queued`` one, it holds none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from notifier.contract import keys, scripts
from notifier.contract.events import Event, StreamEvent, dumps, now_ms
from notifier.contract.settings import Settings

log = logging.getLogger(__name__)

#: The publish script (``lua/publish.lua``: its KEYS and ARGV are those of _script_call).
PUBLISH_LUA = scripts.source("publish")


def _script_call(event: Event, settings: Settings) -> tuple[list[str], list[Any]]:
    user = event.user_id
    job = event.job_id
    script_keys = [
        keys.EVENTS,
        keys.job(job),
        keys.user_jobs(user),
        keys.user_inbox(user),
        keys.BROADCASTS,
        keys.job_events(job),
        keys.RUNNING,
    ]
    args = [
        event.route,
        event.type,
        user,
        job,
        event.channel,
        dumps(event.message),
        event.state,
        event.attempt,
        event.seq,
        dumps(event.snapshot),
        now_ms(),
        settings.retention_seconds,
        settings.stream_max_events,
        settings.inbox_max_events,
        int(settings.job_lease_seconds * 1000),
        "1" if "progress" in event.snapshot else "0",
    ]
    return script_keys, args


def text(raw: Any) -> str:
    """A reply value as ``str`` (clients decode responses; this also satisfies the types)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def stream_events(entries: Any) -> list[StreamEvent]:
    """``XRANGE``/``XREAD`` entries as :class:`StreamEvent` objects."""
    return [StreamEvent.from_entry(text(eid), dict(fields or {})) for eid, fields in entries or ()]


def _result(raw: Any) -> str | None:
    """The publish script's reply: the new event's id, or None when it dropped the event."""
    return None if raw is None else text(raw)


_SCRIPTS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _publish_script(client: Any) -> Any:
    """The publish script bound to ``client``, made once per client (not per event)."""
    script = _SCRIPTS.get(client)
    if script is None:
        script = _SCRIPTS[client] = client.register_script(PUBLISH_LUA)
    return script


def publish_sync(client: redis.Redis, event: Event, settings: Settings) -> str | None:
    """Append ``event`` (blocking client, for Celery processes). Returns its id, or None when
    the ordering rules dropped it (a late event of a finished job, a stale step)."""
    script_keys, args = _script_call(event, settings)
    return _result(_publish_script(client)(keys=script_keys, args=args))


async def publish(client: aioredis.Redis, event: Event, settings: Settings) -> str | None:
    """Append ``event`` (asyncio client). Same contract as :func:`publish_sync`."""
    script_keys, args = _script_call(event, settings)
    raw = await _publish_script(client)(keys=script_keys, args=args)
    return _result(raw)


def connection_kwargs() -> dict[str, Any]:
    # redis-py 8 defaults to a 5 s socket timeout; blocking reads stay well below it.
    return {
        "decode_responses": True,
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 15,
    }


def async_client(settings: Settings) -> aioredis.Redis:
    """One client per process. Its pool *waits* for a free connection when all are busy
    (redis-py's default pool fails at once, which a burst of connecting clients hits)."""
    kwargs = connection_kwargs()
    decode = kwargs.pop("decode_responses")
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=10,
        decode_responses=decode,
        **kwargs,
    )
    return aioredis.Redis(connection_pool=pool)


def sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, **connection_kwargs())


Handler = Callable[[Sequence[StreamEvent]], Awaitable[None]]


class StreamReader:
    """Reads the whole event stream from this instance's own last id and hands batches on.

    Every notifier instance runs one: that is the fan-out. On a Redis error it backs off
    (capped, with jitter), logs it, and resumes from the last id it handled.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        handler: Handler,
        *,
        batch: int = 500,
        block_ms: int = 1000,
        max_backoff: float = 5.0,
    ) -> None:
        self._client = client
        self._handler = handler
        self._batch = batch
        self._block_ms = block_ms
        self._max_backoff = max_backoff
        self.last_id: str | None = None
        self.connected = False
        self._last_ok = 0.0

    @property
    def healthy(self) -> bool:
        """Connected, and a read returned recently (the loop is alive)."""
        return self.connected and time.monotonic() - self._last_ok < self._block_ms / 1000 + 5

    async def lag(self, cap: int = 1000) -> int:
        """How many entries the stream holds after this reader's last id (at most ``cap``)."""
        if self.last_id is None:
            return 0
        newer = await self._client.xrange(keys.EVENTS, min=f"({self.last_id}", count=cap)
        return len(newer or ())

    async def _tail(self) -> str:
        newest = await self._client.xrevrange(keys.EVENTS, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                if self.last_id is None:
                    self.last_id = await self._tail()
                    log.info("event reader started", extra={"last_id": self.last_id})
                response = await self._client.xread(
                    {keys.EVENTS: self.last_id}, count=self._batch, block=self._block_ms
                )
                if not self.connected:
                    log.info("event reader connected", extra={"last_id": self.last_id})
                self.connected = True
                self._last_ok = time.monotonic()
                attempt = 0
                for stream_reply in response or ():
                    batch = stream_events(stream_reply[1])
                    if not batch:
                        continue
                    self.last_id = batch[-1].event_id
                    try:
                        await self._handler(batch)
                    except Exception:
                        log.exception("event handler failed", extra={"last_id": self.last_id})
            except asyncio.CancelledError:
                raise
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.connected = False
                attempt += 1
                delay = min(self._max_backoff, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning(
                    "event reader lost Redis; retrying",
                    extra={"error": str(exc), "retry_in_s": round(delay, 2), "attempt": attempt},
                )
                await asyncio.sleep(delay)
