"""The Redis Streams event bus: one atomic publish script, and the partition readers.

Publishing appends the event to its partition's event stream (``keys.Partition.events``)
and, in the same Lua script, updates the job's state, the owner's job list, the owner's
inbox and the job's own history, so that a snapshot, a replay and a live read never
disagree. Every key of one call carries the owner's partition tag: one hash slot, so the
script runs on Redis Cluster. Ordering rules live here too: a terminal state is final,
and events of an older attempt or step of a task are dropped. A job holds a lease in its
partition's running set while it runs; a ``retrying`` job waits in the queue (its retry
countdown may outlast any lease), so, like a ``queued`` one, it holds none.

Broadcasts and channel messages are appended to every partition (they are rare), so
that each user's feed — their job events and the broadcasts — is one id space and
``lastEventId`` recovery stays exact.

Terminal events are confirmed by one replica (``WAIT 1``, bounded by
``JOBCAST_REPLICA_WAIT_MS``, on the connection that ran the script; skipped where the
master has no replica) before a worker counts them published: an unconfirmed one raises
:class:`NotConfirmed` and is published again (the script makes that a no-op when the
first write survived).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from notifier.contract import keys, scripts
from notifier.contract.events import (
    JOB_STATUS_UPDATE,
    PROCESSING,
    Event,
    StreamEvent,
    dumps,
    now_ms,
    output_head,
)
from notifier.contract.keys import Partition, keyspace
from notifier.contract.settings import Settings

log = logging.getLogger(__name__)

#: A process's Redis client: one server (or Sentinel's master), or a Redis Cluster.
SyncRedis = redis.Redis | RedisCluster
AsyncRedis = aioredis.Redis | AsyncRedisCluster

#: The publish script (``lua/publish.lua``: its KEYS and ARGV are those of _script_keys
#: and _script_args, and the live channel).
PUBLISH_LUA = scripts.source("live", "publish")
#: The hot path's script: one progress step of a running job (``lua/progress.lua``).
PROGRESS_LUA = scripts.source("live", "progress")
#: The live output's append script (``lua/output.lua``).
OUTPUT_LUA = scripts.source("live", "output")
#: Routes whose events go to every partition.
FANOUT_ROUTES = frozenset({"all", "channel"})


class NotConfirmed(redis.RedisError):
    """A terminal event was written but no replica acknowledged it in time: publish it
    again (a no-op when the write survived)."""


class PartitionMismatch(RuntimeError):
    """The data in Redis was written with another ``JOBCAST_PARTITIONS``."""


def _script_keys(part: Partition, event: Event) -> list[str]:
    job, user = event.job_id, event.user_id
    return [
        part.events,
        part.job(job),
        part.user_jobs(user),
        part.user_inbox(user),
        part.broadcasts,
        part.job_events(job),
        part.running,
        part.job_totals,
        part.job_output(job),
    ]


def _script_args(event: Event, settings: Settings) -> list[Any]:
    return [
        event.route,
        event.type,
        event.user_id,
        event.job_id,
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


def live_channel(part: Partition, settings: Settings) -> str:
    """The channel the scripts announce ``part``'s new entries on (``lua/live.lua``); ''
    on Redis Cluster, where readers block on ``XREAD`` per partition instead."""
    return "" if settings.redis_cluster else part.live


def is_step(event: Event) -> bool:
    """A progress step of a running job (the hot path, ``lua/progress.lua``): not its first
    ``processing`` update, which is a change of state."""
    return event.type == JOB_STATUS_UPDATE and event.state == PROCESSING and event.seq > 1


def records_owner(event: Event) -> bool:
    """Whether publishing ``event`` (re)writes its job's owner index: every change of state
    does (the first event of a job is one); a progress step, the hot path, does not."""
    return bool(event.job_id) and not is_step(event)


@dataclass(frozen=True, slots=True)
class Call:
    """One script call that publishes an event: the script's source, its KEYS and ARGV."""

    source: str
    keys: list[str]
    args: list[Any]


def full_call(part: Partition, event: Event, settings: Settings) -> Call:
    """``event`` through the full publish script (``lua/publish.lua``) on ``part``."""
    args = _script_args(event, settings)
    args.append(live_channel(part, settings))
    return Call(PUBLISH_LUA, _script_keys(part, event), args)


def publish_call(part: Partition, event: Event, settings: Settings) -> Call:
    """The first call that publishes ``event`` (not a broadcast) on its owner's partition
    ``part``: the hot path's script for a step, else the full one. When the hot path
    answers ``0`` (see :func:`declined`), publish it with :func:`full_call`."""
    if not (event.job_id and is_step(event)):
        return full_call(part, event, settings)
    job = event.job_id
    return Call(
        PROGRESS_LUA,
        [part.events, part.job(job), part.job_events(job), part.job_totals],
        [
            event.user_id,
            job,
            dumps(event.message),
            event.attempt,
            event.seq,
            now_ms(),
            settings.stream_max_events,
            int(settings.job_lease_seconds * 1000),
            live_channel(part, settings),
        ],
    )


