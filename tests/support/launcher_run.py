"""``python -m api.launcher`` run by the tests (``make run``, ``make run-cluster``): its
output read line by line, its ``pids:`` line noted, its children SIGKILLed by PID if a test
ends early; :func:`alive` tells whether a PID is still a running process."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import pytest

from tests.support.env import clean_env, free_port


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
    """``python -m api.launcher *args`` on free ports, Redis included (nothing listens on
    its port, so the launcher starts one), ``overrides`` on top of its environment (which
    has no jobcast setting and no Celery URL of the caller's); its output is read line by
    line."""

    def __init__(self, tmp_path: Path, *args: str, **overrides: str) -> None:
        self.http_port, self.flower_port = free_port(), free_port()
        self.run_dir = tmp_path / "run"
        env = clean_env(
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
            JOBCAST_HTTP_PORT=str(self.http_port),
            JOBCAST_FLOWER_PORT=str(self.flower_port),
        )
        for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            env.pop(name, None)
        env.update(overrides)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.launcher", "--run-dir", str(self.run_dir), *args],
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

    def run_demo_job(self, token: str) -> dict[str, object]:
        """``/readyz`` is 200; a demo job submitted over REST with ``token`` is run to the
        end by the launcher's worker; returns the job as ``GET /api/v1/jobs/{id}`` says."""
        with httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=10) as client:
            assert client.get("/readyz").status_code == 200
            auth = {"Authorization": f"Bearer {token}"}
            answer = client.post(
                "/api/v1/jobs",
                json={"topic": "launcher test", "sections": 1, "secondsPerSection": 0},
                headers=auth,
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["data"]["jobId"]
            job: dict[str, object] = {}
            for _ in range(200):
                job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()["data"]
                if "result" in job:
                    break
                time.sleep(0.1)
            assert "result" in job, job
        return job

    def stop_cleanly(self, signum: signal.Signals, within: float) -> None:
        """Send ``signum``: the launcher exits 0 within ``within`` seconds, none of its
        children is left and ``<run-dir>/pids`` is gone."""
        pids = self.pids
        self.proc.send_signal(signum)
        assert self.exit_code(within) == 0, self.transcript()
        still = {name: pid for name, pid in pids.items() if alive(pid)}
        assert not still, f"still running after the launcher exited: {still}"
        assert not (self.run_dir / "pids").exists()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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
