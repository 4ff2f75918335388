"""The load balancer in front of N notifiers: HAProxy and nginx configurations from one model.

    python -m api.loadbalancer            # rewrite deploy/haproxy.cfg and deploy/nginx.conf
    python -m api.loadbalancer --check    # exit 1 if they differ from what this module makes

The committed files (the ``docker compose`` topology), ``make run-cluster`` and the tests'
load balancers are all made here, so what the tests exercise is what is deployed.

Routing (SPEC section 10): every client sends the routing hint ``uid`` (the token's
``sub``) in the query of every Socket.IO and native request. The load balancer computes
the user's partition from it as jobcast does (CRC-32 of the id modulo
``JOBCAST_PARTITIONS``: HAProxy with its ``crc32`` and ``mod`` converters, nginx with a
small njs function, deploy/nginx/jobcast_route.js) and hashes that on a consistent-hash
ring. All of a user's requests (each Engine.IO long-poll, the WebSocket upgrade, every
reconnection) reach one notifier, which is the stickiness long-polling needs; and all the
users of a partition share that notifier, so each partition's streams are read by one
notifier only, which is what lets N notifiers cost Redis about what one costs. (Hashing
the user id itself would scatter a partition's users over every notifier, and every
notifier would read nearly every partition once users outnumber partitions.) When a
notifier leaves or joins, the consistent hash moves about 1/N of the partitions, and their
users. Requests without a hint are hashed on the client's address instead (still sticky,
as Socket.IO's own docs advise); REST and the demo page go round-robin to the API.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.contract.endpoints import NATIVE_PATH, ROUTING_HINT, SOCKETIO_PATH

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
#: nginx's route function (njs): the user's partition from the routing hint.
NGINX_ROUTE_JS = DEPLOY / "nginx" / "jobcast_route.js"
#: The paths hashed on the routing hint: Socket.IO and the native endpoint.
REALTIME_PATHS = (SOCKETIO_PATH, NATIVE_PATH)


@dataclass(frozen=True)
class Server:
    name: str  # notifier-1, api, ...
    address: str  # host:port

    def __post_init__(self) -> None:
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{self.name}: {self.address!r} is not host:port")


@dataclass(frozen=True)
class Topology:
    """What the load balancer listens on and sends where."""

    #: ``host:port`` (``:8080``: every interface).
    bind: str
    notifiers: Sequence[Server]
    #: The REST API and the demo page; empty: the notifiers serve them too (``python -m
    #: api`` is the notifier and the API in one process).
    api: Sequence[Server] = ()
    #: The notifiers' heartbeat (``JOBCAST_HEARTBEAT_SECONDS``): idle timeouts stay above
    #: it and above an Engine.IO long-poll (held up to the ping interval).
    heartbeat_seconds: float = 30.0
    #: On a reload, the old process closes its connections after this long (clients then
    #: reconnect through the new configuration).
    drain_seconds: int = 30
    #: ``uid`` (the product: the user's partition, hashed) or ``roundrobin`` (the tests'
    #: comparison: what every notifier reading every partition costs).
    balance: str = "uid"
    #: ``JOBCAST_PARTITIONS`` of the deployment: the load balancer computes the user's
    #: partition as jobcast does, so it must be the same number.
    partitions: int = 64
    #: Test runs: the files nginx writes (pid, temporary files) go here.
    run_dir: Path | None = None
    #: nginx only: the worker processes' user when started as root.
    nginx_user: str | None = None
    #: nginx only: the njs module to load (a path, or relative to nginx's prefix: the
    #: official image's) and where the route function is (:data:`NGINX_ROUTE_JS`).
    njs_module: str = "modules/ngx_http_js_module.so"
    njs_script: str = "/etc/nginx/jobcast_route.js"
    #: HAProxy: re-resolve the servers' names through this DNS server (Docker's is
    #: 127.0.0.11), so it starts before the containers and follows their restarts.
    resolver: str | None = None

    def __post_init__(self) -> None:
        if not self.notifiers:
            raise ValueError("a load balancer needs at least one notifier")
        if self.balance not in ("uid", "roundrobin"):
            raise ValueError(f"balance: uid or roundrobin, not {self.balance!r}")
        if self.partitions < 1:
            raise ValueError(f"partitions: at least 1, not {self.partitions}")

    @property
    def idle_seconds(self) -> int:
        """Client and server idle timeouts: two heartbeats (a long-poll is held one ping
        interval; a WebSocket sees a ping every heartbeat)."""
        return int(max(60, 2 * self.heartbeat_seconds + 10))

    @property
    def api_servers(self) -> Sequence[Server]:
        return self.api or self.notifiers


#: Where Debian's libnginx-mod-http-js puts the njs module.
DEBIAN_NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"


def on_this_machine(run_dir: Path, **options: Any) -> Topology:
    """A :class:`Topology` for load balancers started here from the repository (the
    launcher's, the tests'): nginx's files in ``run_dir``, its workers as root when it is
    started as root, Debian's njs module where installed, the route function from
    deploy/."""
    njs_module = DEBIAN_NJS_MODULE if Path(DEBIAN_NJS_MODULE).exists() else Topology.njs_module
    defaults: dict[str, Any] = {
        "run_dir": run_dir,
        "nginx_user": "root" if os.geteuid() == 0 else None,
        "njs_module": njs_module,
        "njs_script": str(NGINX_ROUTE_JS),
    }
    return Topology(**{**defaults, **options})


def haproxy_binary() -> str | None:
    """HAProxy from PATH or Debian's /usr/sbin (not on a user's PATH), or None."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    return found


