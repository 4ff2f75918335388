"""A notifier reads only the partitions its connections need (``jobcast_reader_partitions``),
consumes only their events, and each user gets one copy of a broadcast: their
partition's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.contract.events import status_update, system_notification
from notifier.contract.settings import get_settings
from notifier.core.bus import check_partitions_sync, publish_sync
from tests.support.env import REPO, child_env, free_port
from tests.support.fault_helpers import parse_metrics
from tests.support.helpers import NativeClient
from tests.support.keyspace import space
from tests.support.processes import START_TIMEOUT, stop_process

pytestmark = pytest.mark.integration


def users_in_distinct_partitions(count: int) -> list[str]:
    """``count`` user ids, each in a partition of its own."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        user = f"part-user-{n}"
        found.setdefault(space().index_of(user), user)
        n += 1
    return list(found.values())


async def metric(http: httpx.AsyncClient, name: str) -> float:
    response = await http.get("/metrics", follow_redirects=True)
    return parse_metrics(response.text).get((name, ()), 0.0)


async def settled_metric(http: httpx.AsyncClient, name: str, expected: float) -> float:
    """The metric once it equals ``expected`` (bounded wait), else its last value."""
    value = await metric(http, name)
    for _ in range(100):
        if value == expected:
            break
        await asyncio.sleep(0.05)
        value = await metric(http, name)
    return value


async def test_a_notifier_reads_only_the_partitions_of_its_connections(
    http: httpx.AsyncClient, redis_client: Any, tokens: Any, native_client: Any
) -> None:
    settings = get_settings()
    assert settings.partitions == space().count
    assert await settled_metric(http, "jobcast_reader_partitions", 0) == 0
    connected, stranger = users_in_distinct_partitions(4)[:3], users_in_distinct_partitions(4)[3]
    clients: list[NativeClient] = [await native_client(tokens.make(user)) for user in connected]
    assert await settled_metric(http, "jobcast_reader_partitions", 3) == 3

    # Events of a partition nobody here needs are not even read.
    consumed = await metric(http, "jobcast_events_consumed_total")
    for n in range(5):
        publish_sync(
            redis_client,
            status_update(f"job-{stranger}", stranger, "processing", seq=n + 1),
            settings,
        )
    # One user's event: read once; a broadcast: one copy per partition read.
    owner = connected[0]
    publish_sync(redis_client, status_update(f"job-{owner}", owner, "queued"), settings)
    publish_sync(redis_client, system_notification("to everyone"), settings)
    for client in clients:
        note = await client.wait_for_type("system_notification", message="to everyone")
        assert note["eventId"]
    expected = consumed + 1 + 3
    assert await settled_metric(http, "jobcast_events_consumed_total", expected) == expected
    for client in clients:
        await client.settle()
        assert len(client.of_type("system_notification")) == 1, client.describe()

    # The last connection of a partition leaves: it is no longer read.
    await clients[0].close()
    assert await settled_metric(http, "jobcast_reader_partitions", 2) == 2

    # An ops subscriber needs every user's job_error: every partition is read meanwhile.
    admin = await native_client(tokens.admin)
    answer = await admin.request("subscribe_channel", channel="ops")
    assert answer["type"] == "subscribed", answer
    everything = space().count
    assert await settled_metric(http, "jobcast_reader_partitions", everything) == everything
    await admin.request("unsubscribe_channel", channel="ops")
    admin_and_two = len({space().index_of(u) for u in [*connected[1:], "admin-9"]})
    assert await settled_metric(http, "jobcast_reader_partitions", admin_and_two) == admin_and_two


def test_a_server_with_another_partition_count_refuses_to_start(
    redis_client: Any, tmp_path: Path
) -> None:
    check_partitions_sync(redis_client, get_settings())  # what the running processes use
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=REPO,
            env=child_env(JOBCAST_PARTITIONS="32"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = proc.wait(timeout=START_TIMEOUT)
    finally:
        stop_process(proc, group=True)
    assert code != 0
    text = log.read_text()
    assert "JOBCAST_PARTITIONS=64" in text and "migrate-partitions --to 32" in text, text
