"""A PostgreSQL cluster of the test's own: ``initdb`` into a temporary directory, ``pg_ctl``
on a free port of 127.0.0.1 (and a Unix socket in that directory), one database, stopped by
the postmaster's PID.

``initdb`` and ``postgres`` refuse to run as root. Run as root (CI and these machines), the
cluster's programs run as the ``postgres`` account (which Debian's ``postgresql`` package
creates), else as ``nobody``: ``subprocess`` drops to that user and group
(``user=``/``group=``) and the temporary directory is handed to it (``/tmp``, since pytest's
own temporary directories are private to root). The binaries: ``initdb`` on ``PATH``, else
the newest of Debian's ``/usr/lib/postgresql/*/bin``; without them the test is skipped, or
fails under ``CI`` (``.ci/run`` installs Debian's ``postgresql``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import free_port, missing_tool
from tests.support.processes import STOP_TIMEOUT, log_tail
from tests.support.waiting import wait_until

START_TIMEOUT = 30.0
#: Who runs the cluster when the tests run as root: the first of these accounts that exists.
ACCOUNTS = ("postgres", "nobody")


def postgres_bin() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` (one installation)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [
        Path(path).parent
        for path in sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
            reverse=True,
        )
    ]
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    missing_tool(
        "PostgreSQL's initdb, pg_ctl and postgres not found (Debian: apt-get install postgresql)"
    )


def cluster_account() -> pwd.struct_passwd | None:
    """The account the cluster runs as: None when the tests are not root."""
    if os.geteuid() != 0:
        return None
    for name in ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    missing_tool(f"running as root, and none of the accounts {ACCOUNTS} exists to run PostgreSQL")


class PostgresCluster:
    """``start()`` makes and starts the cluster with a role and a database; ``url`` is
    Celery's ``db+postgresql://`` result backend URL (SQLAlchemy's default
    PostgreSQL driver, psycopg); ``stop()`` stops it by PID and
    removes its directory."""

    user = "jobcast"
    password = "jobcast-test-password"  # a throwaway cluster on 127.0.0.1
    database = "jobcast_results"

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.account = cluster_account()
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="jobcast-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log_path = self.base / "postgres.log"
        self.pid: int | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Celery's result backend URL (SQLAlchemy's default PostgreSQL driver: psycopg)."""
        return f"db+{self.dsn}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = group = None
        if self.account is not None:
            user, group = self.account.pw_uid, self.account.pw_gid
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.base,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done

    def start(self) -> None:
        self.sockets.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.account is not None:
            for path in (self.base, self.sockets, pwfile):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        done = self._run(
            "initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--no-locale", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log_path), "-W", "start"
        )
        if done.returncode != 0:
            log = log_tail(self.log_path)
            pytest.fail(f"pg_ctl start failed ({done.returncode}):\n{done.stderr}\n{log}")
        try:
            if not wait_until(self._ready, START_TIMEOUT, interval=0.2):
                pytest.fail(f"PostgreSQL did not accept connections:\n{log_tail(self.log_path)}")
            self._create_database()
        except BaseException:
            self.stop()
            raise

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _ready(self) -> bool:
        import psycopg

        self.pid = self.pid or self._postmaster_pid()
        try:
            psycopg.connect(f"{self.dsn}/postgres", connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(f"{self.dsn}/postgres", connect_timeout=5, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; the postmaster's PID killed if it is still there; the
        directory removed."""
        pid = self.pid or self._postmaster_pid()
        if self.data.is_dir():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "10", "stop")
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """A started :class:`PostgresCluster` until the block ends, then stopped."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _alive(pid: int) -> bool:
    """The postmaster (not our child: pg_ctl started it) is still running: the PID is
    there and still a ``postgres`` program (not a reused PID)."""
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
