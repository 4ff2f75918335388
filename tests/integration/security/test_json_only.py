"""JSON only, no pickle (issue "Secrets" scope): a worker refuses a pickle-serialized task
message without unpickling it (the message carries a canary whose unpickling would create
a file). That the Celery app accepts and produces JSON only: ``tests/unit/test_workers.py``."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.env import REDIS_URL, child_env
from tests.support.processes import running_worker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TASK = "jobcast.generate_content"


class Canary:
    """Unpickling this opens (creates) ``path``: the file's existence proves an unpickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def publish(url: str, task_id: str, body: bytes, content_type: str, encoding: str) -> None:
    """A Celery (protocol 2) task message for ``TASK`` on the default queue, by hand."""
    from kombu import Connection, Exchange, Queue

    headers = {
        "lang": "py", "task": TASK, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "group_index": None, "shadow": None, "eta": None, "expires": None,
        "retries": 0, "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}",
        "origin": "security-test", "ignore_result": False,
    }  # fmt: skip
    queue = Queue("celery", Exchange("celery", type="direct"), routing_key="celery")
    with Connection(url) as conn:
        conn.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key="celery",
            declare=[queue],
            headers=headers,
            correlation_id=task_id,
            content_type=content_type,
            content_encoding=encoding,
        )


def test_worker_refuses_a_pickle_message(tmp_path: Path) -> None:
    # A Redis database of this test's own, so that only this worker sees the messages.
    db = 7
    url = REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
    canary = tmp_path / "unpickled"
    log = tmp_path / "worker.log"
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    with running_worker(log, child_env(REDIS_URL=url)):
        hostile = str(uuid.uuid4())
        body = pickle.dumps(((Canary(str(canary)),), {"sections": 1}, embed))
        publish(url, hostile, body, "application/x-python-serialize", "binary")

        refused = wait_until(lambda: "ContentDisallowed" in log.read_text(errors="replace"), 20)
        text = log.read_text(errors="replace")
        assert refused, f"the worker did not refuse the pickle message:\n{text[-3000:]}"
        assert "pickle" in text

        # A JSON message after it runs: the worker was consuming this queue all along.
        friendly = str(uuid.uuid4())
        friendly_body = [["json is fine"], {"sections": 1, "seconds_per_section": 0}, embed]
        publish(url, friendly, json.dumps(friendly_body).encode(), "application/json", "utf-8")
        assert wait_until(
            lambda: f"{friendly}] succeeded" in log.read_text(errors="replace"), 30
        ), log.read_text(errors="replace")[-3000:]

    text = log.read_text(errors="replace")
    assert not canary.exists(), "the worker unpickled the message"
    assert f"{hostile}] succeeded" not in text and f"{hostile}] received" not in text.lower()
    own = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert own.get(f"celery-task-meta-{hostile}") is None, "the pickle task has a result"
        assert own.get(f"celery-task-meta-{friendly}") is not None
    finally:
        own.close()
