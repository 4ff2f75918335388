"""The launcher's child processes: start them, watch them, stop them.

Each child runs in its own process group with its output in ``<run-dir>/<name>.log``
(with ``echo_logs``, also on stdout, each line prefixed ``[name]``); their PIDs are kept in
``<run-dir>/pids`` (JSON) while they run. A stop signal or a child that exits on its own
raises out of :meth:`Supervisor.sleep`, except a child spawned with ``restart=True``: it is
started again (same name, command and environment; its log appended to), unless it keeps
dying (:data:`RESTART_LIMIT` times within :data:`RESTART_WINDOW` seconds).
:meth:`Supervisor.stop_all` gives every child SIGTERM and up to 10 s, then SIGKILLs its
process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from notifier.observability.logs import scrub

STOP_GRACE_SECONDS = 10.0
TAIL_LINES = 40
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: A restartable child that dies this many times within the window is a crash loop: the
#: launcher stops, as for any other child.
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0


class LaunchError(Exception):
    """The stack cannot start; the message says why and what to change."""


class Stopped(Exception):
    """A stop signal arrived."""


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited unexpectedly")
        self.child = child


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    pump: threading.Thread | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = False
    #: When it was (re)started, for the crash-loop rule.
    starts: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        if self.pump is not None:
            self.pump.join(timeout=2)
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, self.log_path.stat().st_size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [scrub(line) for line in text.splitlines()[-lines:]]


@dataclass
class Supervisor:
    run_dir: Path
    echo_logs: bool = False
    children: list[Child] = field(default_factory=list)
    signals: int = 0

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1

    def catch_stop_signals(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.on_signal)

    def check(self) -> None:
        """Raise when a stop signal arrived or a child died; start a restartable child
        again."""
        if self.signals:
            raise Stopped
        for child in list(self.children):
            if child.alive():
                continue
            now = time.monotonic()
            recent = [t for t in child.starts if now - t < RESTART_WINDOW]
            if not child.restart or len(recent) >= RESTART_LIMIT:
                raise ChildDied(child)
            say(
                f"{child.name} (pid {child.pid}) exited with code {child.proc.returncode}; "
                "starting it again (the others go on serving)"
            )
            self._close_log(child)
            self.children.remove(child)
            again = self.spawn(child.name, child.argv, child.env, restart=True, append=True)
            again.starts = [*recent, again.starts[-1]]

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        restart: bool = False,
        append: bool = False,
    ) -> Child:
        self.check()
        log_path = self.run_dir / f"{name}.log"
        log_file = log_path.open("ab" if append else "wb")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.echo_logs else log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: Ctrl-C reaches the launcher only
            )
        except OSError as exc:
            log_file.close()
            raise LaunchError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        child = Child(name, proc, log_path, log_file, None, argv, env, restart, [time.monotonic()])
        if self.echo_logs:
            child.pump = threading.Thread(
                target=_pump, args=(child,), name=f"log-{name}", daemon=True
            )
            child.pump.start()
        self.children.append(child)
        self.write_pids()
        say(f"started {name}: pid={proc.pid} log={log_path}")
        return child

    def write_pids(self) -> None:
        """``<run-dir>/pids``, replaced at once: a reader never sees it half written."""
        pids = {child.name: child.pid for child in self.children}
        path = self.run_dir / "pids"
        draft = path.with_name("pids.tmp")
        draft.write_text(json.dumps(pids) + "\n")
        draft.replace(path)

    def stop_all(self, last: str = "") -> None:
        """SIGTERM, up to 10 s, SIGKILL: the children in reverse order of start, then the
        one named ``last`` (which the others need to stop, as Redis)."""
        first = [child for child in reversed(self.children) if child.name != last]
        then = [child for child in self.children if child.name == last]
        for group in (first, then):
            self._stop(group)
        for child in self.children:
            self._close_log(child)
        self.children.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "pids").unlink()

    @staticmethod
    def _close_log(child: Child) -> None:
        if child.pump is not None:
            child.pump.join(timeout=2)
        child.log_file.close()

    def _stop(self, group: Iterable[Child]) -> None:
        group = list(group)
        for child in group:
            if child.alive():
                say(f"stopping {child.name} (pid {child.pid}): SIGTERM")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        signals_seen = self.signals
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(c.alive() for c in group) and time.monotonic() < deadline:
            if self.signals > signals_seen:  # asked (again) to stop: do not wait
                break
            time.sleep(0.1)
        for child in group:
            if child.alive():
                say(f"{child.name} (pid {child.pid}) still running: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.proc.wait()
            # Anything left in its process group (e.g. an orphaned pool process) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)


def _pump(child: Child) -> None:
    stream = child.proc.stdout
    if stream is None:
        return
    for raw in iter(stream.readline, b""):
        child.log_file.write(raw)
        child.log_file.flush()
        text = raw.decode("utf-8", "replace").rstrip("\n")
        print(f"[{child.name}] {scrub(text)}", flush=True)
    stream.close()


# --- readiness probes


def connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def http_base(host: str, port: int) -> str:
    host = connect_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((connect_host(host), port), timeout=0.3):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None
