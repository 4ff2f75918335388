"""A Sentinel-managed Redis of the tests' own: a master, a replica and three sentinels on
free 127.0.0.1 ports (``redis-server`` and ``redis-server --sentinel``), stopped by PID.

``kill_master()`` is SIGKILL of the current master: the sentinels (quorum 2, master down
after 1 s) promote the replica within a few seconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from tests.support.env import free_port
from tests.support.processes import (
    START_TIMEOUT,
    RedisServer,
    log_tail,
    redis_binary,
    stop_process,
)
from tests.support.waiting import wait_until

MASTER_NAME = "jobcast"


class SentinelGroup:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        master_port = free_port()
        self.servers = [
            RedisServer(master_port, self._dir("master")),
            RedisServer(
                free_port(),
                self._dir("replica"),
                extra=["--replicaof", "127.0.0.1", str(master_port)],
            ),
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def addresses(self) -> str:
        """``JOBCAST_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        master = self.servers[0].port
        for port in self.sentinel_ports:
            folder = self._dir(f"sentinel-{port}")
            conf = folder / "sentinel.conf"  # a sentinel rewrites its configuration file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            with (folder / "sentinel.log").open("ab") as log:
                self.sentinels.append(
                    subprocess.Popen(
                        [redis_binary(), str(conf), "--sentinel"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        if not wait_until(self._ready, START_TIMEOUT):
            logs = "\n".join(
                log_tail(self.workdir / f"sentinel-{port}" / "sentinel.log", 10)
                for port in self.sentinel_ports
            )
            pytest.fail(f"the sentinels did not see the master and its replica:\n{logs}")

    def _ready(self) -> bool:
        """Every sentinel knows the master, its replica and the two other sentinels."""
        try:
            for port in self.sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as s:
                    info = s.sentinel_master(MASTER_NAME)
                    if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                        return False
            return True
        except (redis.RedisError, OSError, KeyError):
            return False

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as s:
            _, port = s.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def kill_master(self) -> int:
        """SIGKILL the current master; returns its port."""
        port = self.master_port()
        for server in self.servers:
            if server.port == port:
                server.kill()
        return port

    def stop(self) -> None:
        for proc in self.sentinels:
            stop_process(proc, group=True)
        for server in self.servers:
            server.stop()
