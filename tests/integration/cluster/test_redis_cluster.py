"""jobcast on a Redis Cluster (3 masters, 3 replicas): a master killed mid-stream.

Runs in the cluster phase of ``make test`` (``JOBCAST_TEST_REDIS_CLUSTER=1``: the session's
server and worker keep jobcast's keys on the tests' own cluster; Celery's broker is a
standalone Redis). The rest of the suites run there too, unchanged.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from notifier.contract.events import status_update
from notifier.contract.settings import get_settings
from notifier.core.bus import publish_sync
from tests.support.failover import every_job_ends_once, produce_jobs
from tests.support.helpers import NativeClient
from tests.support.keyspace import user_partition
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]

USER = "cluster-user-1"
JOBS = 12


def master_of(client: Any, key: str) -> int:
    """The port of the master serving ``key``'s slot."""
    client.nodes_manager.initialize()
    return int(client.get_node_from_key(key).port)


def replica_in_sync(port: int, key: str) -> None:
    """Wait until the master on ``port`` has a replica holding all of its writes (a node
    restarted by an earlier test may still be loading them)."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=15) as master:
        master.set(key, "sync")
        assert master.execute_command("WAIT", 1, 10_000) >= 1, f"no replica of {port} in sync"


async def test_a_master_killed_mid_stream_loses_no_confirmed_terminal_event(
    redis_cluster: RedisCluster, redis_client: Any, tokens: Any, native_client: Any
) -> None:
    client: NativeClient = await native_client(tokens.make(USER))
    part = user_partition(USER)
    victim = master_of(redis_client, part.events)
    replica_in_sync(victim, f"{part.base}:sync")
    producer_client = redis_cluster.client()
    halfway, resume = threading.Event(), threading.Event()
    producer = threading.Thread(
        target=produce_jobs,
        args=(producer_client, get_settings(), USER, halfway),
        kwargs={"jobs": JOBS, "resume": resume},
        daemon=True,
    )
    producer.start()
    try:
        assert halfway.wait(30), "the producer did not get going"
        redis_cluster.kill(victim)
        resume.set()
        # Readers resume on the promoted replica: every job's end arrives, exactly once.
        await every_job_ends_once(client, producer, JOBS)
        assert master_of(redis_client, part.events) != victim
    finally:
        resume.set()
        producer_client.close()
        redis_cluster.restart(victim)


async def test_an_event_lost_in_a_failover_is_not_recovered_as_complete(
    redis_cluster: RedisCluster, redis_client: Any, tokens: Any, native_client: Any
) -> None:
    """An id that did not survive the failover gives ``recovered: false``, not a replay
    that pretends to be complete."""
    token = tokens.make(USER)
    part = user_partition(USER)
    publish_sync(redis_client, status_update("lost-job", USER, "queued"), get_settings())
    first: NativeClient = await native_client(token)
    await first.request("subscribe_job", jobId="lost-job")
    victim = master_of(redis_client, part.events)
    replica_in_sync(victim, f"{part.base}:sync")
    # An entry the replica never gets (as when the master dies before replicating it):
    # written with replication switched off for this script.
    unreplicated = redis_client.eval(
        "redis.set_repl(redis.REPL_NONE) "
        "return redis.call('XADD', KEYS[1], '*', 'r', 'job', 't', 'job_status_update', "
        "'u', ARGV[1], 'j', 'lost-job', 'c', '', 'p', ARGV[2])",
        1,
        part.events,
        USER,
        '{"type":"job_status_update","jobId":"lost-job","timestamp":1,'
        '"data":{"status":"processing","progress":50}}',
    )
    seen = await first.wait_for_type("job_status_update", eventId=unreplicated)
    redis_cluster.kill(victim)
    try:
        assert wait_until(lambda: master_of(redis_client, part.events) != victim, 20)
        again: NativeClient = await native_client(token, query={"lastEventId": seen["eventId"]})
        welcome = again.messages[0]
        assert welcome["type"] == "connection_established"
        assert welcome["recovered"] is False, again.describe()
        # The snapshot says what survived.
        answer = await again.request("subscribe_job", jobId="lost-job")
        assert answer["type"] == "subscribed", answer
        snapshot = await again.wait_for_type("job_status_update", jobId="lost-job")
        assert snapshot["snapshot"] is True and snapshot["data"]["status"] == "queued"
    finally:
        redis_cluster.restart(victim)
