"""A RabbitMQ node of the tests' own, for Celery's broker (jobcast's events stay in Redis).

:class:`RabbitMQNode` runs Debian's ``rabbitmq-server`` (the script under
``/usr/lib/rabbitmq/bin``: the ``/usr/sbin`` wrapper would ``su`` to the rabbitmq user,
out of reach of our process group) with a node name, AMQP port, distribution port, data,
log and config directories and Erlang cookie (``HOME``) of its own, all on 127.0.0.1, so
a RabbitMQ the machine already runs is never touched; the machine's epmd (4369) is shared,
which is fine under another node name. The management plugin is enabled on a free port
too (Flower reads queue lengths from its HTTP API: ``--broker_api``). Stopped with
``rabbitmqctl stop``, then SIGTERM and SIGKILL of the process group we started.

:func:`celery_app_on`: for as long as the block runs, this process's Celery apps publish
to (and control workers through) that broker, and the children it starts inherit it
(``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` in ``os.environ``, which Celery's
settings read before the app's own ``broker=``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import free_port, missing_tool
from tests.support.processes import START_TIMEOUT, log_tail, stop_process
from tests.support.waiting import wait_until

#: Debian's rabbitmq-server package: the scripts the /usr/sbin wrappers run.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_script(name: str) -> str:
    """The real ``rabbitmq-server`` or ``rabbitmqctl`` script, or a skip (a failure
    under CI) when the package is missing."""
    script = RABBITMQ_BIN / name
    if not script.is_file() or shutil.which("erl") is None:
        missing_tool("rabbitmq-server is missing (Debian: apt-get install rabbitmq-server)")
    return str(script)


class RabbitMQNode:
    """A ``rabbitmq-server`` node we own: ``url`` is its AMQP URL (user guest),
    ``management_url`` the base of its management HTTP API."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.management_port = free_port()
        self.node = f"jobcast-test-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.management_url = f"http://guest:guest@127.0.0.1:{self.management_port}/api/"
        self.workdir = workdir
        self.log_path = workdir / "rabbitmq-server.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        base = self.workdir
        return {
            **os.environ,
            "HOME": str(base / "home"),  # the node's and rabbitmqctl's Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        }

    def _configure(self) -> None:
        (self.workdir / "home").mkdir(exist_ok=True)
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
        )
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")

    def _answers(self) -> bool:
        """AMQP accepts guest and the management API answers."""
        import httpx
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
            response = httpx.get(f"{self.management_url}overview", timeout=2)
        except Exception:  # anything short of an answer: not ready yet
            return False
        return response.status_code == 200

    def start(self) -> None:
        server = rabbitmq_script("rabbitmq-server")
        self._configure()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [server],
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc
        # Its boot (with the management plugin) takes a few seconds; on 2 busy cores more.
        if not wait_until(lambda: proc.poll() is not None or self._answers(), 3 * START_TIMEOUT):
            self.stop()
            pytest.fail(f"rabbitmq-server did not answer:\n{self.log_tail()}")
        if proc.poll() is not None:
            pytest.fail(f"rabbitmq-server exited ({proc.returncode}):\n{self.log_tail()}")

    def log_tail(self) -> str:
        logs = [self.log_path, self.workdir / "log" / f"{self.node}.log"]
        return "\n".join(f"--- {path}\n{log_tail(path)}" for path in logs)

    def stop(self) -> None:
        """``rabbitmqctl stop`` (bounded), then SIGTERM/SIGKILL of our process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(
                    [rabbitmq_script("rabbitmqctl"), "-n", self.node, "stop"],
                    env=self.env(),
                    capture_output=True,
                    timeout=START_TIMEOUT,
                    check=False,
                )
        stop_process(self.proc, group=True)


@contextlib.contextmanager
def running_rabbitmq(workdir: Path) -> Iterator[RabbitMQNode]:
    """A :class:`RabbitMQNode` in ``workdir``, answering until the block ends."""
    node = RabbitMQNode(workdir)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def reset_connections(app: Any, *, close: bool) -> None:
    """Forget ``app``'s broker connections (its pool, its producers, its control's
    mailbox): the next publish connects to the broker its settings name now. ``close``
    also closes the pool: only one of this block's own (kombu's pools are shared by every
    app of the process using the same broker URL; closing the Redis one would break them)."""
    if close and app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None
    app.__dict__.pop("control", None)


@contextlib.contextmanager
def celery_app_on(apps: list[Any], broker_url: str, result_backend: str) -> Iterator[None]:
    """Within the block, ``apps`` (Celery apps of this process) and the children started
    with :func:`tests.support.env.child_env` use ``broker_url`` and ``result_backend``."""
    names = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(CELERY_BROKER_URL=broker_url, CELERY_RESULT_BACKEND=result_backend)
    for app in apps:
        reset_connections(app, close=False)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for app in apps:
            reset_connections(app, close=True)  # the RabbitMQ pool
