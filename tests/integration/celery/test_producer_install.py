"""A producer-only install: jobcast's wheel, built from this tree, installed WITHOUT extras
(``pip install jobcast``) into a fresh venv, with the versions of ``requirements/lock.txt``
(from the package index). Beside it, outside the repository, a small Celery app of its own
(``workers.install(app)``, a task that calls ``report()``) whose worker runs from that venv;
a job submitted from that venv with an owner reaches a Socket.IO client of the notifier
started from the full install (the session's ``server``): its progress, then its completion.

The venv is built once per test session, in a temporary directory. Nothing is skipped: a
missing network or a failed install fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.celery_helpers import assert_monotonic, follow, history, statuses
from tests.support.env import REPO, child_env
from tests.support.processes import START_TIMEOUT, log_tail, stop_process
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    # Building the venv downloads the base dependencies when pip's cache is cold.
    pytest.mark.timeout(300),
]

QUEUE = "jobcast-producer-only"
#: Distributions of the server and flower extras: none of them in the producer's venv.
SERVER_DISTRIBUTIONS = (
    "fastapi", "starlette", "uvicorn", "python-socketio", "python-engineio", "websockets",
    "pyjwt", "prometheus-client", "flower",
)  # fmt: skip
SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "socketio", "engineio", "websockets",
                  "jwt", "prometheus_client", "flower")  # fmt: skip

#: The user's app, written outside the repository.
APP = textwrap.dedent(
    """
    import os
    import sys
    import time

    from celery import Celery

    import workers
    from workers.progress import report

    QUEUE = {queue!r}
    SERVER_MODULES = {server_modules!r}

    app = Celery("producer_only", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    workers.install(app)


    @app.task(name="producer_only.steps")
    def steps(count=4, seconds=0.4):
        report(0, "Starting")
        for step in range(1, count + 1):
            time.sleep(seconds)
            report(step * 100 / count, f"Step {{step}} of {{count}}", step=step)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in SERVER_MODULES)
        return {{"steps": count, "workers": workers.__file__, "serverModules": loaded}}


    if __name__ == "__main__":
        print(workers.submit(steps, user_id=sys.argv[1], count=4))
    """
).format(queue=QUEUE, server_modules=SERVER_MODULES)


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def locked_constraints(target: Path) -> Path:
    """``requirements/lock.txt``'s pins without their hashes: a hashed constraint turns on
    pip's --require-hashes mode, which a wheel built here cannot satisfy."""
    lines = [
        match[1]
        for line in (REPO / "requirements/lock.txt").read_text().splitlines()
        if (match := re.match(r"([A-Za-z0-9._-]+==[^\s;\\]+)", line))
    ]
    assert len(lines) > 20, lines
    target.write_text("\n".join(lines) + "\n")
    return target


def producer_env(app_dir: Path, **overrides: str) -> dict[str, str]:
    """The tests' environment (REDIS_URL is the session's Redis) for a process of the
    fresh venv: the app's directory on the path, nothing of this repository's, and no JWT
    secret (a producer verifies no token)."""
    env = child_env(**overrides)
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "JOBCAST_JWT_SECRET"):
        env.pop(key, None)
    env["PYTHONPATH"] = str(app_dir)
    return env


@pytest.fixture(scope="session")
def producer_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(venv, app_dir)``: a fresh venv with jobcast's wheel and no extras, and a directory
    outside the repository holding the user's app."""
    root = tmp_path_factory.mktemp("producer-install")
    # The wheel from a copy of the package's sources, so the build leaves nothing in the tree.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("workers", "notifier", "api"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    dist = root / "dist"
    # --no-build-isolation: built with the locked setuptools of the running venv.
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", dist, source])  # fmt: skip
    (wheel,) = dist.glob("jobcast-*.whl")

    venv = root / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--constraint", locked_constraints(root / "constraints.txt"), wheel],
        env=producer_env(root))  # fmt: skip

    app_dir = root / "app"
    app_dir.mkdir()
    (app_dir / "producer_app.py").write_text(APP)
    return venv, app_dir


