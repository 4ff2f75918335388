"""``make run-cluster`` (``python -m api.launcher --cluster``) and the tests' own cluster.

- The tests' cluster (:class:`tests.support.redis_cluster.RedisCluster`): 3 masters and
  3 replicas from ``redis-server``; ``kill -9`` of a master promotes its replica within
  seconds, and the killed node started again rejoins as a replica.
- The launcher in cluster mode: six nodes ``redis-<port>`` on ``JOBCAST_CLUSTER_PORTS``
  and a broker Redis, three notifiers ``notifier-<n>`` behind HAProxy on
  ``JOBCAST_HTTP_PORT``, all in ``<run-dir>/pids``; the cluster healthy with the first
  three ports as masters; a demo job submitted over REST (through HAProxy) runs to the end
  on it; SIGINT stops every process it started.
- A notifier killed with ``kill -9`` is started again by the launcher, under its name in
  ``<run-dir>/pids``, while a client served by another notifier stays connected and gets
  its job's events, and HAProxy keeps answering ``/readyz``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api import local_cluster
from tests.support.fault_helpers import RecordingClient, parse_metrics
from tests.support.launcher_run import LauncherRun, alive
from tests.support.redis_cluster import RedisCluster, running_cluster
from tests.support.waiting import wait_until, wait_until_async

pytestmark = pytest.mark.integration

FAILOVER_BOUND = 10.0  # kill -9 of a master to its replica serving (node timeout 1 s)
START_BOUND = 90.0  # launcher start to printed token (7 Redis, worker, uvicorn, Flower)
STOP_BOUND = 30.0  # SIGINT to exit: 10 s grace for the apps, 10 s for Redis, margin


def node_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with running_cluster(tmp_path / "cluster") as started:
        yield started


def test_cluster_fails_over_to_the_replica_and_takes_the_old_master_back(
    cluster: RedisCluster,
) -> None:
    ports = cluster.ports
    assert all(local_cluster.cluster_state(port) == "ok" for port in ports)
    assert cluster.master_ports() == sorted(ports[:3])
    client = cluster.client()
    try:
        for n in range(30):  # keys on every master
            client.set(f"key-{n}", n)
        victim = ports[0]
        (replica,) = local_cluster.replicas_of(ports[1])[victim]
        held = node_client(victim).dbsize()
        assert held > 0
        assert wait_until(lambda: node_client(replica).dbsize() == held, FAILOVER_BOUND)

        cluster.kill(victim)
        assert wait_until(
            lambda: replica in cluster.master_ports() and victim not in cluster.master_ports(),
            FAILOVER_BOUND,
        ), f"no failover from {victim} to {replica}: masters {cluster.master_ports()}"
        assert cluster.url != f"redis://127.0.0.1:{victim}/0"

        def writes() -> bool:
            try:
                return bool(client.set("after-failover", "1"))
            except redis.RedisError:
                return False

        assert wait_until(writes, FAILOVER_BOUND, interval=0.2)
        # What the replica held when its master was killed is all there.
        assert [client.get(f"key-{n}") for n in range(30)] == [str(n) for n in range(30)]

        cluster.restart(victim)
        assert local_cluster.replicas_of(replica)[replica] == [victim]
        cluster.flush()
        assert client.dbsize() == 0
    finally:
        client.close()


class ClusterRun(LauncherRun):
    """``python -m api.launcher --cluster`` with the cluster on free ports of the test's."""

    def __init__(self, tmp_path: Path) -> None:
        self.cluster_ports = local_cluster.free_ports()
        ports = ",".join(map(str, self.cluster_ports))
        super().__init__(tmp_path, "--cluster", JOBCAST_CLUSTER_PORTS=ports)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ClusterRun]:
    with ClusterRun(tmp_path) as run:
        yield run


def check_topology(launcher: ClusterRun) -> None:
    """``<run-dir>/pids`` names the six nodes, a broker Redis, the worker, API and Flower;
    the cluster is healthy with the first three ports as masters."""
    launcher.wait_for("pids: ", START_BOUND)
    ports = launcher.cluster_ports
    pids = launcher.pids
    assert json.loads((launcher.run_dir / "pids").read_text()) == pids
    nodes = {f"redis-{port}" for port in ports}
    brokers = {name for name in pids if name.startswith("redis-")} - nodes
    assert len(brokers) == 1, pids
    notifiers = {"notifier-1", "notifier-2", "notifier-3"}
    assert set(pids) == nodes | brokers | notifiers | {"haproxy", "worker", "flower"}
    assert all(local_cluster.cluster_state(port) == "ok" for port in ports)
    assert local_cluster.masters(ports[0]) == sorted(ports[:3])
    assert all(len(r) == 1 for r in local_cluster.replicas_of(ports[0]).values())


