"""api/loadbalancer.py: the HAProxy and nginx configurations, made from one model.

The committed deploy/haproxy.cfg and deploy/nginx.conf are what the module makes (so what
the tests run behind is what is deployed), and both programs accept what it makes: HAProxy
(``haproxy -c``) and nginx (``nginx -t``), Debian's packages, which ``.ci/run`` installs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from api import loadbalancer
from api.loadbalancer import Server, Topology
from notifier.contract.keys import keyspace
from tests.support.env import missing_tool


def local(tmp_path: Path, balance: str = "uid") -> Topology:
    return loadbalancer.on_this_machine(
        tmp_path,
        bind="127.0.0.1:18080",
        notifiers=[Server(f"notifier-{n}", f"127.0.0.1:1808{n}") for n in (1, 2, 3)],
        heartbeat_seconds=25,
        balance=balance,
    )


def test_the_committed_configurations_are_what_the_module_makes() -> None:
    assert loadbalancer.main(["--check"]) == 0, "run: python -m api.loadbalancer"


def test_haproxy_hashes_the_hint_consistently_and_checks_readiness(tmp_path: Path) -> None:
    text = loadbalancer.haproxy_config(local(tmp_path))
    notifiers = text.split("backend notifiers\n")[1].split("\n\n")[0]
    # The user's partition, as jobcast's keyspace computes it, on a consistent-hash ring.
    assert "balance hash url_param(uid),url_dec,crc32,mod(64)" in notifiers
    assert "hash-type consistent" in notifiers
    assert "option httpchk GET /readyz" in notifiers
    assert "option forwardfor" in text
    assert "timeout tunnel 1h" in text
    assert "timeout client 60s" in text  # above a long-poll and the heartbeat
    assert [line.split()[1] for line in notifiers.splitlines() if "server " in line] == [
        "notifier-1",
        "notifier-2",
        "notifier-3",
    ]
    assert "balance hash" not in loadbalancer.haproxy_config(local(tmp_path, "roundrobin"))


def test_nginx_hashes_the_hint_and_upgrades_websockets(tmp_path: Path) -> None:
    text = loadbalancer.nginx_config(local(tmp_path))
    assert "hash $jobcast_route consistent;" in text
    assert "js_set $jobcast_route jobcast.route;" in text
    assert f"js_import jobcast from {loadbalancer.NGINX_ROUTE_JS};" in text
    assert "default 64;" in text  # $jobcast_partitions
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_read_timeout 60s;" in text


def test_bad_topologies_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one notifier"):
        Topology(bind=":8080", notifiers=[])
    with pytest.raises(ValueError, match="is not host:port"):
        Server("notifier-1", "notifier-1")
    with pytest.raises(ValueError, match="uid or roundrobin"):
        Topology(bind=":8080", notifiers=[Server("n", "h:1")], balance="random")


def test_haproxy_accepts_the_configurations(tmp_path: Path) -> None:
    binary = loadbalancer.haproxy_binary()
    if binary is None:
        missing_tool("haproxy is not installed (apt-get install haproxy)")
    for name, text in (
        ("local.cfg", loadbalancer.haproxy_config(local(tmp_path))),
        ("deploy.cfg", (loadbalancer.DEPLOY / "haproxy.cfg").read_text()),
    ):
        path = tmp_path / name
        path.write_text(text)
        done = subprocess.run(
            [binary, "-c", "-f", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        missing_tool("nginx is not installed (apt-get install nginx)")
    conf = tmp_path / "nginx.conf"
    conf.write_text(loadbalancer.nginx_config(local(tmp_path)))
    done = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_nginx_route_function_computes_jobcasts_partition(tmp_path: Path) -> None:
    """deploy/nginx/jobcast_route.js (njs, plain ES5) under Node: CRC-32 of the UTF-8 id
    modulo the partitions, what notifier.contract.keys gives, for ASCII, non-ASCII and
    numeric ids and two partition counts."""
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not on PATH (install Node.js)")
    users = ["alice", "1", "42", "bob-2", "ünï-çødé", "用户", "u" * 200]
    module = tmp_path / "route.mjs"
    module.write_text(loadbalancer.NGINX_ROUTE_JS.read_text())
    script = (
        f"import m from {json.dumps(module.as_uri())};"
        "const users = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify([64, 7].map((p) => users.map((u) => m.partition(u, p)))));"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script, json.dumps(users)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        [keyspace(count).index_of(user) for user in users] for count in (64, 7)
    ]