@pytest.fixture(scope="module")
def producer_worker(
    producer_install: tuple[Path, Path], redis_server: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """The user's app's worker: ``celery -A producer_app worker`` of the fresh venv, ready
    until the module's tests are done; stopped by PID."""
    venv, app_dir = producer_install
    log_path = app_dir / "worker.log"
    args = [str(venv / "bin" / "celery"), "-A", "producer_app", "worker", "-c", "1",
            "-P", "prefork", "-Q", QUEUE, "-l", "INFO", "--without-mingle", "--without-gossip",
            "-n", "producer-only@%h"]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=app_dir,
            env=producer_env(app_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = wait_until(
            lambda: proc.poll() is not None or " ready." in log_path.read_text(errors="replace"),
            START_TIMEOUT,
            interval=0.2,
        )
        if not ready or proc.poll() is not None:
            pytest.fail(
                f"the producer-only worker did not become ready (exit code {proc.poll()}):\n"
                f"{log_tail(log_path)}"
            )
        yield proc
    finally:
        stop_process(proc, group=True)


def test_the_producer_venv_has_jobcast_without_its_server_side(
    producer_install: tuple[Path, Path],
) -> None:
    venv, app_dir = producer_install
    probe = textwrap.dedent(
        f"""
        import importlib.metadata, importlib.util, json
        import workers

        def installed(name):
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return None

        print(json.dumps({{
            "jobcast": installed("jobcast"),
            "workers": workers.__file__,
            "distributions": {{n: installed(n) for n in {SERVER_DISTRIBUTIONS!r}}},
            "modules": [m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m)],
        }}))
        """
    )
    done = run([venv / "bin" / "python", "-c", probe], cwd=app_dir, env=producer_env(app_dir))
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["jobcast"] == "0.1.0", found
    # jobcast itself comes from the wheel in the venv, not from this repository.
    assert Path(found["workers"]).is_relative_to(venv), found["workers"]
    assert {n: v for n, v in found["distributions"].items() if v} == {}, found
    assert found["modules"] == [], found


async def test_a_producer_only_worker_reports_to_the_full_notifier(
    producer_install: tuple[Path, Path],
    producer_worker: subprocess.Popen[bytes],
    sio_client: Any,
    tokens: Any,
    http: httpx.AsyncClient,
) -> None:
    venv, app_dir = producer_install
    user_id = "producer-only"
    token = tokens.make(user_id)
    client = await sio_client(token)

    # Submitted from the producer's venv too: its `queued` event comes from the base install.
    done = run(
        [venv / "bin" / "python", app_dir / "producer_app.py", user_id],
        cwd=app_dir,
        env=producer_env(app_dir),
        timeout=60,
    )
    job = done.stdout.strip().splitlines()[-1]

    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", (terminal, log_tail(app_dir / "worker.log"))
    result = terminal["result"]
    assert result["steps"] == 4, result
    assert Path(result["workers"]).is_relative_to(venv), result
    assert result["serverModules"] == [], result

    mine = client.for_job(job)
    live = [
        m["data"]["progress"]
        for m in mine
        if m["type"] == "job_status_update"
        and m["data"]["status"] == "processing"
        and not m.get("snapshot")
    ]
    assert live and live[-1] == 100, f"no live progress to 100:\n  {client.describe()}"
    assert_monotonic(live)
    assert len(client.of_type("job_completed", jobId=job)) == 1

    events = await history(http, token, job)
    assert statuses(events) == ["queued", "started", *["processing"] * 5, "job_completed"], (
        statuses(events)
    )


def test_the_jobcast_command_says_it_needs_the_server_extra(
    producer_install: tuple[Path, Path],
) -> None:
    venv, app_dir = producer_install
    done = subprocess.run(
        [str(venv / "bin" / "jobcast"), "token", "--sub", "42"],
        capture_output=True,
        text=True,
        check=False,
        cwd=app_dir,
        env=producer_env(app_dir),
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "pip install 'jobcast[server]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
