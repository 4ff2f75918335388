"""``python -m api.launcher`` (``make run``): it starts the whole stack (Redis included) and
stops all of it, on SIGTERM or when a child dies. ``jobcast token`` and
``docker-compose.yml``: ``tests/unit/test_launcher.py``."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.launcher_run import LauncherRun, alive

pytestmark = pytest.mark.integration

START_BOUND = 75.0  # launcher start to printed token (Redis, worker, uvicorn, Flower)
STOP_BOUND = 30.0  # SIGTERM to exit: 10 s grace for the apps, 10 s for Redis, margin


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[LauncherRun]:
    with LauncherRun(tmp_path) as run:
        yield run


def test_launcher_starts_the_stack_and_stops_it_on_sigterm(launcher: LauncherRun) -> None:
    token = launcher.wait_for("token: ", START_BOUND).split()[1]
    pids = launcher.pids
    assert set(pids) == {"redis", "worker", "api", "flower"}
    # The banner says which broker and result backend Celery uses (by default REDIS_URL).
    banner = {line.split()[0]: line.split()[1] for line in launcher.output if line[:2] == "  "}
    assert banner["broker:"] == banner["result:"] == banner["redis:"], banner
    assert json.loads((launcher.run_dir / "pids").read_text()) == pids
    # Flower's password goes through its environment, not the command line.
    assert b"basic" not in Path(f"/proc/{pids['flower']}/cmdline").read_bytes().lower()

    launcher.run_demo_job(token)  # the worker the launcher started runs it to the end
    assert httpx.get(f"http://127.0.0.1:{launcher.flower_port}/", timeout=10).status_code == 401
    launcher.stop_cleanly(signal.SIGTERM, STOP_BOUND)


def test_launcher_stops_everything_when_a_child_dies(launcher: LauncherRun) -> None:
    launcher.wait_for("token: ", START_BOUND)
    pids = launcher.pids
    os.kill(pids["api"], signal.SIGKILL)
    assert launcher.exit_code(STOP_BOUND) == 1, launcher.transcript()
    assert any("api (pid" in line and "exited" in line for line in launcher.output)
    assert any(line.startswith("[launcher] last lines of") for line in launcher.output)
    still = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not still, f"still running after the launcher exited: {still}"
