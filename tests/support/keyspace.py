"""Where the tests find jobcast's keys: the partition of a user or of a job (as the
services compute it, from the same settings)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from notifier.contract import keys
from notifier.contract.keys import Partition, keyspace
from notifier.contract.settings import get_settings


def space() -> keys.Keyspace:
    return keyspace(get_settings().partitions)


def user_partition(user_id: str) -> Partition:
    return space().of_user(user_id)


def job_partition(redis_client: Any, job_id: str) -> Partition:
    """The partition of ``job_id``, from the owner index the publisher writes."""
    owner = redis_client.get(keys.job_owner(job_id))
    assert owner, f"job {job_id} has no owner index"
    return user_partition(str(owner))


def events_in_streams(redis_client: Any, users: Iterable[str] | None = None) -> int:
    """Entries in the event streams of the partitions of ``users`` (default: every
    partition); a broadcast counts once per partition."""
    if users is None:
        parts = list(space().partitions)
    else:
        parts = list({user_partition(user) for user in users})
    with redis_client.pipeline(transaction=False) as pipe:
        for part in parts:
            pipe.xlen(part.events)
        return sum(int(n) for n in pipe.execute())
