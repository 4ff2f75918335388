"""``python -m api.launcher`` (``make run``): it starts the whole stack (Redis included) and
stops all of it, on SIGTERM or when a child dies. ``jobcast token`` and
``docker-compose.yml``: ``tests/unit/test_launcher.py``."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.env import clean_env, free_port

pytestmark = pytest.mark.integration

START_BOUND = 75.0  # launcher start to printed token (Redis, worker, uvicorn, Flower)
STOP_BOUND = 30.0  # SIGTERM to exit: 10 s grace for the apps, 10 s for Redis, margin


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


def test_launcher_stops_everything_when_a_child_dies(launcher: LauncherRun) -> None:
    launcher.wait_for("token: ", START_BOUND)
    pids = launcher.pids
    os.kill(pids["api"], signal.SIGKILL)
    assert launcher.exit_code(STOP_BOUND) == 1, launcher.transcript()
    assert any("api (pid" in line and "exited" in line for line in launcher.output)
    assert any(line.startswith("[launcher] last lines of") for line in launcher.output)
    still = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not still, f"still running after the launcher exited: {still}"
