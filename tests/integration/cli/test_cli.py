"""The ``jobcast`` console script against the real stack: ``submit``, ``watch`` (a live
progress bar, read through a pseudo-terminal and through pipes), ``stats``. The pieces they
are made of: ``tests/unit/test_cli.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import REPO, child_env
from tests.support.helpers import Tokens, bearer, start_job
from tests.support.processes import Server
from workers.tasks import content_text

pytestmark = pytest.mark.integration

#: Bound for one command (they end much sooner; a hang fails the test clearly).
COMMAND_TIMEOUT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def jobcast_command() -> list[str]:
    """The installed console script beside this interpreter (``make venv`` installs it)."""
    script = Path(sys.executable).with_name("jobcast")
    if script.is_file():
        return [str(script)]
    found = shutil.which("jobcast")
    return [found] if found else [sys.executable, "-m", "api.cli"]


def cli_env(**overrides: str) -> dict[str, str]:
    env = child_env(**overrides)
    env.pop("JOBCAST_TOKEN", None)
    env.update(overrides)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*jobcast_command(), *args],
        cwd=REPO,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def run_in_pty(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; (exit status, everything it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*jobcast_command(), *args],
        cwd=REPO,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + COMMAND_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            pytest.fail(f"jobcast {' '.join(args)} still running after {COMMAND_TIMEOUT:g} s")
        status = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def percentages(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"\]\s+(\d{1,3})%", ANSI.sub("", text))]


def test_submit_then_watch_in_a_terminal_reaches_100_and_exits_0(server: Server) -> None:
    submitted = run_cli(
        "submit", "--url", server.url, "--topic", "CLI pty", "--sections", "4",
        "--seconds-per-section", "0.3",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id), submitted.stdout

    status, text = run_in_pty("watch", "--url", server.url, job_id)
    assert status == 0, text
    assert "\r" in text, "on a terminal the bar is redrawn in place"
    seen = percentages(text)
    assert seen and seen[-1] == 100, text
    assert seen == sorted(seen), f"the bar went backwards: {seen}"
    assert "completed: Generated Content: CLI pty" in text
    assert f'"contentId": "content-{job_id}"' in text
    # The job's live output, written as it arrived above the bar: every line of it.
    plain = ANSI.sub("", text)
    for line in filter(None, content_text("CLI pty", 4).splitlines()):
        assert line in plain, f"output line missing: {line!r}"
    assert f'"content": "<{len(content_text("CLI pty", 4))} characters, above>"' in text


def test_watch_a_failing_job_exits_1_with_the_error(server: Server) -> None:
    result = run_cli(
        "submit", "--url", server.url, "--topic", "Doomed", "--sections", "3",
        "--seconds-per-section", "0.2", "--fail-at-section", "2", "--watch",
        "--transport", "polling",
    )  # fmt: skip
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "failed (task_failed): Generation failed: section 2 of 'Doomed'" in result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f-]{36}", lines[0]), lines
    assert "\r" not in result.stdout, "into a pipe each change is a line of its own"
    assert any("failed" in line for line in lines[1:]), result.stdout
    # The output of the section written before the failure, each line of it whole.
    for line in filter(None, content_text("Doomed", 3).split("## Section 2")[0].splitlines()):
        assert line in lines, f"output line missing: {line!r}"


async def test_watch_a_cancelled_job_exits_2(
    server: Server, http: httpx.AsyncClient, tokens: Tokens
) -> None:
    job_id = await start_job(http, tokens.alice, topic="Long", sections=40, secondsPerSection=0.25)
    proc = await asyncio.create_subprocess_exec(
        *jobcast_command(), "watch", "--url", server.url, "--sub", "1", job_id,
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        # Cancel once the watcher has drawn a line of progress (so it is following live).
        async with asyncio.timeout(COMMAND_TIMEOUT):
            while b"%" not in await proc.stdout.readline():
                pass
        response = await http.delete(f"/api/v1/jobs/{job_id}", headers=bearer(tokens.alice))
        assert response.status_code == 200, response.text
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2, (out, err)
    assert b"cancelled: Cancelled by its owner" in err


def test_watch_refusals_exit_2_with_the_servers_words(server: Server, tokens: Tokens) -> None:
    unknown = run_cli("watch", "--url", server.url, "no-such-job")
    assert unknown.returncode == 2
    assert "job_not_found" in unknown.stderr

    expired = run_cli("watch", "--url", server.url, "--token", tokens.expired(), "any")
    assert expired.returncode == 2
    assert "Token expired" in expired.stderr and "token_expired" in expired.stderr

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        down = run_cli("watch", "--url", f"http://127.0.0.1:{port}", "any")
    assert down.returncode == 2 and "cannot reach" in down.stderr


def test_stats_as_admin_and_refused_for_a_user(server: Server, tokens: Tokens) -> None:
    table = run_cli("stats", "--url", server.url)
    assert table.returncode == 0, table.stderr
    assert re.search(r"^instances\s+\d+$", table.stdout, re.M), table.stdout
    assert re.search(r"^connectionsByTransport\.websocket\s+\d+$", table.stdout, re.M)

    as_json = run_cli("stats", "--url", server.url, "--json")
    data: dict[str, Any] = json.loads(as_json.stdout)
    assert isinstance(data["instances"], int) and "polling" in data["connectionsByTransport"]

    refused = run_cli("stats", "--url", server.url, "--token", tokens.alice)
    assert refused.returncode == 2
    assert "forbidden" in refused.stderr and "403" in refused.stderr


# --- jobcast migrate-partitions


def _publish_jobs(client: Any, settings: Any, users: list[str]) -> dict[str, str]:
    """For each user: a finished job with live output and a running one; returns each user's
    terminal id."""
    from notifier.contract.events import job_completed, status_update
    from notifier.core.bus import append_output_sync, publish_sync

    ends = {}
    for user in users:
        publish_sync(client, status_update(f"{user}-done", user, "queued"), settings)
        append_output_sync(client, f"{user}-done", user, f"written by {user} ☕", settings)
        ends[user] = str(
            publish_sync(client, job_completed(f"{user}-done", user, {"u": user}), settings)
        )
        publish_sync(client, status_update(f"{user}-run", user, "queued"), settings)
        publish_sync(client, status_update(f"{user}-run", user, "started"), settings)
    return ends


async def test_migrate_partitions_moves_every_job_and_records_the_new_count(
    tmp_path: Path,
) -> None:
    import redis
    import redis.asyncio as aioredis

    from notifier.contract import keys
    from notifier.contract.keys import keyspace
    from notifier.contract.settings import Settings
    from notifier.core import store
    from notifier.core.bus import PartitionMismatch, check_partitions_sync
    from notifier.core.recovery import Recovery
    from tests.support.env import free_port
    from tests.support.processes import RedisServer

    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    try:
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        old = Settings(_env_file=None, redis_url=redis_server.url, partitions=4)
        new = Settings(_env_file=None, redis_url=redis_server.url, partitions=8)
        check_partitions_sync(client, old)
        users = [f"mig-{n}" for n in range(12)]
        ends = _publish_jobs(client, old, users)

        # Another count is refused, naming the way out.
        with pytest.raises(PartitionMismatch, match="migrate-partitions --to 8"):
            check_partitions_sync(client, new)
        # ... and so is the migration while a notifier instance lives; nothing changes.
        client.zadd(keys.INSTANCES, {"live-instance": time.time() * 1000 + 60_000})
        env = cli_env(REDIS_URL=redis_server.url)
        refused = run_cli("migrate-partitions", "--to", "8", env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "refused" in refused.stdout and "live-instance" in refused.stdout
        assert client.hget(keys.PARTITIONS, "count") == "4"
        client.delete(keys.INSTANCES)

        done = run_cli("migrate-partitions", "--to", "8", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "partitions: 4 -> 8" in done.stdout
        check_partitions_sync(client, new)
        with pytest.raises(PartitionMismatch):
            check_partitions_sync(client, old)
        new_tags = {part.tag for part in keyspace(8).partitions}
        for part in keyspace(4).partitions:  # nothing left under the old tags (a tag may
            if part.tag not in new_tags:  # be an old and a new partition's alike)
                assert not list(client.scan_iter(match=f"{part.base.replace('{', '[{]')}:*"))

        space = keyspace(8)
        aclient = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        since = int(client.hget(keys.PARTITIONS, "migratedAt") or 0)
        recovery = Recovery(
            aclient, space, retention_seconds=3600, inbox_max=1000, feeds_since_ms=since
        )
        try:
            for user in users:
                part = space.of_user(user)
                finished = await store.find_job(aclient, space, f"{user}-done")
                running = await store.find_job(aclient, space, f"{user}-run")
                assert finished is not None and finished.state == "completed"
                assert finished.terminal is not None and finished.terminal["result"] == {"u": user}
                assert finished.output == f"written by {user} ☕", "the live output moved too"
                assert running is not None and running.state == "started"
                listed = {s.job_id for s in await store.user_jobs(aclient, part, user)}
                assert listed == {f"{user}-done", f"{user}-run"}
                assert client.zscore(part.running, f"{user}-run") is not None
                # Offline delivery still has the terminal event; an id from before the
                # migration is not a complete replay.
                offline = await recovery.offline(user, None)
                assert [e.event_id for e in offline] == [ends[user]]
                assert (await recovery.after(user, ends[user])).recovered is False
        finally:
            await aclient.aclose()
            client.close()
    finally:
        redis_server.stop()