def test_run_cluster_starts_the_cluster_and_stops_it_on_sigint(launcher: ClusterRun) -> None:
    check_topology(launcher)
    launcher.stop_cleanly(signal.SIGINT, STOP_BOUND)
    assert "[launcher] stopped" in launcher.output
    stops = [line for line in launcher.output if line.startswith("[launcher] stopping ")]
    redis_first = next(i for i, line in enumerate(stops) if "stopping redis-" in line)
    assert all("stopping redis-" in line for line in stops[redis_first:]), stops


def test_run_cluster_runs_a_demo_job_on_the_cluster(launcher: ClusterRun) -> None:
    check_topology(launcher)
    broker = next(name for name in launcher.pids if name.startswith("redis-")
                  and int(name[6:]) not in launcher.cluster_ports)  # fmt: skip
    token = launcher.wait_for("token: ", START_BOUND).split()[1]
    banner = launcher.transcript()
    assert f"  redis:  redis://127.0.0.1:{launcher.cluster_ports[0]}/0" in banner
    assert f"  broker: redis://127.0.0.1:{broker[6:]}/0" in banner
    launcher.run_demo_job(token)  # the worker the launcher started runs it on the cluster
    launcher.stop_cleanly(signal.SIGINT, STOP_BOUND)


def notifier_ports(launcher: ClusterRun) -> dict[str, int]:
    """``notifier-<n>`` -> port, from the banner's ``behind:`` line."""
    line = launcher.wait_for("  behind: ", START_BOUND)
    return {name: int(port) for name, port in re.findall(r"(notifier-\d) 127\.0\.0\.1:(\d+)", line)}


def connections(port: int) -> float:
    """The notifier's open connections (``jobcast_connections``); -1 while it does not
    answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1
    return sum(v for (name, _), v in parse_metrics(text).items() if name == "jobcast_connections")


async def test_run_cluster_restarts_a_dead_notifier_while_the_others_serve(
    launcher: ClusterRun,
) -> None:
    check_topology(launcher)
    ports = notifier_ports(launcher)
    assert set(ports) == {"notifier-1", "notifier-2", "notifier-3"}
    token = launcher.wait_for("token: ", START_BOUND).split()[1]
    admin = launcher.wait_for("admin-token: ", START_BOUND).split()[1]
    url = f"http://127.0.0.1:{launcher.http_port}"
    client = RecordingClient(url, token, user="1", transports=["websocket"])
    try:
        await client.connect()
        assert await wait_until_async(lambda: bool(client.welcomes), 20)
        # HAProxy sent the user (uid=1) to one notifier; kill another one.
        serving = [name for name, port in ports.items() if connections(port) == 1]
        assert len(serving) == 1, {name: connections(port) for name, port in ports.items()}
        victim = next(name for name in sorted(ports) if name != serving[0])
        old_pid = launcher.pids[victim]
        os.kill(old_pid, signal.SIGKILL)
        launcher.wait_for(f"[launcher] {victim} (pid {old_pid}) exited with code -9;", 30)

        def restarted() -> bool:
            pids = json.loads((launcher.run_dir / "pids").read_text())
            return bool(pids.get(victim, old_pid) != old_pid and alive(pids[victim]))

        assert await asyncio.to_thread(wait_until, restarted, 30)
        launcher.pids = json.loads((launcher.run_dir / "pids").read_text())
        assert set(launcher.pids) >= set(ports) | {"haproxy"}
        assert await asyncio.to_thread(
            wait_until, lambda: connections(ports[victim]) == 0, 30
        )  # it serves again (its /metrics answers)

        # Meanwhile the client on another notifier never lost its connection, and gets its
        # job's events through it (a user's connections get their jobs' events).
        job = await asyncio.to_thread(launcher.run_demo_job, token)
        assert await wait_until_async(
            lambda: any(
                m.get("type") == "job_completed" and m.get("jobId") == job["jobId"]
                for m in client.raw
            ),
            20,
        ), client.raw
        assert len(client.welcomes) == 1, client.welcomes
        assert client.transport == "websocket"
        # The statistics, asked through HAProxy, count the connection wherever it is.
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answer = await http.get(
                "/api/v1/websocket/stats", headers={"Authorization": f"Bearer {admin}"}
            )
        stats = answer.json()["data"]
        assert stats["activeConnections"] >= 1, stats
    finally:
        await client.close()
    launcher.stop_cleanly(signal.SIGINT, STOP_BOUND)