def haproxy_config(t: Topology) -> str:
    """An HAProxy (2.6+: ``balance hash``) configuration for ``t``."""
    idle = t.idle_seconds
    check = "inter 2s fastinter 500ms fall 2 rise 2 on-marked-down shutdown-sessions"
    if t.resolver:
        check += " resolvers dns init-addr last,libc,none"
    hashing = (
        "# The user's partition as jobcast computes it: CRC-32 of the hint, modulo\n"
        "    # JOBCAST_PARTITIONS (which this number must equal).\n"
        f"    balance hash url_param({ROUTING_HINT}),url_dec,crc32,mod({t.partitions})\n"
        "    hash-type consistent"
        if t.balance == "uid"
        else "balance roundrobin"
    )

    def servers(group: Sequence[Server], tracked: bool = False) -> str:
        # One health check per notifier: the other backends follow its state.
        return "\n".join(
            f"    server {s.name} {s.address}"
            + (f" track notifiers/{s.name}" if tracked else " check")
            for s in group
        )

    resolvers = (
        f"""
resolvers dns
    nameserver dns {t.resolver}
    hold valid 5s
"""
        if t.resolver
        else ""
    )
    realtime = " ".join(REALTIME_PATHS)
    return f"""\
# jobcast: HAProxy in front of the notifiers. Made by `python -m api.loadbalancer`
# (api/loadbalancer.py); edit there, not here.
#
# Socket.IO and the native WebSocket are routed by the user's partition, computed from
# the routing hint `uid` (the user id, which every jobcast client adds to every request)
# and hashed on a consistent-hash ring: a user's long-polls, WebSocket and reconnections
# all reach one notifier, and each partition's users share one, which alone reads that
# partition's streams. Without a hint: hashed on the client's address (still sticky).
# REST and the demo page: round-robin.

global
    # No maxconn: HAProxy sizes it from the open-file limit (ulimit -n) it is given.
    log stdout format raw local0 info
    # A reload (haproxy -sf <old pid>): the old process closes what it still holds
    # after this, and those clients reconnect through the new configuration.
    hard-stop-after {t.drain_seconds}s

defaults
    mode http
    log global
    # Only what went wrong: errors, 4xx/5xx (a poll for a session another notifier holds
    # is a 400 while users move), aborted or cut connections.
    option httplog
    option dontlog-normal
    # Nor an idle keep-alive connection the client closed without a request.
    option dontlognull
    timeout connect 5s
    # Above a long-poll (held one ping interval) and the heartbeat.
    timeout client {idle}s
    timeout server {idle}s
    # An upgraded WebSocket: the heartbeat keeps it busy; this only ends dead ones.
    timeout tunnel 1h
    timeout http-request 10s
    timeout http-keep-alive 10s
    # X-Forwarded-For with the client's address: the notifiers believe it only from
    # JOBCAST_TRUSTED_PROXIES (this load balancer's address).
    option forwardfor
    # A request for a server marked down goes to another (the hash ring without it).
    option redispatch
    retries 2
    default-server {check}
{resolvers}
frontend jobcast
    bind {t.bind}
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    acl realtime path_beg {realtime}
    acl hinted url_param({ROUTING_HINT}) -m found
    use_backend notifiers if realtime hinted
    use_backend notifiers_by_address if realtime
    default_backend api

backend notifiers
    {hashing}
    option httpchk GET /readyz
    http-check expect status 200
{servers(t.notifiers)}

backend notifiers_by_address
    {"balance source" if t.balance == "uid" else "balance roundrobin"}
    hash-type consistent
{servers(t.notifiers, tracked=True)}

backend api
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers(t.api_servers, tracked=not t.api)}
"""


