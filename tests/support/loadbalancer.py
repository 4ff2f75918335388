"""A real load balancer in front of real notifier processes, for the scaling tests.

- :class:`LoadBalancer`: HAProxy or nginx (the binaries the system has) with the
  configuration :mod:`api.loadbalancer` makes, i.e. what ``deploy/`` ships, on a free port
  of 127.0.0.1, in the foreground; ``reload(topology)`` as operators reload them (a new
  HAProxy with ``-sf <old pid>``; SIGHUP to nginx's master); ``stop()`` by PID.
- :class:`Notifiers`: ``python -m api`` processes (a :class:`ServerProc` each, named
  ``notifier-<n>``, JSON logs) started side by side; a test ``kill9()``s one, or
  ``start(1)``s another (a notifier joining); :func:`metrics` and :func:`log_records` read
  what each says.

Every process is started here and stopped by PID (SIGTERM, a bounded wait, SIGKILL).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.loadbalancer import Server, Topology, haproxy_config, nginx_config, on_this_machine
from tests.support.env import child_env, free_port, missing_tool
from tests.support.fault_helpers import ServerProc, parse_metrics, start_all
from tests.support.processes import START_TIMEOUT, log_tail, ready_or_fail, stop_process
from tests.support.waiting import wait_until

BINARIES = {"haproxy": "haproxy", "nginx": "nginx"}
#: Old processes hand their connections over this fast on a reload (tests: short).
DRAIN_SECONDS = 3


def lb_binary(kind: str) -> str:
    """The path of ``haproxy`` or ``nginx`` (``/usr/sbin`` is often not on a user's PATH);
    missing: :func:`missing_tool` (a failure under CI)."""
    name = BINARIES[kind]
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        missing_tool(f"{name} is not installed (apt-get install {name})")
    return found


class LoadBalancer:
    """HAProxy or nginx on ``127.0.0.1:<port>`` in front of ``topology``'s notifiers."""

    def __init__(self, kind: str, workdir: Path, port: int | None = None) -> None:
        assert kind in BINARIES, kind
        self.kind = kind
        self.binary = lb_binary(kind)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.native_url = f"ws://127.0.0.1:{self.port}/ws/job-status-native"
        self.dir = workdir / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Every process started (a reloaded HAProxy's old one drains, then exits).
        self.procs: list[subprocess.Popen[bytes]] = []
        self._generation = 0

    def topology(self, notifiers: Sequence[ServerProc], *, balance: str = "uid") -> Topology:
        return on_this_machine(
            self.dir,
            bind=f"127.0.0.1:{self.port}",
            notifiers=[Server(n.name, f"127.0.0.1:{n.port}") for n in notifiers],
            heartbeat_seconds=float(child_env()["JOBCAST_HEARTBEAT_SECONDS"]),
            drain_seconds=DRAIN_SECONDS,
            balance=balance,
        )

    def _write(self, topology: Topology) -> Path:
        self._generation += 1
        if self.kind == "haproxy":
            path, text = self.dir / f"haproxy-{self._generation}.cfg", haproxy_config(topology)
        else:
            path, text = self.dir / "nginx.conf", nginx_config(topology)
        path.write_text(text)
        return path

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def start(self, topology: Topology) -> None:
        assert self.proc is None, "already started"
        config = self._write(topology)
        if self.kind == "haproxy":
            self.proc = self._spawn([self.binary, "-db", "-f", str(config)])
        else:
            self.proc = self._spawn(
                [self.binary, "-p", str(self.dir), "-c", str(config), "-g", "daemon off;"]
            )
        self._wait_ready()

    def reload(self, topology: Topology) -> None:
        """The configuration for ``topology``, as an operator reloads: the old process (or
        nginx's old workers) keeps what it holds for ``drain_seconds`` at most."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        config = self._write(topology)
        if self.kind == "haproxy":
            old = self.proc
            self.proc = self._spawn([self.binary, "-db", "-f", str(config), "-sf", str(old.pid)])
        else:
            started = self._workers_started()
            self.proc.send_signal(signal.SIGHUP)
            # The master answers throughout: the new configuration is in force once it has
            # started its new workers.
            if not wait_until(lambda: self._workers_started() > started, START_TIMEOUT):
                pytest.fail(f"nginx did not reload:\n{self.error_log()}")
        self._wait_ready()

    def _workers_started(self) -> int:
        path = self.dir / "nginx-error.log"
        return (
            path.read_text(errors="replace").count("start worker process") if path.exists() else 0
        )

    def _wait_ready(self) -> None:
        """Answering (``/readyz`` through it is 200)."""
        proc = self.proc
        assert proc is not None
        ready_or_fail(
            proc,
            f"{self.url}/readyz",
            f"{self.kind} on port {self.port}",
            lambda: f"{log_tail(self.log_path)}\n{self.error_log()}",
            self.stop,
            interval=0.1,
        )

    def error_log(self) -> str:
        path = self.dir / "nginx-error.log"
        return log_tail(path) if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, group=True)


class Notifiers:
    """``python -m api`` processes named ``notifier-1`` ... on free ports, with JSON logs;
    ``kill9()`` one, ``start()`` more (a notifier joining)."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.log_dir = log_dir
        self.env = child_env(JOBCAST_LOG_FORMAT="json", **env)
        self.procs: list[ServerProc] = []

    def start(self, count: int) -> list[ServerProc]:
        """``count`` more, started side by side (blocking: from a thread in async tests)."""
        new = [
            ServerProc(self.log_dir, env=self.env, name=f"notifier-{len(self.procs) + n}")
            for n in range(1, count + 1)
        ]
        self.procs += new
        start_all(*new)
        return new

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def metrics(proc: ServerProc) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A notifier's ``/metrics``, parsed."""
    return parse_metrics(httpx.get(f"{proc.url}/metrics", timeout=5).text)


def log_records(proc: ServerProc, msg: str) -> list[dict[str, Any]]:
    """The JSON log records of ``proc`` whose message is ``msg``."""
    records = []
    for line in proc.log_text().splitlines():
        if line.startswith("{") and f'"msg": "{msg}"' in line:
            records.append(json.loads(line))
    return records
