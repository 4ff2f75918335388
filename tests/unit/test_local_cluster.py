"""``api.local_cluster`` without a cluster: the node arguments, the port checks, and the
launcher stopping its Redis children last (``tests/integration/cli/test_run_cluster.py``
starts real clusters)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from api import local_cluster
from api.launcher import is_redis, stop_redis_last
from api.supervise import Supervisor


def test_a_node_keeps_only_its_nodes_conf_on_disk(tmp_path: Path) -> None:
    argv = local_cluster.node_argv("/usr/bin/redis-server", 7000, tmp_path)
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "/usr/bin/redis-server"
    assert options["--port"] == "7000"
    assert options["--bind"] == "127.0.0.1"
    assert options["--cluster-enabled"] == "yes"
    assert options["--cluster-config-file"] == str(tmp_path / "nodes-7000.conf")
    assert options["--cluster-node-timeout"] == "1000"
    assert (options["--save"], options["--appendonly"]) == ("", "no")
    assert options["--repl-diskless-load"] == "swapdb"
    assert options["--dir"] == str(tmp_path)


def test_free_ports_have_free_bus_ports() -> None:
    ports = local_cluster.free_ports()
    assert len(set(ports)) == local_cluster.NODES
    assert all(port + local_cluster.BUS_OFFSET <= 65535 for port in ports)
    local_cluster.check_ports(ports)  # free, in range, distinct


@pytest.mark.parametrize(
    ("ports", "says"),
    [
        ([7000, 7001, 7002], "must list 6 distinct ports"),
        ([7000, 7000, 7001, 7002, 7003, 7004], "must list 6 distinct ports"),
        ([7000, 7001, 7002, 7003, 7004, 60000], "port 60000 is out of range"),
    ],
)
def test_cluster_ports_are_checked(ports: list[int], says: str) -> None:
    with pytest.raises(local_cluster.ClusterError, match=says):
        local_cluster.check_ports(ports)


def test_a_cluster_port_in_use_is_named() -> None:
    ports = local_cluster.free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[2] + local_cluster.BUS_OFFSET))
        with pytest.raises(local_cluster.ClusterError, match=f"port {ports[2] + 10000} is"):
            local_cluster.check_ports(ports)


def test_the_redis_children_stop_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    processes = Supervisor(run_dir=tmp_path)
    sleep = shutil.which("sleep") or "/bin/sleep"
    names = ["redis-7000", "redis-7001", "redis", "worker", "api"]
    for name in names:
        processes.spawn(name, [sleep, "30"], {})
    assert [is_redis(name) for name in names] == [True, True, True, False, False]
    stop_redis_last(processes)
    stopped = [
        line.split()[2]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("[launcher] stopping ")
    ]
    assert stopped == ["api", "worker", "redis", "redis-7001", "redis-7000"]
    assert not processes.children
    assert not (tmp_path / "pids").exists()
