"""The partition readers: each notifier reads only the partitions its connections need.

A partition is read while at least one of this instance's connections needs it (a user of
the partition is connected, a job of the partition is subscribed to, or an ``ops``
subscriber needs every ``job_error``); see :meth:`notifier.core.hub.Hub` for the counts.
A partition that starts being read begins at its stream's newest entry: what came before
is the new connection's replay (it waits for :meth:`PartitionReader.started` before
reading it, so nothing falls between the two).

On one Redis (or Sentinel's master) the partitions are read from their live channels
(:attr:`notifier.contract.keys.Partition.live`): the publishing scripts announce each
entry they append there, in the same step (``lua/live.lua``), so a steady flow of events
costs one pub/sub message each instead of a blocking ``XREAD`` over every partition
re-issued per event. The streams stay the source of truth: after each (re)subscription,
and once a second while connected, one ``XREAD`` from the last ids reads whatever the
channel did not bring, and an entry is handed on once, in id order, whichever way it came.

Redis Cluster refuses one ``XREAD`` over keys of two slots — even on one master — so on a
cluster each partition has a blocking read of its own (at most ``JOBCAST_PARTITIONS`` per
instance, never one per connection). On a Redis error a read backs off (capped, with
jitter), logs it, and resumes from the last id it handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from notifier.contract.events import StreamEvent, parse_event_id
from notifier.contract.keys import Keyspace
from notifier.core.bus import AsyncRedis, stream_events, text
from notifier.core.live_conn import LiveConnection, open_live_connection

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[StreamEvent]], Awaitable[None]]


def _backoff(owner: PartitionReader, attempt: int, exc: Exception) -> float:
    owner.connected = False
    delay = min(owner.max_backoff, 0.1 * 2.0**attempt) * (0.5 + random.random() / 2)
    log.warning(
        "event reader lost Redis; retrying",
        extra={"error": str(exc), "retry_in_s": round(delay, 2), "attempt": attempt},
    )
    return delay


class _Read:
    """One blocking read loop over a set of partitions."""

    def __init__(self, owner: PartitionReader, name: str) -> None:
        self.owner = owner
        self.name = name
        self.partitions: set[int] = set()
        self.task: asyncio.Task[None] | None = None
        self.reading = False
        self.woken = False
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=self.name)

    def wake(self) -> None:
        """Interrupt the blocking read in flight, if any (a partition was added)."""
        if self.reading and self.task is not None and not self.woken:
            self.woken = True
            self.task.cancel()

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    async def run(self) -> None:
        owner = self.owner
        attempt = 0
        while not self.stopping:
            try:
                await owner.start_pending(self.partitions)
                streams = {
                    owner.space.partitions[i].events: owner.last_ids[i]
                    for i in self.partitions
                    if i in owner.last_ids
                }
                if not streams:
                    await owner.idle()
                    attempt = 0
                    continue
                self.reading = True
                try:
                    response = await owner.xread(streams)
                except asyncio.CancelledError:
                    if not self.woken:
                        raise
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    continue
                finally:
                    self.reading = False
                    self.woken = False
                owner.read_ok()
                attempt = 0
                await owner.handle(response)
            except asyncio.CancelledError:
                raise
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                attempt += 1
                await asyncio.sleep(_backoff(owner, attempt, exc))
            except redis.RedisError as exc:  # a cluster in the middle of a failover
                owner.connected = False
                attempt += 1
                log.warning("event reader: Redis error; retrying", extra={"error": str(exc)})
                await asyncio.sleep(min(owner.max_backoff, 0.1 * 2**attempt))


class _LiveRead:
    """The read of every partition on one Redis: their live channels on one connection of
    its own, and the streams for what the channels did not bring (see the module's doc)."""

    def __init__(self, owner: PartitionReader) -> None:
        self.owner = owner
        self.partitions: set[int] = set()
        self.task: asyncio.Task[None] | None = None
        self.conn: LiveConnection | None = None
        self._channels = {p.live.encode(): p.index for p in owner.space.partitions}
        self._sends: set[asyncio.Task[None]] = set()
        self._heard = 0.0  # when the channels' connection last brought anything
        self._reading = False  # a read of the channels' connection is waiting
        self._failures = 0  # connections lost or refused since one last answered
        self._swept = 0.0  # when the streams were last read
        self._caught_up = False
        self._last_keys: dict[int, tuple[str, tuple[int, int]]] = {}  # see _key_of

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="jobcast-event-reader")

    def add(self, index: int) -> None:
        """Subscribe to partition ``index``'s channel: its reading starts when Redis confirms
        the subscription (from the stream's newest entry, :meth:`PartitionReader.start_pending`)."""
        self.partitions.add(index)
        self._send("SUBSCRIBE", {index})

    def discard(self, index: int) -> None:
        self.partitions.discard(index)
        self._send("UNSUBSCRIBE", {index})

    def _send(self, command: str, partitions: set[int]) -> None:
        conn = self.conn
        if conn is None or not partitions:
            return  # (re)connecting: it subscribes to every partition once connected
        channels = [self.owner.space.partitions[i].live for i in sorted(partitions)]
        task = asyncio.create_task(self._send_now(conn, command, *channels))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    @staticmethod
    async def _send_now(conn: LiveConnection, *command: str) -> None:
        """Send ``command`` on the channels' connection; a closed one refuses it (the read
        loop opens the next one, which subscribes to every partition)."""
        with contextlib.suppress(redis.RedisError, OSError):  # the read loop sees it too
            await conn.send(*command)

    async def run(self) -> None:
        while True:
            try:
                await self._connected()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                self._failures += 1  # since the last connection that answered
                await asyncio.sleep(_backoff(self.owner, self._failures, exc))
            finally:
                await self._close()

    async def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _connected(self) -> None:
        """One connection's life: subscribe, catch up from the streams, then read the
        channels (and the streams once a second) until the connection fails."""
        owner = self.owner
        pool = owner.client.connection_pool  # type: ignore[union-attr]
        # Through redis-py's connection at most 10 batches a read (ours hands on what one
        # read of the socket brought, 64 KiB at most): then the loop's own checks run.
        conn = await open_live_connection(pool, limit=10 * owner.batch)
        self.conn = conn
        if self.partitions:
            await conn.send("SUBSCRIBE", *self._names(self.partitions))
        self._heard = time.monotonic()
        self._caught_up = False  # this connection's resubscription not yet followed by a read
        watchdog = asyncio.create_task(self._watch(conn), name="jobcast-live-watchdog")
        block = owner.block_ms / 1000
        self._swept = time.monotonic()
        try:
            while True:
                replies = await self._read(conn)
                await self._on_replies(replies)
                if time.monotonic() - self._swept >= block:
                    await self._sweep()
        finally:
            watchdog.cancel()

    async def _sweep(self) -> None:
        await self.owner.sweep()
        self._swept = time.monotonic()

    async def _watch(self, conn: LiveConnection) -> None:
        """PING the channels' connection when it has been quiet for a while (its answer
        also brings the once-a-second read of the streams); cut it when nothing at all
        came back for three of those intervals (the read in flight then fails)."""
        block = self.owner.block_ms / 1000
        while True:
            await asyncio.sleep(block)
            quiet = time.monotonic() - self._heard
            # Only a read that waits is judged: a loop busy handing on a long catch-up is
            # not reading, whatever the connection brings meanwhile.
            if self._reading and quiet > 3 * block:
                log.warning("event reader: no answer on the live channels' connection")
                await conn.abort()
                return
            if quiet >= block:
                await self._send_now(conn, "PING")

    async def _read(self, conn: LiveConnection) -> list[object]:
        self._heard = time.monotonic()  # the silence, if any, starts now
        self._reading = True
        try:
            return await conn.read()
        finally:
            self._reading = False
            self._heard = time.monotonic()

    def _names(self, partitions: set[int]) -> list[str]:
        return [self.owner.space.partitions[i].live for i in sorted(partitions)]

    async def _on_replies(self, replies: list[object]) -> None:
        """Handle the replies of one read, each partition's messages handed on together."""
        self.owner.read_ok()
        self._failures = 0
        batches: dict[int, list[StreamEvent]] = {}
        limit = self.owner.batch
        for reply in replies:
            if isinstance(reply, list) and len(reply) >= 3 and reply[0] == b"message":
                if self._take(reply[1], reply[2], batches) >= limit:
                    await self._flush(batches)
            else:
                await self._flush(batches)  # what came before it is handed on first
                await self._on_other(reply)
        await self._flush(batches)

    async def _on_other(self, reply: object) -> None:
        """A reply other than a channel message (a confirmation, a PING's answer)."""
        if await self._on_control(reply) and not self._caught_up:
            # Subscribed again after a reconnection: what was appended meanwhile is read
            # from the streams now, before any message behind this confirmation (a newer
            # entry's message would move the last id over the ones not read yet). One read
            # serves every partition: one SUBSCRIBE subscribed them all at once.
            await self._sweep()
            self._caught_up = True

    def _take(self, channel: bytes, data: bytes, batches: dict[int, list[StreamEvent]]) -> int:
        """Add a channel message to its partition's batch, unless that partition is not read
        or already has the entry (from the stream). Returns the size of that batch."""
        index = self._channels.get(channel)
        last = self.owner.last_ids.get(index) if index is not None else None
        if index is None or last is None:
            return 0  # not read (yet, or any more)
        try:
            event = StreamEvent.from_live(data, index)
        except (ValueError, UnicodeDecodeError):
            log.warning("event reader: unreadable live message", extra={"partition": index})
            return 0
        batch = batches.setdefault(index, [])
        newest = batch[-1].key if batch else self._key_of(index, last)
        if event.key > newest:
            batch.append(event)
        return len(batch)

    def _key_of(self, index: int, last: str) -> tuple[int, int]:
        """Partition ``index``'s last id ``last`` as two numbers, parsed once per id."""
        memo = self._last_keys.get(index)
        if memo is None or memo[0] != last:
            memo = self._last_keys[index] = (last, parse_event_id(last))
        return memo[1]

    async def _flush(self, batches: dict[int, list[StreamEvent]]) -> None:
        for index, batch in batches.items():
            if batch and index in self.owner.last_ids:
                await self.owner.deliver(index, batch)
        batches.clear()

    async def _on_control(self, reply: object) -> bool:
        """A reply other than a message: a subscription's confirmation starts reading its
        partition (True when it was read already: a resubscription), a PING's answer."""
        if not isinstance(reply, list) or len(reply) < 3 or reply[0] != b"subscribe":
            return False
        index = self._channels.get(reply[1])
        if index is None or index not in self.partitions:
            return False
        if index in self.owner.last_ids:
            return True
        await self.owner.start_pending({index})
        return False