def nginx_config(t: Topology) -> str:
    """A whole ``nginx.conf`` (nginx 1.18+ with the njs module) for ``t``. Open-source
    nginx checks servers only passively (a failed connection marks one down for
    ``fail_timeout``)."""
    idle = t.idle_seconds
    run = t.run_dir
    paths = (
        f"""pid {run}/nginx.pid;
error_log {run}/nginx-error.log notice;
"""
        if run
        else "pid /run/nginx.pid;\nerror_log stderr notice;\n"
    )
    temp = (
        "".join(
            f"    {kind}_temp_path {run}/{kind}_temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        if run
        else ""
    )
    route = (
        "hash $jobcast_route consistent;"
        if t.balance == "uid"
        else "# round-robin (the comparison)"
    )

    def servers(group: Sequence[Server]) -> str:
        return "\n".join(
            f"        server {s.address} max_fails=1 fail_timeout=5s;  # {s.name}" for s in group
        )

    proxy = f"""            proxy_http_version 1.1;
            proxy_set_header Host $host;
            # The client's address: the notifiers believe it only from
            # JOBCAST_TRUSTED_PROXIES (this load balancer's address).
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout {idle}s;
            proxy_send_timeout {idle}s;
            proxy_buffering off;"""
    user = f"user {t.nginx_user};\n" if t.nginx_user else ""
    realtime = "|".join(REALTIME_PATHS)
    return f"""\
# jobcast: nginx in front of the notifiers. Made by `python -m api.loadbalancer`
# (api/loadbalancer.py); edit there, not here.
#
# Socket.IO and the native WebSocket are routed by the user's partition, computed from
# the routing hint `uid` (the user id, which every jobcast client adds to every request)
# by jobcast_route.js and hashed on a consistent-hash ring: a user's long-polls, WebSocket
# and reconnections all reach one notifier, and each partition's users share one, which
# alone reads that partition's streams. Without a hint: hashed on the client's address
# (still sticky). REST and the demo page: round-robin.

load_module {t.njs_module};
{user}worker_processes 1;
{paths}# A reload (nginx -s reload): old workers close what they still hold after this, and
# those clients reconnect through the new configuration.
worker_shutdown_timeout {t.drain_seconds}s;

events {{
    worker_connections 20000;
}}

http {{
    access_log off;
{temp}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      close;
    }}
    # The user's partition ("p<n>"), or the client's address without a hint.
    # JOBCAST_PARTITIONS: this number must equal it.
    map "" $jobcast_partitions {{
        default {t.partitions};
    }}
    js_import jobcast from {t.njs_script};
    js_set $jobcast_route jobcast.route;

    upstream notifiers {{
        {route}
{servers(t.notifiers)}
    }}

    upstream api {{
{servers(t.api_servers)}
    }}

    server {{
        listen {t.bind};

        location ~ ^({realtime})(/|$) {{
            proxy_pass http://notifiers;
{proxy}
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}

        location / {{
            proxy_pass http://api;
{proxy}
        }}
    }}
}}
"""


#: The ``docker compose`` topology (docker-compose.yml): three notifiers and the API
#: behind one load balancer on :8080.
COMPOSE = Topology(
    bind=":8080",
    notifiers=[Server(f"notifier-{n}", f"notifier-{n}:8080") for n in (1, 2, 3)],
    api=[Server("api", "api:8080")],
    resolver="127.0.0.11:53",
)
FILES: dict[str, Callable[[], str]] = {
    "haproxy.cfg": lambda: haproxy_config(COMPOSE),
    "nginx.conf": lambda: nginx_config(
        Topology(bind="8080", notifiers=COMPOSE.notifiers, api=COMPOSE.api)
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.loadbalancer", description="Write deploy/haproxy.cfg and nginx.conf"
    )
    parser.add_argument("--check", action="store_true", help="only say whether they differ")
    args = parser.parse_args(argv)
    stale = 0
    for name, make in FILES.items():
        path, text = DEPLOY / name, make()
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), text.splitlines(True), str(path), "generated"
                )
            )
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
