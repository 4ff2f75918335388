"""The routing core: which connection gets which event, whatever the transport.

Socket.IO and native WebSocket connections are both :class:`Connection` objects with a
``send`` callable; the hub indexes them by user, job and channel and decides, with plain
set logic, who receives each event read from the stream. Each connection gets each event
at most once, and never an event of a job older than what it has already seen of it.
Subscribers of the ``ops`` channel also get every ``job_error``, whoever owns the job.

Events come from partition streams (``keys.Partition``). A broadcast or channel message is
in every partition's stream, each copy with that partition's id: a connection gets the
copy of its user's partition, so that its ids stay in one space. The hub counts, per
partition, what needs it read — its users' connections, subscriptions to its jobs, and
``ops`` subscriptions (every partition: ``job_error`` of any user) — and tells the reader
(``on_partition``) when a count leaves or reaches zero.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

from notifier.contract.events import JOB_ERROR, OPS, StreamEvent, is_terminal, parse_event_id
from notifier.contract.keys import Keyspace
from notifier.edge.auth import Principal
from notifier.edge.limits import RateLimiter

log = logging.getLogger(__name__)

Sender = Callable[[dict[str, Any], int], bool]
Closer = Callable[[int, str], None]
#: Told, for each channel message dispatched, which users had a connection subscribed to
#: its channel (and, for each ``job_error``, which users had one subscribed to ``ops``).
ChannelHook = Callable[[StreamEvent, set[str]], None]
#: Told that a partition is needed (True) or no longer needed (False).
PartitionHook = Callable[[int, bool], None]

K = TypeVar("K", str, int)

#: Size assumed for small messages built on the server (answers, snapshots).
SMALL = 256
#: A job cursor past every event id: the connection has been sent the job's terminal event.
FINAL = (1 << 64, 0)
#: What a connection's ``jobs`` and ``channels`` are until it subscribes (shared).
NONE: frozenset[str] = frozenset()


def _added(names: AbstractSet[str], name: str) -> set[str]:
    """``names`` with ``name``, in a set of the connection's own from the first one."""
    own = names if isinstance(names, set) else set(names)
    own.add(name)
    return own


class Connection:
    """One client connection. ``send`` queues one wire message (its outbox) and never blocks."""

    __slots__ = (
        "address",
        "channels",
        "closer",
        "cursors",
        "id",
        "job_partitions",
        "jobs",
        "limiter",
        "lost",
        "partition",
        "pending",
        "principal",
        "replaying",
        "sender",
        "transport",
    )

    def __init__(
        self,
        conn_id: str,
        principal: Principal,
        transport: str,
        send: Sender,
        close: Closer,
        limiter: RateLimiter | None = None,
        address: str = "",
    ) -> None:
        self.id = conn_id
        self.principal = principal
        self.transport = transport  # "websocket" | "polling" | "native"
        self.sender = send
        self.closer = close
        self.limiter = limiter
        #: The client's address (the forwarded one behind a trusted load balancer).
        self.address = address
        #: The user's partition (set by :meth:`Hub.add`).
        self.partition = 0
        #: Closed with messages undelivered (slow consumer): its user's ``seen`` cursor
        #: must not move past them.
        self.lost = False
        #: The jobs and channels subscribed to: an empty set is 216 bytes, and most idle
        #: connections have no channel and at most a job, so both start as :data:`NONE`.
        self.jobs: AbstractSet[str] = NONE
        self.channels: AbstractSet[str] = NONE
        #: Jobs whose subscription waits for its snapshot: live events are held back here.
        self.pending: dict[str, list[StreamEvent]] = {}
        #: The partition of each job subscribed to (or waiting for its snapshot).
        self.job_partitions: dict[str, int] = {}
        #: Per job (``""`` for broadcasts), the newest event id this connection has been
        #: sent, snapshots included: anything not newer is a duplicate.
        self.cursors: dict[str, tuple[int, int]] = {}
        #: While the connection's replay is being sent, live events wait here.
        self.replaying: list[StreamEvent] | None = None

    def send(self, message: dict[str, Any], size: int = SMALL) -> bool:
        return self.sender(message, size)

    def close(self, code: int, reason: str) -> None:
        """Close after the messages already queued (the adapter picks the wire form)."""
        self.closer(code, reason)

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id} {self.transport}>"


