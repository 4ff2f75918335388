"""jobcast under the Redis ACL user of ``deploy/redis-acl.conf``: the API with the
notifier, a Celery worker and Celery's remote control run every kind of job on it, and
Redis denies nothing (its ACL LOG stays empty); what the user was not given (FLUSHALL,
CONFIG, KEYS, keys outside jobcast's and Celery's) is refused."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.support.env import REPO, child_env, free_port
from tests.support.helpers import (
    TIMEOUT,
    Tokens,
    bearer,
    connect_sio,
    is_job_status,
    is_terminal,
    start_job,
    wait_job_status,
)
from tests.support.hostile_helpers import dedicated_server
from tests.support.processes import RedisServer, Server, running_worker

pytestmark = pytest.mark.integration

ACL_FILE = REPO / "deploy" / "redis-acl.conf"
ADMIN_PASSWORD = "acl-admin-" + secrets.token_hex(8)
USER_PASSWORD = "acl-user-" + secrets.token_hex(8)


def acl_rules(redis_version: tuple[int, ...]) -> list[str]:
    """The rules of the documented user, its password placeholder replaced by ours (and,
    as the file says, without CLIENT SETINFO on a Redis older than 7.2)."""
    lines = [ln for ln in ACL_FILE.read_text().splitlines() if ln.startswith("user jobcast ")]
    assert len(lines) == 1, f"{ACL_FILE} must hold one 'user jobcast' line"
    rules = lines[0].split()[2:]
    assert sum(r.startswith("#") for r in rules) == 1, "one password hash placeholder"
    if redis_version < (7, 2):
        rules.remove("+client|setinfo")
    return [f">{USER_PASSWORD}" if r.startswith("#") else r for r in rules]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, str]]:
    """A redis-server of our own: the default user has a password (it is the admin here);
    ``jobcast`` is the documented user. Yields the server and the jobcast user's URL."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis-acl"), ADMIN_PASSWORD)
    server.start()
    try:
        admin = redis.Redis.from_url(server.url, decode_responses=True)
        version = tuple(int(part) for part in admin.info("server")["redis_version"].split("."))
        admin.execute_command("ACL", "SETUSER", "jobcast", "reset", *acl_rules(version))
        admin.close()
        yield server, f"redis://jobcast:{USER_PASSWORD}@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def acl_stack(
    acl_redis: tuple[RedisServer, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, url = acl_redis
    logs = tmp_path_factory.mktemp("acl-stack")
    env = child_env(REDIS_URL=url, JOBCAST_REDIS_URL=url)
    with (
        running_worker(logs / "worker.log", env),
        dedicated_server(logs, "acl", REDIS_URL=url, JOBCAST_REDIS_URL=url) as server,
    ):
        yield server


def denials(server: RedisServer) -> list[str]:
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return [
            f"{entry['reason']} {entry['object']} ({entry['context']}, {entry['username']})"
            for entry in admin.acl_log()
        ]
    finally:
        admin.close()


async def test_every_kind_of_job_runs_as_the_acl_user(
    acl_redis: tuple[RedisServer, str], acl_stack: Server, tokens: Tokens
) -> None:
    server, url = acl_redis
    alice = await connect_sio(acl_stack.url, tokens.alice, ["websocket"])
    try:
        await alice.wait_for_type("connection_established")
        async with httpx.AsyncClient(base_url=acl_stack.url, timeout=TIMEOUT) as http:
            done = await start_job(http, tokens.alice, sections=2, secondsPerSection=0.1)
            failed = await start_job(
                http, tokens.alice, sections=3, secondsPerSection=0.1, failAtSection=2
            )
            running = await start_job(http, tokens.alice, sections=20, secondsPerSection=0.5)
            await alice.wait_for_type("job_completed", jobId=done)
            await alice.wait_for(is_terminal(failed), what="the failing job's outcome")
            assert alice.of_type("job_error", jobId=failed), alice.describe(5)
            await wait_job_status(http, tokens.alice, running, ("processing",))
            cancel = await http.delete(
                f"/api/v1/jobs/{running}",
                params={"terminate": "true"},
                headers=bearer(tokens.alice),
            )
            assert cancel.is_success, cancel.text
            await alice.wait_for(is_job_status(running, "cancelled"), what="cancelled")

            stats = await http.get("/api/v1/websocket/stats", headers=bearer(tokens.admin))
            assert stats.status_code == 200, stats.text
            sent = await http.post(
                "/api/v1/websocket/broadcast/system",
                json={"message": "ACL check", "level": "info"},
                headers=bearer(tokens.admin),
            )
            assert sent.status_code == 200, sent.text
            await alice.wait_for_type("system_notification")
    finally:
        await alice.close()

    # Celery's remote control (what Flower uses): a broadcast and its replies.
    inspect = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "celery", "-A", "workers.app", "inspect", "ping", "-t", "5"],
        cwd=REPO,
        env=child_env(REDIS_URL=url, JOBCAST_REDIS_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert inspect.returncode == 0 and "pong" in inspect.stdout, inspect.stdout + inspect.stderr
    denied = denials(server)
    assert not denied, f"Redis denied the documented user what jobcast needed: {denied}"


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("SHUTDOWN", "NOSAVE"),
        ("GET", "someone-else:secret"),
        ("SET", "someone-else:secret", "x"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_what_the_acl_user_was_not_given_is_refused(
    acl_redis: tuple[RedisServer, str], command: tuple[str, ...]
) -> None:
    _, url = acl_redis
    client = redis.Redis.from_url(url)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()