class PartitionReader:
    """Reads the partitions added with :meth:`add` and hands each batch to ``handler``."""

    def __init__(
        self,
        client: AsyncRedis,
        handler: Handler,
        space: Keyspace,
        *,
        cluster: bool,
        batch: int = 500,
        block_ms: int = 1000,
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.handler = handler
        self.space = space
        self.cluster = cluster
        self.batch = batch
        self.block_ms = block_ms
        self.max_backoff = max_backoff
        #: The partitions being read, each with the last id handled.
        self.last_ids: dict[int, str] = {}
        #: Partitions added whose starting id is not fetched yet.
        self._pending: dict[int, asyncio.Event] = {}
        self._reads: dict[int, _Read | _LiveRead] = {}  # by partition (one shared on one Redis)
        self._shared: _LiveRead | None = None
        self._names = {p.events: p.index for p in space.partitions}
        self._idle = asyncio.Event()
        self.connected = False
        self._last_ok = 0.0
        self._running = False

    # --- which partitions

    @property
    def partitions(self) -> int:
        """How many partitions this instance reads (or is about to)."""
        return len(self._reads)

    def add(self, index: int) -> None:
        """Start reading partition ``index`` (from its newest entry)."""
        if index in self._reads:
            return
        self._pending[index] = asyncio.Event()
        if self.cluster:
            read = _Read(self, f"jobcast-reader-p{index}")
            read.partitions.add(index)
            self._reads[index] = read
            if self._running:
                read.start()
            return
        shared = self._shared_read()
        self._reads[index] = shared
        shared.add(index)

    def discard(self, index: int) -> None:
        """Stop reading partition ``index``."""
        read = self._reads.pop(index, None)
        if read is None:
            return
        self.last_ids.pop(index, None)
        started = self._pending.pop(index, None)
        if started is not None:
            started.set()
        if isinstance(read, _LiveRead):
            read.discard(index)
        else:
            read.partitions.discard(index)
            read.stop()

    async def started(self, index: int) -> None:
        """Wait until partition ``index`` is read from a known id (at most 5 s: while Redis
        is away, the replay that follows fails too)."""
        started = self._pending.get(index)
        if started is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(started.wait(), 5.0)

    def last_id(self, index: int) -> str | None:
        return self.last_ids.get(index)

    # --- health

    @property
    def healthy(self) -> bool:
        """Connected, and a read returned recently (the loops are alive)."""
        return self.connected and time.monotonic() - self._last_ok < self.block_ms / 1000 + 5

    async def lag(self, cap: int = 1000) -> int:
        """How many entries the read partitions hold after their last ids (each at most
        ``cap``)."""
        if not self.last_ids:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for index, last in self.last_ids.items():
                pipe.xrange(self.space.partitions[index].events, min=f"({last}", count=cap)
            replies = await pipe.execute()
        return sum(len(reply or ()) for reply in replies)

    # --- the loops' shared steps

    def _shared_read(self) -> _LiveRead:
        if self._shared is None:
            self._shared = _LiveRead(self)
            if self._running:
                self._shared.start()
        return self._shared

    async def run(self) -> None:
        """Run the read loops until cancelled."""
        self._running = True
        loops = list({id(r): r for r in self._reads.values()}.values())
        if not self.cluster:
            loops = [self._shared_read()]
        for read in loops:
            if read.task is None:
                read.start()
        try:
            while True:  # the health of an instance that reads nothing
                await asyncio.sleep(self.block_ms / 1000)
                if not self._reads:
                    try:
                        await self.client.ping()
                        self.read_ok()
                    except (redis.RedisError, OSError):
                        self.connected = False
        finally:
            self._running = False
            tasks = [r.task for r in {id(r): r for r in self._reads.values()}.values() if r.task]
            if self._shared is not None and self._shared.task is not None:
                tasks.append(self._shared.task)
            for task in set(tasks):
                task.cancel()
            for task in set(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def xread(self, streams: dict[str, str]) -> object:
        """One blocking read. On a cluster (one partition a read), straight to the master
        holding its slot: redis-py would otherwise ask a node which keys the ``XREAD``
        holds (``COMMAND GETKEYS``) before every read."""
        client = self.client
        if not isinstance(client, AsyncRedisCluster):
            return await client.xread(streams, count=self.batch, block=self.block_ms)  # type: ignore[arg-type]
        [(key, last)] = streams.items()
        await client.initialize()  # after a failover: the new slot map
        node = client.get_node_from_key(key)
        return await client.execute_command(
            "XREAD",
            "COUNT",
            self.batch,
            "BLOCK",
            self.block_ms,
            "STREAMS",
            key,
            last,
            target_nodes=node,
        )

    async def start_pending(self, partitions: set[int]) -> None:
        """Fetch the newest id of each of ``partitions`` added since the last read."""
        pending = [i for i in partitions if i in self._pending]
        if not pending:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for index in pending:
                pipe.xrevrange(self.space.partitions[index].events, count=1)
            newest = await pipe.execute()
        for index, reply in zip(pending, newest, strict=True):
            started = self._pending.pop(index, None)
            if started is None:  # discarded meanwhile
                continue
            self.last_ids[index] = text(reply[0][0]) if reply else "0-0"
            started.set()
            log.info(
                "partition reader started",
                extra={"partition": index, "last_id": self.last_ids[index]},
            )
        self.read_ok()

    async def idle(self) -> None:
        """Nothing to read: wait for a partition to be added (or a while)."""
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.block_ms / 1000)

    def read_ok(self) -> None:
        if not self.connected:
            log.info("event reader connected", extra={"partitions": len(self.last_ids)})
        self.connected = True
        self._last_ok = time.monotonic()

    async def handle(self, response: object) -> int:
        """Hand on an ``XREAD`` reply's entries; returns how many there were of the fullest
        stream."""
        most = 0
        for stream_reply in response or ():  # type: ignore[attr-defined]
            index = self._names.get(text(stream_reply[0]))
            if index is None or index not in self.last_ids:
                continue  # discarded while the read was in flight
            batch = stream_events(stream_reply[1], index)
            most = max(most, len(batch))
            if batch:
                await self.deliver(index, batch)
        return most

    async def deliver(self, index: int, batch: list[StreamEvent]) -> None:
        """Hand on partition ``index``'s ``batch`` (after its last id, in order)."""
        self.last_ids[index] = batch[-1].event_id
        try:
            await self.handler(batch)
        except Exception:
            log.exception(
                "event handler failed", extra={"partition": index, "last_id": self.last_ids[index]}
            )

    async def sweep(self) -> None:
        """Read every partition's stream from its last id, without blocking, until none has
        more: what the live channels did not bring (a reconnection, a missed announcement).
        It reads to the end, however far behind: a channel message past the end of what was
        read would move the last id over the entries in between. The streams are capped
        (``JOBCAST_STREAM_MAX_EVENTS``), so the end comes unless events are appended faster
        than they are read (then the channels' connection, not read meanwhile, is cut by
        Redis at its output limit, and the next connection reads again from the last ids)."""
        while True:
            streams = {self.space.partitions[i].events: last for i, last in self.last_ids.items()}
            if not streams:
                return
            response = await self.client.xread(streams, count=self.batch)  # type: ignore[arg-type]
            self.read_ok()
            if await self.handle(response) < self.batch:
                return
