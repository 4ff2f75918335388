"""Lazy progress coalescing (issue 18, producer cost): a held ``report()`` is kept as it
came and its event is built only if it goes out; events of a run go out one at a time, in
``seq`` order, whichever thread sends them; the task's PROGRESS state for Celery's result
backend rides in the same pipeline as the event when that backend is jobcast's Redis."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from notifier.contract.events import Event
from workers.tracking import Run, Runs

# --- Run.report: what is held, what is built


def make_run(min_interval: float, **kwargs: Any) -> tuple[Run, list[Event]]:
    sent: list[Event] = []
    return Run("job-1", "7", 0, min_interval, sent.append, **kwargs), sent


def data(event: Event) -> dict[str, Any]:
    result: dict[str, Any] = event.message["data"]
    return result


def test_held_reports_take_no_sequence_number() -> None:
    run, sent = make_run(60.0)  # an interval no test run reaches: nothing is sent by time
    assert run.next_seq() == 1  # what `started` takes
    assert run.report(10.0, "a", {}) is not None
    for value in range(11, 50):
        assert run.report(float(value), "held", {}) is None
    run.flush()
    assert [e.seq for e in sent] == [2, 3], "only the events that went out are numbered"
    assert run.next_seq() == 4, "the next status change follows them"
    assert run.sent == 2


def test_the_latest_held_report_goes_out_whole() -> None:
    run, sent = make_run(60.0)
    run.report(10.0, "first", {"section": 1})
    run.report(20.0, "second", {"section": 2})
    run.report(30.5, "third", {"section": 3, "words": 120})
    run.flush()
    assert [data(e)["progress"] for e in sent] == [10, 30.5]
    last = data(sent[-1])
    assert last["status"] == "processing"
    assert last["message"] == "third"
    assert (last["section"], last["words"]) == (3, 120)
    run.flush()
    assert len(sent) == 2, "flush sends a held report once"


def test_a_value_is_clamped_when_its_event_is_built() -> None:
    run, sent = make_run(60.0)
    run.report(-5.0, None, {})
    run.report(12.3456, None, {})
    run.flush()
    assert [data(e)["progress"] for e in sent] == [0, 12.35]
    assert "message" not in data(sent[0])


def test_100_is_sent_at_once_the_first_time_and_held_after() -> None:
    run, sent = make_run(60.0)
    run.report(10.0, None, {})
    run.report(50.0, None, {})
    assert run.report(100.0, "done", {}) is not None
    assert [data(e)["progress"] for e in sent] == [10, 100], "100 superseded the held 50"
    assert data(sent[-1])["etaSeconds"] == 0
    assert run.report(100.0, "again", {}) is None
    run.flush()
    assert data(sent[-1])["message"] == "again"


def test_eta_comes_from_the_reports_that_go_out() -> None:
    run, sent = make_run(60.0)
    run.report(0.0, None, {})
    run.report(40.0, None, {})
    run.flush()
    assert "etaSeconds" not in data(sent[0]), "one point gives no rate"
    assert data(sent[1])["etaSeconds"] >= 0, "the second point that goes out gives one"


def test_a_canvas_member_carries_no_eta_of_its_own() -> None:
    from workers.tracking import Member

    member = Member(index=0, weight=1, total_weight=2, members=2, result=None, keep=True)
    run, sent = make_run(60.0, member=member)
    run.report(0.0, None, {})
    run.report(40.0, None, {})
    run.flush()
    assert all("etaSeconds" not in data(e) for e in sent)


def test_the_caller_sends_what_goes_out_now_and_the_run_sends_what_was_held() -> None:
    run, by_run = make_run(60.0)
    by_caller: list[Event] = []
    sent_now = run.report(10.0, None, {}, send=by_caller.append)
    assert sent_now is not None and by_caller == [sent_now] and by_run == []
    assert run.report(20.0, None, {}, send=by_caller.append) is None
    run.flush()
    assert [data(e)["progress"] for e in by_run] == [20]


def test_held_report_is_sent_by_a_timer() -> None:
    arrived = threading.Event()
    sent: list[Event] = []

    def emit(event: Event) -> None:
        sent.append(event)
        if len(sent) == 2:
            arrived.set()

    run = Run("job-1", "7", 0, 0.05, emit)
    run.report(10.0, None, {})
    run.report(20.0, "latest", {})
    assert arrived.wait(timeout=10), "the held report was never sent"
    assert data(sent[1])["message"] == "latest"


def test_a_held_report_that_cannot_be_built_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run, sent = make_run(60.0)
    run.report(10.0, None, {})
    run.report(20.0, None, {"status": "not a field a report may set"})
    run.flush()  # a status change or the end: must not raise
    assert len(sent) == 1
    assert "held progress could not be built" in caplog.text
    assert run.report(30.0, None, {}) is None, "the run carries on"


def test_events_go_out_in_sequence_order_from_the_task_and_the_timer() -> None:
    """A report that goes out on the task's thread and a held one a timer sends never cross:
    in the order they reach the publisher, sequence numbers and values only go up."""
    sent: list[Event] = []
    lock = threading.Lock()

    def emit(event: Event) -> None:
        with lock:
            sent.append(event)

    run = Run("job-1", "7", 0, 0.0005, emit)
    for step in range(20_000):
        run.report(step * 100 / 20_000, None, {})
    run.report(100.0, None, {})
    run.flush()
    seqs = [e.seq for e in sent]
    values = [data(e)["progress"] for e in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert values == sorted(values) and values[-1] == 100


def test_finishing_a_run_marks_it_and_sends_what_is_held() -> None:
    runs = Runs()
    run, sent = make_run(60.0)
    runs.start("task-1", run)
    run.report(10.0, None, {})
    run.report(40.0, None, {})
    assert runs.finish("task-1") is run
    assert run.finished
    assert [data(e)["progress"] for e in sent] == [10, 40]


def test_progress_step_returns_the_event_only_when_it_went_out() -> None:
    from workers.progress import progress_step

    run, sent = make_run(60.0)
    assert progress_step(run, 10, "a", {}) is sent[0]
    assert progress_step(run, 20, "b", {}) is None


# --- the task's PROGRESS state for Celery's result backend


def celery_app(backend: str, **conf: Any) -> Any:
    from celery import Celery

    app = Celery(f"lazy-{uuid.uuid4().hex[:6]}", broker="memory://", backend=backend)
    app.conf.update(**conf)
    return app


def test_a_redis_backend_on_jobcast_s_redis_and_database_shares_it() -> None:
    import redis

    from workers.celery_state import shares_redis

    client = redis.Redis.from_url("redis://127.0.0.1:6390/0")
    assert shares_redis(celery_app("redis://127.0.0.1:6390/0").backend, client)
    assert not shares_redis(celery_app("redis://127.0.0.1:6390/1").backend, client)
    assert not shares_redis(celery_app("redis://127.0.0.1:6391/0").backend, client)
    # Another serializer than JSON: the backend's values are not what jobcast would write.
    msgpack = celery_app("redis://127.0.0.1:6390/0", result_serializer="msgpack")
    assert not shares_redis(msgpack.backend, client)
    assert not shares_redis(celery_app("cache+memory://").backend, client)
    assert not shares_redis(celery_app("disabled://").backend, client)


@pytest.fixture
def publisher_on(redis_server: Any) -> Any:
    """A jobcast publisher of this process on the session's (standalone) Redis."""
    from notifier.contract.settings import Settings
    from workers.publisher import Publisher

    settings = Settings(_env_file=None, redis_url=redis_server.url, redis_cluster=False)
    publisher = Publisher(settings, lambda: [])
    yield publisher
    publisher.client.close()