def declined(raw: Any) -> bool:
    """Whether the hot path's script left the event to the full one (it answered 0: the
    job is not known to be running under this owner, or its lease is due)."""
    return isinstance(raw, int) and raw == 0


def text(raw: Any) -> str:
    """A reply value as ``str`` (clients decode responses; this also satisfies the types)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def stream_events(entries: Any, partition: int = 0) -> list[StreamEvent]:
    """``XRANGE``/``XREAD`` entries (of ``partition``'s streams) as :class:`StreamEvent`."""
    return [
        StreamEvent.from_entry(text(eid), dict(fields or {}), partition)
        for eid, fields in entries or ()
    ]


def _result(raw: Any) -> str | None:
    """The publish script's reply: the new event's id, or None when it dropped the event."""
    return None if raw is None else text(raw)


_SCRIPTS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def bound_script(client: Any, source: str) -> Any:
    """The script ``source`` bound to ``client``, made once per client (not per event)."""
    scripts_of = _SCRIPTS.get(client)
    if scripts_of is None:
        scripts_of = _SCRIPTS[client] = {}
    script = scripts_of.get(source)
    if script is None:
        script = scripts_of[source] = client.register_script(source)
    return script


def _publish_script(client: Any) -> Any:
    """The publish script bound to ``client``."""
    return bound_script(client, PUBLISH_LUA)


# --- replicas


#: Per node client: (checked at, replicas connected to it).
_REPLICAS: weakref.WeakKeyDictionary[Any, tuple[float, int]] = weakref.WeakKeyDictionary()
_REPLICAS_TTL = 5.0


def _known_replicas(node: Any) -> int | None:
    cached = _REPLICAS.get(node)
    if cached is None or time.monotonic() - cached[0] > _REPLICAS_TTL:
        return None
    return cached[1]


def _note_replicas(node: Any, info: dict[str, Any]) -> int:
    count = int(info.get("connected_slaves", 0))
    _REPLICAS[node] = (time.monotonic(), count)
    return count


def _check_ack(acked: Any, event: Event, wait_ms: int) -> None:
    if int(acked) < 1:
        raise NotConfirmed(
            f"terminal event of job {event.job_id} not acknowledged by a replica within "
            f"{wait_ms} ms"
        )


def _confirm_sync(
    client: SyncRedis, part: Partition, event: Event, settings: Settings
) -> str | None:
    """The publish of a terminal event and ``WAIT 1`` on the same connection."""
    node: redis.Redis
    if isinstance(client, RedisCluster):
        cluster_node = client.get_node_from_key(part.events)  # type: ignore[no-untyped-call]
        node = client.get_redis_connection(cluster_node)
    else:
        node = client
    replicas = _known_replicas(node)
    if replicas is None:
        replicas = _note_replicas(node, node.info("replication"))
    call = full_call(part, event, settings)
    if replicas == 0:
        return _result(_publish_script(node)(keys=call.keys, args=call.args))
    with node.pipeline(transaction=False) as pipe:
        pipe.eval(PUBLISH_LUA, len(call.keys), *call.keys, *call.args)
        pipe.execute_command("WAIT", 1, settings.replica_wait_ms)  # type: ignore[no-untyped-call]
        raw, acked = pipe.execute()
    _check_ack(acked, event, settings.replica_wait_ms)
    return _result(raw)


async def _confirm(
    client: AsyncRedis, part: Partition, event: Event, settings: Settings
) -> str | None:
    call = full_call(part, event, settings)
    if isinstance(client, AsyncRedisCluster):
        # redis-py's asyncio cluster client has no per-node client to pin a connection
        # for WAIT; the notifier's own terminal events (worker_lost) go unconfirmed.
        return _result(await _publish_script(client)(keys=call.keys, args=call.args))
    replicas = _known_replicas(client)
    if replicas is None:
        replicas = _note_replicas(client, await client.info("replication"))
    if replicas == 0:
        return _result(await _publish_script(client)(keys=call.keys, args=call.args))
    async with client.pipeline(transaction=False) as pipe:
        pipe.eval(PUBLISH_LUA, len(call.keys), *call.keys, *call.args)
        pipe.execute_command("WAIT", 1, settings.replica_wait_ms)
        raw, acked = await pipe.execute()
    _check_ack(acked, event, settings.replica_wait_ms)
    return _result(raw)


# --- publishing


def fan_out_sync(
    client: SyncRedis, event: Event, settings: Settings, done: dict[int, str | None]
) -> dict[int, str | None]:
    """Append a broadcast or channel message to every partition; ``done`` (kept by a caller
    that retries) collects each partition's id, so a retry after a failure skips the
    partitions already written. Returns ``done``."""
    script = _publish_script(client)
    args = _script_args(event, settings)  # the same in every partition: encoded once
    for part in keyspace(settings.partitions).partitions:
        if part.index not in done:
            call_args = [*args, live_channel(part, settings)]
            done[part.index] = _result(script(keys=_script_keys(part, event), args=call_args))
    return done


def publish_sync(client: SyncRedis, event: Event, settings: Settings) -> str | None:
    """Append ``event`` (blocking client, for Celery processes). Returns its id, or None when
    the ordering rules dropped it (a late event of a finished job, a stale step).

    A broadcast or channel message goes to every partition (:func:`fan_out_sync`), each
    copy with its partition's id; the id returned is the one in the feed of its sender
    (``event.user_id``: the admin who posted it; partition 0's when unset)."""
    space = keyspace(settings.partitions)
    if event.route in FANOUT_ROUTES:
        return fan_out_sync(client, event, settings, {})[space.index_of(event.user_id)]
    part = space.of_user(event.user_id)
    if records_owner(event):
        client.set(keys.job_owner(event.job_id), event.user_id, ex=settings.retention_seconds)
    if event.terminal and settings.replica_wait_ms > 0:
        return _confirm_sync(client, part, event, settings)
    call = publish_call(part, event, settings)
    raw = bound_script(client, call.source)(keys=call.keys, args=call.args)
    if declined(raw):
        call = full_call(part, event, settings)
        raw = bound_script(client, call.source)(keys=call.keys, args=call.args)
    return _result(raw)


async def _fan_out(client: AsyncRedis, event: Event, settings: Settings) -> list[Any]:
    """A broadcast or channel message appended to every partition: on one Redis in one
    round trip (a pipeline: the last partition's copy is not 64 round trips behind the
    first's), on a cluster one call after the other (each to its partition's master)."""
    script = _publish_script(client)
    args = _script_args(event, settings)  # the same in every partition: encoded once
    calls = [
        (_script_keys(part, event), [*args, live_channel(part, settings)])
        for part in keyspace(settings.partitions).partitions
    ]
    if isinstance(client, AsyncRedisCluster):
        return [await script(keys=k, args=a) for k, a in calls]
    async with client.pipeline(transaction=False) as pipe:
        for k, a in calls:
            await script(keys=k, args=a, client=pipe)
        return list(await pipe.execute())


async def publish(client: AsyncRedis, event: Event, settings: Settings) -> str | None:
    """Append ``event`` (asyncio client). Same contract as :func:`publish_sync`."""
    space = keyspace(settings.partitions)
    script = _publish_script(client)
    if event.route in FANOUT_ROUTES:
        return _result((await _fan_out(client, event, settings))[space.index_of(event.user_id)])
    part = space.of_user(event.user_id)
    if records_owner(event):
        await client.set(keys.job_owner(event.job_id), event.user_id, ex=settings.retention_seconds)
    if event.terminal and settings.replica_wait_ms > 0:
        return await _confirm(client, part, event, settings)
    call = publish_call(part, event, settings)
    raw = await bound_script(client, call.source)(keys=call.keys, args=call.args)
    if declined(raw):
        call = full_call(part, event, settings)
        raw = await script(keys=call.keys, args=call.args)
    return _result(raw)


# --- live output


@dataclass(frozen=True, slots=True)
class Appended:
    """What :func:`append_output_sync` did. ``event_id`` is the ``job_output`` message's id
    ('' when nothing was appended); ``offset`` and ``length`` are the output's length in code
    points before and after; ``truncated``: the output is full, later text is dropped;
    ``finished``: the job has ended (or is unknown), nothing more can be appended."""

    event_id: str
    offset: int
    length: int
    truncated: bool = False
    finished: bool = False

    @property
    def closed(self) -> bool:
        """Nothing appended from now on would be kept."""
        return self.truncated or self.finished


def append_output_sync(
    client: SyncRedis, job_id: str, user_id: str, chunk: str, settings: Settings
) -> Appended:
    """Append ``chunk`` to the output of ``user_id``'s job ``job_id`` and publish it as one
    ``job_output`` message (one script call, keys of the owner's partition). Text past
    ``JOBCAST_OUTPUT_MAX_BYTES`` is dropped, cut at a character boundary; nothing is
    appended after the job's terminal event. Raises ``redis.RedisError`` like any write."""
    part = keyspace(settings.partitions).of_user(user_id)
    # Encoded here, once: a lone surrogate becomes '?' (one code point, as in the count).
    encoded = chunk.encode("utf-8", "replace")
    raw = bound_script(client, OUTPUT_LUA)(
        keys=[part.events, part.job(job_id), part.job_output(job_id)],
        args=[
            user_id,
            output_head(job_id, now_ms()),
            encoded,
            len(chunk),
            job_id,
            settings.stream_max_events,
            settings.output_max_bytes,
            settings.retention_seconds,
            live_channel(part, settings),
        ],
    )
    if not raw:
        return Appended("", 0, 0, finished=True)
    event_id, offset, length, truncated = raw
    return Appended(text(event_id), int(offset), int(length), truncated=bool(int(truncated)))


# --- clients


def connection_kwargs() -> dict[str, Any]:
    # redis-py 8 defaults to a 5 s socket timeout; blocking reads stay well below it.
    return {
        "decode_responses": True,
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 15,
    }


#: How clients talk to the sentinels themselves (short: a dead sentinel is skipped).
_SENTINEL_KWARGS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


def _url_options(url: str) -> dict[str, Any]:
    """What ``REDIS_URL`` still says under Sentinel: the database and the credentials."""
    parts = urlsplit(url)
    options: dict[str, Any] = {"db": int(parts.path.strip("/") or 0)}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    return options


def async_client(settings: Settings) -> AsyncRedis:
    """One client per process. On one Redis its pool *waits* for a free connection when
    all are busy (redis-py's default pool fails at once, which a burst of connecting
    clients hits). ``JOBCAST_REDIS_CLUSTER``: redis-py's cluster client, which follows the
    cluster's slots and failovers; ``JOBCAST_REDIS_SENTINELS``: the master the sentinels
    name, followed across failovers."""
    kwargs = connection_kwargs()
    if settings.redis_cluster:
        return AsyncRedisCluster.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections * 4, **kwargs
        )
    if settings.redis_sentinels:
        sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses(), sentinel_kwargs=_SENTINEL_KWARGS, **kwargs
        )
        # Sentinel's pool opens connections as needed (no waiting pool of a fixed size).
        master = sentinel.master_for(
            str(settings.redis_sentinel_master), **_url_options(settings.redis_url)
        )
        return cast(aioredis.Redis, master)
    decode = kwargs.pop("decode_responses")
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=10,
        decode_responses=decode,
        **kwargs,
    )
    return aioredis.Redis(connection_pool=pool)


