"""The partitioned keyspace: every Lua call's keys in one hash slot, partitions spread
evenly over a cluster's masters, a user's partition stable across processes."""

from __future__ import annotations

import random
import string
from collections import Counter

import pytest
from redis.crc import key_slot

from notifier.contract import keys
from notifier.contract.events import (
    channel_message,
    job_completed,
    status_update,
    system_notification,
)
from notifier.contract.keys import Keyspace, Partition, keyspace
from notifier.core import bus
from tests.support.processes import python_output

#: How ``redis-cli --cluster create`` splits the slots over 3 masters.
THREE_MASTERS = ((0, 5460), (5461, 10922), (10923, 16383))


def slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def random_id(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "-_:{}"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))


def partition_keys(part: Partition, user: str, job: str) -> list[str]:
    return [
        part.events,
        part.broadcasts,
        part.running,
        part.instances,
        part.job_totals,
        part.job(job),
        part.job_events(job),
        part.canvas(job),
        part.user_jobs(user),
        part.user_inbox(user),
        part.user_channel_events(user),
        part.user_connections(user),
        part.user_cursor(user),
    ]


@pytest.mark.parametrize("count", [1, 3, 64, 1000])
def test_every_key_of_a_partition_is_in_one_slot_whatever_the_ids(count: int) -> None:
    """User and job ids may hold anything, braces included: the partition's tag decides."""
    rng = random.Random(count)
    space = Keyspace(count)
    for _ in range(300):
        user, job = random_id(rng), random_id(rng)
        part = space.of_user(user)
        assert len(slots(partition_keys(part, user, job))) == 1, (user, job)


def test_the_publish_script_keys_of_every_event_are_in_one_slot() -> None:
    from notifier.contract.settings import Settings

    settings = Settings(_env_file=None)
    space = keyspace(settings.partitions)
    rng = random.Random(7)
    for _ in range(200):
        user, job = random_id(rng), random_id(rng)
        for event in (
            status_update(job, user, "processing", progress=5, seq=3),
            job_completed(job, user, {"ok": True}),
        ):
            part = space.of_user(event.user_id)
            assert len(slots(bus._script_keys(part, event))) == 1
    for event in (system_notification("hi"), channel_message("ops", "hi", "info", {})):
        for part in space.partitions:
            assert len(slots(bus._script_keys(part, event))) == 1


def test_the_default_partitions_spread_over_three_masters_within_20_percent() -> None:
    space = keyspace(64)
    slot_of = [key_slot(part.events.encode()) for part in space.partitions]
    assert len(set(slot_of)) == 64  # never two partitions in one slot
    per_master = [sum(low <= s <= high for s in slot_of) for low, high in THREE_MASTERS]
    share = 64 / 3
    assert all(abs(n - share) <= 0.2 * share for n in per_master), per_master


def test_users_spread_over_the_partitions() -> None:
    space = keyspace(64)
    counts = Counter(space.index_of(f"user-{n}") for n in range(64_000))
    assert len(counts) == 64
    assert max(counts.values()) < 1.2 * 1000 and min(counts.values()) > 0.8 * 1000


def test_a_users_partition_is_the_same_in_another_process() -> None:
    users = ["alice", "42", "bob-2", "ünïcode", "{p3}"]
    here = [keyspace(64).index_of(user) for user in users]
    there = python_output(
        "from notifier.contract.keys import keyspace\n"
        f"print([keyspace(64).index_of(u) for u in {users!r}])\n"
    )
    assert there == str(here)


def test_keys_without_a_partition_are_single_key_lookups() -> None:
    assert keys.job_owner("j-1") != keys.job_owner("j-2")
    assert keys.task_job("t-1").startswith(keys.PREFIX)
    with pytest.raises(ValueError, match="partitions must be"):
        Keyspace(0)