def test_the_event_and_the_progress_state_go_out_in_one_pipeline(publisher_on: Any) -> None:
    """The event reaches the job's history and the task's meta says PROGRESS as Celery's
    backend would write it; a task whose stored state is SUCCESS keeps it."""
    from types import SimpleNamespace

    from notifier.contract.events import STARTED, status_update
    from notifier.contract.keys import keyspace
    from workers.celery_state import redis_write

    publisher = publisher_on
    client = publisher.client
    url = publisher.config.redis_url
    app = celery_app(url)
    task = SimpleNamespace(backend=app.backend, app=app)
    job, user = f"lazy-{uuid.uuid4().hex[:8]}", "u-lazy"
    request = SimpleNamespace(id=job, group=None, parent_id=None, children=[], hostname="h")
    assert publisher.emit(status_update(job, user, STARTED, seq=1)) is not None

    run = Run(job, user, 0, 60.0, publisher.emit)
    run.next_seq()  # `started`

    def send(event: Event) -> None:
        meta = dict(event.snapshot)
        write = redis_write(task, request, meta, client)
        assert write is not None, "the backend is on jobcast's Redis"
        assert publisher.emit_progress(event, write) is not None

    run.report(40.0, "Writing", {"section": 2}, send=send)
    history = client.xrange(keyspace(publisher.config.partitions).of_user(user).job_events(job))
    last = json.loads(history[-1][1]["p"])
    assert (last["data"]["progress"], last["data"]["section"]) == (40, 2)
    meta = app.backend.get_task_meta(job)
    assert meta["status"] == "PROGRESS"
    assert meta["result"]["progress"] == 40 and meta["result"]["message"] == "Writing"
    assert client.ttl(app.backend.get_key_for_task(job)) > 0, "the backend's expiry is kept"

    app.backend.store_result(job, {"done": True}, "SUCCESS")
    client.script_flush()  # as after a Redis restart: the scripts are loaded again
    run.report(100.0, "Late", {}, send=send)
    assert app.backend.get_task_meta(job)["status"] == "SUCCESS", "SUCCESS is final"
    client.delete(app.backend.get_key_for_task(job))
