"""A local Redis Cluster for W8: 3 masters and 3 replicas on free 127.0.0.1 ports.

The nodes are the launcher's (:mod:`api.local_cluster`: the same ``redis-server``
arguments, ``redis-cli --cluster create``, the same health check), started and ended by
PID through the suite's process registry like every other process it runs. It offers what
a run needs of its Redis (:class:`bench.servers.Backend`): the URL and settings jobcast
gets, the masters' PIDs (Redis CPU), ``FLUSHALL``, and ``INFO`` figures summed over the
masters.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from api import local_cluster
from bench.servers import (
    PROCS,
    BenchError,
    RedisServer,
    net_output,
    parse_command_calls,
    redis_server_binary,
    resp_command,
)


class BenchCluster:
    """``broker``: the suite's standalone Redis, Celery's broker (kombu has no cluster
    transport, so jobcast requires ``CELERY_BROKER_URL`` in cluster mode)."""

    def __init__(self, workdir: Path, broker: RedisServer) -> None:
        self.workdir = workdir / "cluster"
        self.broker = broker
        self.ports = local_cluster.free_ports()
        self.masters = self.ports[:3]
        self.url = f"redis://{local_cluster.HOST}:{self.masters[0]}/0"
        self.procs: dict[int, subprocess.Popen[Any]] = {}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = redis_server_binary()
        for port in self.ports:
            logfile = open(self.workdir / f"redis-{port}.log", "w")
            argv = local_cluster.node_argv(binary, port, self.workdir)
            self.procs[port] = PROCS.spawn(
                f"redis-{port}", argv, stdout=logfile, stderr=subprocess.STDOUT
            )
        try:
            masters = local_cluster.create(self.ports)
        except local_cluster.ClusterError as exc:
            raise BenchError(f"the local cluster did not start: {exc}") from exc
        if sorted(masters) != sorted(self.masters):
            raise BenchError(f"redis-cli made {masters} the masters, not {self.masters}")

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            PROCS.stop(proc)
        self.procs = {}

    @property
    def pids(self) -> list[int]:
        return [self.procs[port].pid for port in self.masters]

    @property
    def replica_pids(self) -> list[int]:
        return [self.procs[port].pid for port in self.ports[3:]]

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.url,
            "JOBCAST_REDIS_CLUSTER": "true",
            "CELERY_BROKER_URL": self.broker.url,
            "CELERY_RESULT_BACKEND": self.broker.url,
        }

    def _info(self, section: str) -> list[str]:
        return [resp_command(port, "INFO", section) or "" for port in self.masters]

    def flush(self) -> None:
        for port in self.masters:
            resp_command(port, "FLUSHALL")

    def command_calls(self, field: str = "calls") -> dict[str, int]:
        """Calls (or ``field``) per command so far, summed over the masters."""
        calls: dict[str, int] = {}
        for text in self._info("commandstats"):
            for name, n in parse_command_calls(text, field).items():
                calls[name] = calls.get(name, 0) + n
        return calls

    def output_bytes(self) -> tuple[int, int]:
        """Bytes sent so far, all and to replicas (:func:`net_output`), summed over the
        masters."""
        each = [net_output(text) for text in self._info("stats")]
        return sum(total for total, _ in each), sum(repl for _, repl in each)
