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

from notifier.contract import keys
from notifier.contract.events import Event, StreamEvent, dumps, now_ms
from notifier.contract.settings import Settings

log = logging.getLogger(__name__)

# KEYS: 1 events, 2 job hash, 3 user's jobs, 4 user's inbox, 5 broadcasts, 6 job's events,
#       7 running jobs
# ARGV: 1 route, 2 type, 3 user, 4 job, 5 channel, 6 payload, 7 state, 8 attempt, 9 seq,
#       10 snapshot, 11 now ms, 12 retention s, 13 stream maxlen, 14 inbox maxlen, 15 lease ms,
#       16 '1' when the snapshot has a progress
PUBLISH_LUA = """
local route, typ, user, job, channel, payload, state =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local attempt, seq, retention = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[12])
local terminal = state == 'completed' or state == 'failed' or state == 'cancelled'
local cur = {}
if job ~= '' then
  cur = redis.call('HMGET', KEYS[2], 'owner', 'terminal', 'attempt', 'seq', 'state', 'lease')
  if cur[2] then return false end
  if cur[1] and cur[1] ~= user then return redis.error_reply('ERR job belongs to another user') end
  if state == 'queued' and cur[5] then return false end
  if seq > 0 and not terminal then
    local ca, cs = tonumber(cur[3]) or -1, tonumber(cur[4]) or 0
    if attempt < ca or (attempt == ca and seq <= cs) then return false end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[13], '*',
  'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
if job ~= '' then
  local now = ARGV[11]
  -- A snapshot without progress keeps the last one; one with progress is stored as is.
  local snapshot = ARGV[10]
  if ARGV[16] ~= '1' then
    local old = redis.call('HGET', KEYS[2], 'snapshot')
    if old then
      local o = cjson.decode(old)
      if o['progress'] ~= nil then
        local snap = cjson.decode(snapshot)
        snap['progress'] = o['progress']
        snapshot = cjson.encode(snap)
      end
    end
  end
  local fields = {'owner', user, 'state', state, 'snapshot', snapshot,
    'eventId', id, 'updatedAt', now}
  if seq > 0 then
    fields[#fields + 1] = 'attempt'; fields[#fields + 1] = attempt
    fields[#fields + 1] = 'seq'; fields[#fields + 1] = seq
  end
  if terminal then fields[#fields + 1] = 'terminal'; fields[#fields + 1] = payload end
  -- A running job's steps renew its lease once half of it has passed (and on every change
  -- of state), not on every progress step: the worker's publisher renews it too.
  local transition = state ~= 'processing' or cur[5] ~= 'processing'
  local lease_ms = tonumber(ARGV[15])
  local renew = not terminal and state ~= 'retrying' and state ~= 'queued'
    and (transition or (tonumber(cur[6]) or 0) - tonumber(now) < lease_ms / 2)
  if renew then
    fields[#fields + 1] = 'lease'; fields[#fields + 1] = tonumber(now) + lease_ms
  end
  local created = not cur[1]
  if created then fields[#fields + 1] = 'createdAt'; fields[#fields + 1] = now end
  redis.call('HSET', KEYS[2], unpack(fields))
  redis.pcall('XADD', KEYS[6], 'MAXLEN', '~', 1000, id,
    'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
  -- A progress step changes no membership and no expiry: the hot path stays short.
  if created then
    redis.call('ZADD', KEYS[3], 'NX', now, job)
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1001)
    redis.call('EXPIRE', KEYS[3], retention)
  end
  if transition then
    redis.call('EXPIRE', KEYS[2], retention)
    redis.call('EXPIRE', KEYS[6], retention)
  end
  if terminal or state == 'retrying' then
    redis.call('ZREM', KEYS[7], job)
  elseif renew then
    redis.call('ZADD', KEYS[7], tonumber(now) + lease_ms, job)
  end
  if terminal then
    redis.pcall('XADD', KEYS[4], 'MAXLEN', ARGV[14], id,
      'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
    redis.call('EXPIRE', KEYS[4], retention)
  end
else
  redis.pcall('XADD', KEYS[5], 'MAXLEN', ARGV[14], id,
    'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
  redis.call('EXPIRE', KEYS[5], retention)
end
return id
"""


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