def sync_client(settings: Settings) -> SyncRedis:
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **connection_kwargs())
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses(), sentinel_kwargs=_SENTINEL_KWARGS, **connection_kwargs()
        )
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            str(settings.redis_sentinel_master), **_url_options(settings.redis_url)
        )
        return cast(redis.Redis, master)
    return redis.Redis.from_url(settings.redis_url, **connection_kwargs())


# --- the partition count in use


def _mismatch(recorded: Any, configured: int) -> PartitionMismatch:
    return PartitionMismatch(
        f"Redis holds data written with JOBCAST_PARTITIONS={text(recorded)}, but this process "
        f"has JOBCAST_PARTITIONS={configured}: set it back to {text(recorded)}, or stop every "
        f"jobcast process and run `jobcast migrate-partitions --to {configured}` "
        "(docs/operations.md, 'Changing the partition count')"
    )


def check_partitions_sync(client: SyncRedis, settings: Settings) -> None:
    """Record the partition count on first use; raise :class:`PartitionMismatch` when Redis
    holds another."""
    client.hsetnx(keys.PARTITIONS, "count", settings.partitions)
    recorded = client.hget(keys.PARTITIONS, "count")
    if recorded is not None and int(text(recorded)) != settings.partitions:
        raise _mismatch(recorded, settings.partitions)


async def check_partitions(client: AsyncRedis, settings: Settings) -> None:
    """Asyncio :func:`check_partitions_sync`."""
    await client.hsetnx(keys.PARTITIONS, "count", settings.partitions)
    recorded = await client.hget(keys.PARTITIONS, "count")
    if recorded is not None and int(text(recorded)) != settings.partitions:
        raise _mismatch(recorded, settings.partitions)


async def verify_partitions(client: AsyncRedis, settings: Settings) -> None:
    """At start-up: :func:`check_partitions`, unless Redis does not answer yet (then the
    first process to reach it records the count)."""
    try:
        await check_partitions(client, settings)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        log.warning("partition count not checked: Redis unavailable", extra={"error": str(exc)})


async def feeds_since(client: AsyncRedis) -> int:
    """When the partition feeds last started afresh (``jobcast migrate-partitions``), in ms;
    0 when they never did or Redis does not answer."""
    try:
        raw = await client.hget(keys.PARTITIONS, "migratedAt")
    except (redis.RedisError, OSError):
        return 0
    return int(text(raw)) if raw else 0
