"""``jobcast migrate-partitions --to N``: re-key jobcast's data for another partition count.

An offline operation: every notifier, API process and worker is stopped first (the command
refuses while a notifier instance holds a live lease). For every key of every old
partition it finds the owner (the user in the key, or the job's owner index) and moves the
key to the owner's new partition with ``DUMP``/``RESTORE`` (expiry kept, one key per
command: it works on a Redis Cluster too). Job state and history, job lists, canvas
aggregates, leases of running jobs, inboxes, cursors and channel-message records move. The
partition event and broadcast streams and the job event totals do not (the metrics start
again): a new partition's feed mixes users of several old ones, so the streams start
afresh and the recorded ``migratedAt`` makes every ``lastEventId`` from before the
migration give ``recovered: false`` (clients reload the snapshots; offline delivery still
reads the moved inboxes).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import redis

from notifier.contract import keys
from notifier.contract.events import now_ms
from notifier.contract.keys import Keyspace, Partition, keyspace
from notifier.core.bus import SyncRedis, text

log = logging.getLogger(__name__)

#: Keys of a partition itself (not of a user or a job): their fate in a migration.
_DROPPED = ("events", "broadcasts", "instances", "job-totals")


class MigrationRefused(RuntimeError):
    """The migration cannot run now (live instances, a bad count); nothing was changed."""


@dataclass
class Report:
    old: int
    new: int
    moved: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    orphans: int = 0

    def lines(self) -> list[str]:
        out = [f"partitions: {self.old} -> {self.new}"]
        out += [f"moved {kind}: {count}" for kind, count in sorted(self.moved.items())]
        out += [f"dropped {kind}: {count}" for kind, count in sorted(self.dropped.items())]
        if self.orphans:
            out.append(f"left alone (owner unknown, expiring): {self.orphans}")
        return out


def recorded(client: SyncRedis) -> int | None:
    raw = client.hget(keys.PARTITIONS, "count")
    return int(text(raw)) if raw is not None else None


def live_instances(client: SyncRedis) -> list[str]:
    return [text(i) for i in client.zrangebyscore(keys.INSTANCES, now_ms(), "+inf")]


def migrate(client: SyncRedis, new_count: int, *, old_count: int | None = None) -> Report:
    """Move every key to the partitions of ``new_count``; raises :class:`MigrationRefused`
    (changing nothing) while notifier instances are live."""
    if not 1 <= new_count <= 16384:
        raise MigrationRefused(f"--to must be 1 to 16384, not {new_count}")
    live = live_instances(client)
    if live:
        raise MigrationRefused(
            f"{len(live)} notifier instance(s) still running ({', '.join(live[:3])}): stop "
            "every jobcast process (notifiers, API, workers) first"
        )
    unfinished = client.hget(keys.PARTITIONS, "migrating")  # a run that stopped midway
    old = old_count or (int(text(unfinished)) if unfinished else None) or recorded(client) or 64
    report = Report(old, new_count)
    if old == new_count:
        return report
    source, target = keyspace(old), keyspace(new_count)
    client.hset(keys.PARTITIONS, mapping={"count": new_count, "migrating": old})
    _move_leases(client, source, target, report)
    for part in source.partitions:
        _move_partition(client, part, target, report)
    client.hset(keys.PARTITIONS, mapping={"count": new_count, "migratedAt": now_ms()})
    client.hdel(keys.PARTITIONS, "migrating")
    return report


def _move_leases(client: SyncRedis, source: Keyspace, target: Keyspace, report: Report) -> None:
    """All the running sets at once: an old and a new partition may share a tag."""
    leases: list[tuple[str, float]] = []
    for part in source.partitions:
        leases += client.zrange(part.running, 0, -1, withscores=True)  # type: ignore[arg-type]
        client.delete(part.running)
    for job, expiry in leases:
        owner = client.get(keys.job_owner(text(job)))
        if owner is not None:
            client.zadd(target.of_user(text(owner)).running, {text(job): expiry})
            report.moved["running"] += 1


def _move_partition(client: SyncRedis, part: Partition, target: Keyspace, report: Report) -> None:
    prefix = f"{part.base}:"
    for name in [text(k) for k in client.scan_iter(match=f"{_glob(prefix)}*", count=500)]:
        rest = name[len(prefix) :]
        if rest == "running":
            continue
        if rest in _DROPPED:
            client.delete(name)
            report.dropped[rest] += 1
            continue
        owner, kind = _owner(client, rest)
        if owner is None:
            report.orphans += 1
            continue
        destination = f"{target.of_user(owner).base}:{rest}"
        if destination != name:  # else: already where it belongs (an old and new tag alike)
            _move(client, name, destination)
            report.moved[kind] += 1


def _owner(client: SyncRedis, rest: str) -> tuple[str | None, str]:
    """The user owning the key ``jobcast:{tag}:<rest>``, and the key's kind."""
    kind, _, tail = rest.partition(":")
    if kind == "user":
        user, _, what = tail.rpartition(":")
        return (user or None), f"user {what}"
    if kind in ("job", "canvas"):
        job, label = tail, kind
        for suffix in (":events", ":output"):
            if tail.endswith(suffix):
                job, label = tail[: -len(suffix)], f"job {suffix[1:]}"
        owner = client.get(keys.job_owner(job))
        return (text(owner) if owner is not None else None), label
    return None, kind


def _move(client: SyncRedis, source: str, destination: str) -> None:
    dumped = client.dump(source)
    if dumped is None:  # expired meanwhile
        return
    ttl = int(client.pttl(source))
    client.restore(destination, ttl if ttl > 0 else 0, dumped, replace=True)
    client.delete(source)


def _glob(text_: str) -> str:
    """``text_`` with SCAN's pattern characters escaped (partition tags hold braces only)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text_)


def main_migrate(client: SyncRedis, new_count: int) -> int:
    """The CLI's ``migrate-partitions``: prints what it did; exit status 0, or 2 refused."""
    try:
        report = migrate(client, new_count)
    except MigrationRefused as exc:
        print(f"jobcast migrate-partitions: refused: {exc}")
        return 2
    except redis.RedisError as exc:
        print(f"jobcast migrate-partitions: Redis error: {exc} (run it again to finish)")
        return 1
    for line in report.lines():
        print(line)
    print(f"done: start every process with JOBCAST_PARTITIONS={new_count}")
    return 0
