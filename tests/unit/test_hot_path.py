"""The publish hot path (``lua/progress.lua``): a progress step of a running job does only
what a step changes, and every SPEC 5 guarantee holds as with the full script — ordering,
terminal-is-final, snapshots, REST history, leases. Against a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from notifier.contract import events
from notifier.contract.keys import keyspace
from notifier.contract.settings import Settings
from notifier.core import bus
from notifier.core.store import JobState

JOB, USER = "hot-job", "hot-user"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, replica_wait_ms=0)


@pytest.fixture
def running(redis_client: Any, settings: Settings) -> Any:
    """A job that is queued, started and at its first ``processing`` update (seq 1)."""
    redis_client.flushall()
    for event in (
        events.status_update(JOB, USER, events.QUEUED),
        events.status_update(JOB, USER, events.STARTED),
        events.status_update(JOB, USER, events.PROCESSING, progress=0, seq=1),
    ):
        assert bus.publish_sync(redis_client, event, settings) is not None
    return redis_client


def step(seq: int, progress: float, attempt: int = 0) -> events.Event:
    return events.status_update(
        JOB, USER, events.PROCESSING, progress=progress, message=f"s{seq}", seq=seq, attempt=attempt
    )


def job_hash(client: Any, settings: Settings) -> dict[str, str]:
    part = keyspace(settings.partitions).of_user(USER)
    return dict(client.hgetall(part.job(JOB)))


def state(client: Any, settings: Settings) -> JobState:
    found = JobState.from_hash(JOB, job_hash(client, settings))
    assert found is not None
    return found


def history(client: Any, settings: Settings) -> list[dict[str, Any]]:
    part = keyspace(settings.partitions).of_user(USER)
    return [e.message() for e in bus.stream_events(client.xrange(part.job_events(JOB)))]


def test_a_step_takes_the_hot_path_and_the_snapshot_and_history_show_it(
    running: Any, settings: Settings
) -> None:
    call = bus.publish_call(keyspace(settings.partitions).of_user(USER), step(2, 40), settings)
    assert call.source == bus.PROGRESS_LUA
    ids = [bus.publish_sync(running, step(seq, seq * 10), settings) for seq in (2, 3, 4)]
    assert all(ids)
    raw = job_hash(running, settings)
    assert json.loads(raw["step"])["data"] == {
        "status": "processing",
        "progress": 40,
        "message": "s4",
    }
    current = state(running, settings)
    assert current.event_id == ids[-1]
    assert current.snapshot_message()["data"]["progress"] == 40
    assert current.to_rest()["message"] == "s4"
    steps = [m for m in history(running, settings) if m["data"].get("message", "").startswith("s")]
    assert [m["eventId"] for m in steps] == ids
    assert [m["data"]["progress"] for m in steps] == [20, 30, 40]


def test_a_stale_step_or_one_of_an_older_attempt_is_dropped(
    running: Any, settings: Settings
) -> None:
    assert bus.publish_sync(running, step(5, 50, attempt=1), settings)
    assert bus.publish_sync(running, step(5, 10, attempt=1), settings) is None  # same step
    assert bus.publish_sync(running, step(4, 10, attempt=1), settings) is None  # older step
    assert bus.publish_sync(running, step(9, 10, attempt=0), settings) is None  # older attempt
    assert state(running, settings).snapshot["progress"] == 50


def test_after_the_terminal_event_a_step_is_dropped(running: Any, settings: Settings) -> None:
    assert bus.publish_sync(running, step(2, 60), settings)
    assert bus.publish_sync(running, events.job_completed(JOB, USER, {"ok": True}), settings)
    assert bus.publish_sync(running, step(3, 70), settings) is None
    current = state(running, settings)
    assert current.finished
    assert current.snapshot_message()["type"] == "job_completed"
    assert history(running, settings)[-1]["type"] == "job_completed"


def test_a_change_of_state_after_steps_keeps_the_last_progress(
    running: Any, settings: Settings
) -> None:
    assert bus.publish_sync(running, step(2, 70), settings)
    assert bus.publish_sync(running, events.retrying(JOB, USER, 1, retry_in_seconds=1), settings)
    raw = job_hash(running, settings)
    assert "step" not in raw  # folded into the snapshot
    assert state(running, settings).snapshot == {
        "status": "retrying",
        "progress": 70,
        "attempt": 1,
        "retryInSeconds": 1.0,
    }


def test_a_due_lease_is_renewed_by_the_full_script(running: Any, settings: Settings) -> None:
    part = keyspace(settings.partitions).of_user(USER)
    soon = events.now_ms() + 1000  # less than half of the lease left
    running.hset(part.job(JOB), "lease", soon)
    running.zadd(part.running, {JOB: soon})
    assert bus.publish_sync(running, step(2, 20), settings)
    renewed = int(job_hash(running, settings)["lease"])
    assert renewed >= soon + settings.job_lease_seconds * 1000 / 2
    assert running.zscore(part.running, JOB) == renewed
    assert state(running, settings).snapshot["progress"] == 20


def test_a_step_of_a_job_not_known_as_running_goes_through_the_full_script(
    redis_client: Any, settings: Settings
) -> None:
    """The ``processing`` transition was lost (Redis away): the next step makes it."""
    redis_client.flushall()
    assert bus.publish_sync(redis_client, events.status_update(JOB, USER, events.STARTED), settings)
    assert bus.publish_sync(redis_client, step(7, 30), settings)
    current = state(redis_client, settings)
    assert (current.state, current.snapshot["progress"]) == ("processing", 30)
    assert job_hash(redis_client, settings)["lease"]


def test_a_step_for_another_users_job_changes_nothing(running: Any, settings: Settings) -> None:
    space = keyspace(settings.partitions)
    other = next(f"u{i}" for i in range(10_000) if space.of_user(f"u{i}") == space.of_user(USER))
    before = job_hash(running, settings)
    foreign = events.status_update(JOB, other, events.PROCESSING, progress=99, seq=8)
    with pytest.raises(Exception, match="another user"):
        bus.publish_sync(running, foreign, settings)
    assert job_hash(running, settings) == before