class Hub:
    def __init__(self, space: Keyspace) -> None:
        self.space = space
        self.connections: dict[str, Connection] = {}
        self.by_user: defaultdict[str, set[Connection]] = defaultdict(set)
        self.by_partition: defaultdict[int, set[Connection]] = defaultdict(set)
        #: Per partition, how many connections, job subscriptions and ``ops``
        #: subscriptions of this instance need it read.
        self.demand: dict[int, int] = {}
        self.on_partition: PartitionHook | None = None
        self.by_job: defaultdict[str, set[Connection]] = defaultdict(set)
        self.by_channel: defaultdict[str, set[Connection]] = defaultdict(set)
        self.delivered = 0
        #: Records who held a channel message's channel (the replay rule, ``recovery.py``).
        self.on_channel: ChannelHook | None = None

    # --- membership

    def add(self, conn: Connection, *, hold: bool = False) -> None:
        """Register ``conn``; with ``hold``, live events wait until :meth:`resume`."""
        if hold:
            conn.replaying = []
        conn.partition = self.space.index_of(conn.user_id)
        self.connections[conn.id] = conn
        self.by_user[conn.user_id].add(conn)
        self.by_partition[conn.partition].add(conn)
        self._need(conn.partition)

    def resume(self, conn: Connection, replay: Sequence[StreamEvent]) -> None:
        """Send the replayed events, then the live ones held meanwhile, without duplicates."""
        for event in replay:  # bounded by the inbox caps: not counted against the backlog
            self._send(conn, event.job_id, event.message(), event.key, 0)
        held, conn.replaying = conn.replaying or [], None
        for event in held:
            self._deliver(conn, event, event.message())

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        _discard(self.by_user, conn.user_id, conn)
        _discard(self.by_partition, conn.partition, conn)
        self._free(conn.partition)
        for job_id in conn.jobs | set(conn.pending):
            _discard(self.by_job, job_id, conn)
        for partition in conn.job_partitions.values():
            self._free(partition)
        conn.job_partitions.clear()
        for channel in list(conn.channels):
            self.leave_channel(conn, channel)
        conn.jobs = conn.channels = NONE
        conn.pending.clear()

    def watch_job(self, conn: Connection, job_id: str, partition: int) -> None:
        """Start holding live events of ``job_id`` (of ``partition``) for ``conn`` until its
        snapshot is sent."""
        conn.pending.setdefault(job_id, [])
        self.by_job[job_id].add(conn)
        if job_id not in conn.job_partitions:
            conn.job_partitions[job_id] = partition
            self._need(partition)

    def unwatch_job(self, conn: Connection, job_id: str) -> None:
        if job_id in conn.jobs:
            conn.jobs = conn.jobs - {job_id} or NONE
        conn.pending.pop(job_id, None)
        conn.cursors.pop(job_id, None)
        _discard(self.by_job, job_id, conn)
        partition = conn.job_partitions.pop(job_id, None)
        if partition is not None:
            self._free(partition)

    def open_job(self, conn: Connection, job_id: str, snapshot: dict[str, Any]) -> None:
        """Send the snapshot, then the live events held meanwhile that are newer than it."""
        held = conn.pending.pop(job_id, [])
        conn.jobs = _added(conn.jobs, job_id)
        key = FINAL if is_terminal(snapshot) else parse_event_id(snapshot["eventId"])
        conn.cursors[job_id] = max(key, conn.cursors.get(job_id, key))
        # Always sent (it answers the subscribe). Counted as small even when it carries a
        # large output: counted at its size, a snapshot near the send-queue bound would
        # close a connection whose transport queues it (the stock path) as soon as the
        # next message arrived.
        self._send(conn, job_id, snapshot, None, SMALL)
        for event in held:
            self._deliver(conn, event, event.message())

    def join_channel(self, conn: Connection, channel: str) -> None:
        if channel in conn.channels:
            return
        conn.channels = _added(conn.channels, channel)
        self.by_channel[channel].add(conn)
        if channel == OPS:
            for partition in range(self.space.count):
                self._need(partition)

    def leave_channel(self, conn: Connection, channel: str) -> None:
        if channel not in conn.channels:
            return
        conn.channels = conn.channels - {channel} or NONE
        _discard(self.by_channel, channel, conn)
        if channel == OPS:
            for partition in range(self.space.count):
                self._free(partition)

    # --- which partitions are needed

    def _need(self, partition: int) -> None:
        count = self.demand.get(partition, 0)
        self.demand[partition] = count + 1
        if count == 0 and self.on_partition is not None:
            self.on_partition(partition, True)

    def _free(self, partition: int) -> None:
        count = self.demand.get(partition, 0) - 1
        if count > 0:
            self.demand[partition] = count
            return
        self.demand.pop(partition, None)
        if self.on_partition is not None:
            self.on_partition(partition, False)

    # --- routing

    def recipients(self, event: StreamEvent) -> Iterable[Connection]:
        """Who gets ``event``: a pure function of the indexes."""
        if event.route == "job" and event.type != JOB_ERROR:  # progress: the hot path
            return self.by_job.get(event.job_id, ())
        if event.route in ("job", "owner"):
            return _job_recipients(
                self.by_job.get(event.job_id),
                self.by_user.get(event.user_id) if event.route == "owner" else None,
                self.by_channel.get(OPS) if event.type == JOB_ERROR else None,
            )
        if event.route == "all":  # the copy of each partition to its users
            return self.by_partition.get(event.partition, ())
        if event.route == "channel":
            subscribers = self.by_channel.get(event.channel)
            if not subscribers:
                return ()
            return [conn for conn in subscribers if conn.partition == event.partition]
        log.warning("event with unknown route dropped", extra={"event_id": event.event_id})
        return ()

    def dispatch(self, batch: Sequence[StreamEvent]) -> None:
        for event in batch:
            targets = self.recipients(event)
            if not targets:
                continue
            message = event.message()  # decoded once, shared by every recipient
            key, size = event.key, _size(event)
            final = bool(event.job_id) and is_terminal(message)  # once, not per recipient
            for conn in list(targets):
                self._deliver(conn, event, message, key, size, final)
            if self.on_channel is not None:
                if event.route == "channel":
                    self.on_channel(event, {conn.user_id for conn in targets})
                elif event.type == JOB_ERROR and OPS in self.by_channel:
                    self.on_channel(event, {conn.user_id for conn in self.by_channel[OPS]})

    def _deliver(
        self,
        conn: Connection,
        event: StreamEvent,
        message: dict[str, Any],
        key: tuple[int, int] | None = None,
        size: int = 0,
        final: bool | None = None,
    ) -> None:
        if conn.replaying is not None:
            conn.replaying.append(event)
            return
        job_id = event.job_id
        if job_id:
            held = conn.pending.get(job_id)
            if held is not None:
                held.append(event)
                return
        if key is None:
            key, size = event.key, _size(event)
        self._send(conn, job_id, message, key, size, final)

    def _send(
        self,
        conn: Connection,
        job_id: str,
        message: dict[str, Any],
        key: tuple[int, int] | None,
        size: int,
        final: bool | None = None,
    ) -> None:
        """Send ``message`` unless the connection has seen ``key`` of the job already;
        ``final``: whether it ends its job (worked out here when the caller did not)."""
        if key is not None:
            seen = conn.cursors.get(job_id)
            if seen is not None and key <= seen:
                return
            # A job's terminal event is final: after it, nothing more of the job reaches
            # this connection, not even a second terminal event (a producer that
            # published it again after a Redis failover lost the first copy, which this
            # connection had already been sent, gives it another id).
            if final is None:
                final = bool(job_id) and is_terminal(message)
            conn.cursors[job_id] = FINAL if final else key
        if conn.send(message, size):
            self.delivered += 1


def _job_recipients(
    subscribers: set[Connection] | None,
    owner: set[Connection] | None,
    ops: set[Connection] | None,
) -> Iterable[Connection]:
    """A job event's recipients: the job's subscribers, the owner's connections (``owner``
    route), the ``ops`` subscribers (``job_error``); one set, so each connection once."""
    groups = [group for group in (subscribers, owner, ops) if group]
    if not groups:
        return ()
    if len(groups) == 1:
        return groups[0]  # the index itself: dispatch iterates over a copy
    return set().union(*groups)


def _size(event: StreamEvent) -> int:
    return len(event.payload) + 48  # the payload plus eventId and framing


def _discard(index: defaultdict[K, set[Connection]], name: K, conn: Connection) -> None:
    members = index.get(name)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[name]
