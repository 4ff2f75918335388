"""Every Redis key jobcast uses. No other module spells a ``jobcast:`` string.

The keyspace is cut into a fixed number of partitions (``JOBCAST_PARTITIONS``). A user's
partition is a stable hash of the user id (:meth:`Keyspace.of_user`); everything of the
user — their event stream, inbox, job list, cursors, connections — and of the jobs they
own — state, history, canvas aggregate, lease — carries the partition's hash tag, so that
every Lua call touches one hash slot and runs on Redis Cluster. The tags are chosen so the
partitions spread evenly over the slot space (:func:`tag`), hence over a cluster's masters.

What knows only a job id (REST, cancel, Celery signals sent without headers, Flower links)
finds the owner, hence the partition, with one single-key lookup: :func:`job_owner`.
The few keys without a tag are read and written one key per command.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "jobcast"

# --- keys of no partition (one key per command)

#: Lock so that one notifier instance at a time sweeps the running sets.
REAPER_LOCK = f"{PREFIX}:reaper"
#: Sorted set of live notifier instances scored by the expiry (ms) of their lease (for the
#: statistics; presence keeps a copy per partition, see :attr:`Partition.instances`).
INSTANCES = f"{PREFIX}:instances"
#: Hash: ``count``, the number of partitions the data was written with, and ``since``.
PARTITIONS = f"{PREFIX}:partitions"


def job_owner(job_id: str) -> str:
    """String: the user who owns a job (written before the job's first event)."""
    return f"{PREFIX}:owner:{job_id}"


def task_job(task_id: str) -> str:
    """String: the canvas job a member task belongs to (for signals sent without headers)."""
    return f"{PREFIX}:task:{task_id}:job"


def instance_stats(instance_id: str) -> str:
    """Hash of one notifier instance's figures (connections, subscriptions, deliveries)."""
    return f"{PREFIX}:instance:{instance_id}:stats"


def instance_users(instance_id: str) -> str:
    """Set of the user ids connected to one notifier instance."""
    return f"{PREFIX}:instance:{instance_id}:users"


# --- partitions


def tag(index: int, count: int) -> str:
    """The hash tag of partition ``index`` of ``count``: the first of ``p<index>``,
    ``p<index>.1``, ``p<index>.2`` ... whose slot lies in the partition's share of the slot
    space, so that ``count`` partitions spread evenly over any even split of the slots
    (a cluster's masters) and never share a slot while ``count`` <= 16384."""
    low = index * REDIS_CLUSTER_HASH_SLOTS // count
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    name = f"p{index}"
    suffix = 0
    while not low <= key_slot(name.encode()) < high:
        suffix += 1
        name = f"p{index}.{suffix}"
    return "{" + name + "}"


@dataclass(frozen=True, slots=True)
class Partition:
    """The keys of one partition; every name carries the partition's hash tag."""

    index: int
    tag: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:{self.tag}"

    @property
    def events(self) -> str:
        """The partition's event stream: its users' job events and every broadcast and
        channel message (appended to every partition). A notifier reads the partitions of
        its connections' users, each from its own last id (fan-out, no consumer group)."""
        return f"{self.base}:events"

    @property
    def live(self) -> str:
        """The pub/sub channel on which the publishing scripts announce each new entry of
        :attr:`events` (the entry itself, ``lua/live.lua``): a notifier on one Redis reads
        its partitions from there and falls back to the stream for what it missed."""
        return f"{self.base}:live"

    @property
    def broadcasts(self) -> str:
        """Broadcasts and channel messages, with the same ids as in :attr:`events`."""
        return f"{self.base}:broadcasts"

    @property
    def running(self) -> str:
        """Sorted set of the partition's started jobs scored by the expiry (ms) of their
        run's lease; a job whose lease lapsed (its worker died silently) is reaped."""
        return f"{self.base}:running"

    @property
    def job_totals(self) -> str:
        """Hash: how many job events of the partition's users were published, by the state
        they carry, and ``code:<code>`` per ``job_error`` (the publish script counts them;
        notifiers export the sums as ``jobcast_job_events_total``/``..._errors_total``)."""
        return f"{self.base}:job-totals"

    @property
    def instances(self) -> str:
        """The leases (expiry, ms) of the instances holding connections of the partition's
        users: a dead instance's connections drop out when its lease lapses."""
        return f"{self.base}:instances"

    def job(self, job_id: str) -> str:
        """Hash holding a job's owner, current state and terminal message."""
        return f"{self.base}:job:{job_id}"

    def job_events(self, job_id: str) -> str:
        """Stream of one job's events, same ids as :attr:`events` (REST catch-up)."""
        return f"{self.base}:job:{job_id}:events"

    def job_output(self, job_id: str) -> str:
        """String: a job's live output (``workers.progress.stream``), UTF-8, append only and
        at most ``JOBCAST_OUTPUT_MAX_BYTES``; its code-point length and whether it was cut
        are in :meth:`job` (``outputLength``, ``outputBytes``, ``outputTruncated``). It
        expires with the job's hash (the publish script renews both)."""
        return f"{self.base}:job:{job_id}:output"

    def canvas(self, job_id: str) -> str:
        """Hash of a canvas job's aggregate: member task ids, per-member progress and
        results, counters (done, running, seq) and the aggregate's ETA state."""
        return f"{self.base}:canvas:{job_id}"

    def user_jobs(self, user_id: str) -> str:
        """Sorted set of a user's job ids, scored by creation time (ms)."""
        return f"{self.base}:user:{user_id}:jobs"

    def user_inbox(self, user_id: str) -> str:
        """Stream of the events addressed to one user (terminal job events), same ids as
        :attr:`events`."""
        return f"{self.base}:user:{user_id}:inbox"

    def user_channel_events(self, user_id: str) -> str:
        """Sorted set of the ids of the channel messages dispatched while one of the user's
        connections was subscribed to their channel (and of the other users' ``job_error``
        events the user got through ``ops``), scored by time (ms): the only channel messages
        a replay gives the user, and the foreign ids that are valid ``lastEventId`` values."""
        return f"{self.base}:user:{user_id}:channel-events"

    def user_connections(self, user_id: str) -> str:
        """Set of a user's open connections (``instance|conn``); one counts while its
        instance holds a live lease in :attr:`instances`."""
        return f"{self.base}:user:{user_id}:conns"

    def user_cursor(self, user_id: str) -> str:
        """Hash: ``acked`` (the user's ``ack`` cursor) and ``seen`` (delivered live up to)."""
        return f"{self.base}:user:{user_id}:cursor"


class Keyspace:
    """The ``count`` partitions of a deployment."""

    __slots__ = ("count", "partitions")

    def __init__(self, count: int) -> None:
        if not 1 <= count <= REDIS_CLUSTER_HASH_SLOTS:
            raise ValueError(f"partitions must be 1 to {REDIS_CLUSTER_HASH_SLOTS}, not {count}")
        self.count = count
        self.partitions = tuple(Partition(i, tag(i, count)) for i in range(count))

    def index_of(self, user_id: str) -> int:
        """The user's partition number: CRC-32 of the id, stable across processes."""
        return zlib.crc32(user_id.encode()) % self.count

    def of_user(self, user_id: str) -> Partition:
        return self.partitions[self.index_of(user_id)]


@cache
def keyspace(count: int) -> Keyspace:
    """The keyspace of ``count`` partitions (computed once per process)."""
    return Keyspace(count)
