"""A Redis Cluster of the tests' own: 3 masters and 3 replicas on free 127.0.0.1 ports.

The nodes are started with the launcher's code (:mod:`api.local_cluster`: the same
``redis-server`` arguments, ``redis-cli --cluster create``, the same health check) and
stopped by PID only: ``stop()`` is SIGTERM, a bounded wait, then SIGKILL for every node
this object started. ``kill(port)`` is SIGKILL of one node (a failover);
``restart(port)`` starts it again with its own ``nodes-<port>.conf``, so it rejoins (as a
replica, if its replica took over meanwhile).

    with running_cluster(tmp_path) as cluster:
        client = cluster.client()

Ports come from :func:`api.local_cluster.free_ports`, not ``free_port()``: a cluster node
also listens on its port + 10000 (the cluster bus), which must be free and below 65536.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis
import redis.cluster

from api import local_cluster
from tests.support.env import missing_tool
from tests.support.processes import START_TIMEOUT, log_tail, redis_binary, stop_process


class RedisCluster:
    def __init__(self, workdir: Path, ports: list[int] | None = None) -> None:
        self.workdir = workdir
        self.ports = ports or local_cluster.free_ports()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # --- nodes

    def log_path(self, port: int) -> Path:
        return self.workdir / f"redis-{port}.log"

    def _spawn(self, port: int) -> None:
        argv = local_cluster.node_argv(redis_binary(), port, self.workdir)
        with self.log_path(port).open("ab") as log:
            self.procs[port] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _fail(self, message: str) -> NoReturn:
        logs = "\n".join(f"--- {self.log_path(p).name}\n{log_tail(self.log_path(p), 10)}"
                         for p in self.ports)  # fmt: skip
        pytest.fail(f"{message}\n{logs}")

    def start(self) -> None:
        """Start the six nodes, make them a cluster, wait until it is healthy."""
        try:
            local_cluster.redis_cli()
        except local_cluster.ClusterError as exc:
            missing_tool(str(exc))
        self.workdir.mkdir(parents=True, exist_ok=True)
        for port in self.ports:
            self._spawn(port)
        try:
            masters = local_cluster.create(self.ports)
        except local_cluster.ClusterError as exc:
            self._fail(str(exc))
        if masters != self.ports[:3]:  # the order every test's "first master" relies on
            self._fail(f"redis-cli made {masters} the masters, not the first three ports")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: its replica takes over)."""
        proc = self.procs[port]
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again (same ``nodes-<port>.conf``); wait until the
        cluster is healthy with it."""
        if self.procs[port].poll() is None:
            return
        self._spawn(port)
        try:
            local_cluster.wait_healthy(self.ports, START_TIMEOUT)
        except local_cluster.ClusterError as exc:
            self._fail(f"node {port} did not rejoin: {exc}")

    def stop(self) -> None:
        """SIGTERM, a bounded wait, SIGKILL: every node this object started, by PID."""
        for proc in self.procs.values():
            stop_process(proc, group=True)

    # --- what the tests use

    def live_ports(self) -> list[int]:
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """The serving masters, as a live node sees them."""
        for port in self.live_ports():
            found = local_cluster.masters(port)
            if found:
                return found
        return []

    @property
    def url(self) -> str:
        """``REDIS_URL`` for the cluster: the first master, else the first live node."""
        live = self.live_ports()
        port = self.ports[0] if self.ports[0] in live else live[0]
        return f"redis://{local_cluster.HOST}:{port}/0"

    def client(self) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster.from_url(self.url, decode_responses=True)

    def flush(self) -> None:
        """FLUSHALL on every master (the replicas follow)."""
        for port in self.master_ports():
            with redis.Redis(host=local_cluster.HOST, port=port) as client:
                client.flushall()


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[RedisCluster]:
    """A healthy cluster until the block ends, then every node stopped."""
    cluster = RedisCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
