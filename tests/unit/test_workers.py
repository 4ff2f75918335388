"""The Celery side without a worker: canvas preparation, result payloads, ``retrying``,
REST Flower links, the ETA estimator, the canvas aggregate scripts on a real Redis, that
importing the producer API builds no app and opens no connection, and that the bundled
Celery app speaks JSON only."""

from __future__ import annotations

import json
import textwrap
import uuid
from typing import Any

import pytest
from celery import chain, chord, group
from celery.canvas import _chain

from notifier.contract.events import result_payload, retrying
from notifier.core.store import JobState
from tests.support.celery_local_app import add, steady, total
from tests.support.keyspace import job_partition, user_partition
from tests.support.processes import python_output
from workers import aggregate, canvas
from workers.tracking import HEADER_JOB, HEADER_MEMBER, HEADER_USER, EtaEstimator, Member


def headers_of(sig: Any) -> dict[str, Any]:
    return dict(sig.options.get("headers") or {})


def leaves(prepared: canvas.Prepared) -> list[Any]:
    found: list[Any] = []

    def walk(sig: Any) -> None:
        if isinstance(sig, group):
            for task in sig.tasks:
                walk(task)
        elif isinstance(sig, chord):
            for task in sig.tasks:
                walk(task)
            walk(sig.body)
        elif isinstance(sig, _chain):  # a copied chain is a plain _chain
            for task in sig.tasks:
                walk(task)
        else:
            found.append(sig)

    walk(prepared.canvas)
    return found


# --- canvas preparation


def test_group_members_carry_the_job_and_their_share() -> None:
    original = group(steady.s(result=i) for i in range(4))
    prepared = canvas.prepare(original, job_id="job-1", user_id="7", headers={"x-trace": "t"})
    members = leaves(prepared)
    assert len(members) == 4
    assert [m.options["task_id"] for m in members] == prepared.task_ids
    assert len(set(prepared.task_ids)) == 4
    for index, member in enumerate(members):
        headers = headers_of(member)
        assert headers[HEADER_USER] == "7"
        assert headers[HEADER_JOB] == "job-1"
        assert headers["x-trace"] == "t"
        share = Member.from_header(headers[HEADER_MEMBER])
        assert share == Member(index, 1.0, 4.0, 4, [0, 1, 2, 3], True)
    # Celery passes a canvas's own options over its members': no headers up there.
    assert "headers" not in prepared.canvas.options
    # The caller's canvas is left as it was.
    assert all("headers" not in sig.options for sig in original.tasks)


def test_chord_result_is_the_body_and_only_the_body_is_kept() -> None:
    prepared = canvas.prepare(
        chord([add.s(i, i) for i in range(3)], total.s()), job_id="j", user_id="u", headers={}
    )
    shares = [Member.from_header(headers_of(m)[HEADER_MEMBER]) for m in leaves(prepared)]
    assert [s.index for s in shares if s] == [0, 1, 2, 3]
    assert {s.result for s in shares if s} == {3}
    assert [s.keep for s in shares if s] == [False, False, False, True]


def test_chain_result_is_its_last_task_and_nesting_is_followed() -> None:
    prepared = canvas.prepare(
        chain(add.s(1, 1), add.s(2), add.s(3)), job_id="j", user_id="u", headers={}
    )
    share = Member.from_header(headers_of(leaves(prepared)[0])[HEADER_MEMBER])
    assert share is not None and share.result == 2
    nested = canvas.prepare(
        group(chain(add.s(1, 1), add.s(2)), add.s(5, 5)), job_id="j", user_id="u", headers={}
    )
    share = Member.from_header(headers_of(leaves(nested)[0])[HEADER_MEMBER])
    assert share is not None and share.result == [1, 2]
    assert aggregate.assemble([1, 2], {"1": "4", "2": "10"}) == [4, 10]
    assert aggregate.assemble([[0], 1], {"0": '{"a": 1}'}) == [[{"a": 1}], None]


def test_weights() -> None:
    prepared = canvas.prepare(
        group(steady.s().set(jobcast_weight=3), steady.s()), job_id="j", user_id="u", headers={}
    )
    members = leaves(prepared)
    shares = [Member.from_header(headers_of(m)[HEADER_MEMBER]) for m in members]
    assert [(s.weight, s.total_weight) for s in shares if s] == [(3.0, 4.0), (1.0, 4.0)]
    assert all(canvas.WEIGHT_OPTION not in m.options for m in members)
    for bad in (0, -1, "heavy", float("nan")):
        with pytest.raises(ValueError, match="jobcast_weight"):
            canvas.prepare(
                group(steady.s().set(jobcast_weight=bad)), job_id="j", user_id="u", headers={}
            )
    with pytest.raises(ValueError, match="no tasks"):
        canvas.prepare(group([]), job_id="j", user_id="u", headers={})


def test_submit_needs_an_owner() -> None:
    import workers

    with pytest.raises(ValueError, match="user_id"):
        workers.submit(group(steady.s()), user_id="")


# --- result payloads and retrying


def test_result_payload_truncates_with_a_marker() -> None:
    assert result_payload({"a": 1}, 100) == {"a": 1}
    marker = result_payload({"blob": "é" * 5000}, 1000, task_id="t-1")
    assert marker["truncated"] is True
    assert marker["bytes"] == len(
        json.dumps({"blob": "é" * 5000}, ensure_ascii=False, separators=(",", ":")).encode()
    )
    assert marker["limit"] == 1000 and marker["taskId"] == "t-1"
    assert len(marker["preview"].encode()) <= 1000
    assert marker["preview"].startswith('{"blob":"éé')
    for bad in ({1, 2}, float("nan"), object()):
        with pytest.raises((TypeError, ValueError)):
            result_payload(bad, 1000)


def test_retrying_carries_the_retry_number_and_delay() -> None:
    event = retrying("j", "u", 2, retry_in_seconds=1.5, message="again", attempt=1, seq=4)
    assert event.message["data"] == {
        "status": "retrying",
        "message": "again",
        "attempt": 2,
        "retryInSeconds": 1.5,
    }
    assert (event.attempt, event.seq) == (1, 4)
    assert retrying("j", "u", 1, retry_in_seconds=-3).message["data"]["retryInSeconds"] == 0


# --- REST: Flower links for admins


def job_state(job_id: str = "task-1") -> JobState:
    raw = {"owner": "7", "state": "processing", "snapshot": '{"progress": 5}', "eventId": "1-0"}
    state = JobState.from_hash(job_id, raw)
    assert state is not None
    return state


def test_flower_link_only_for_admins() -> None:
    state = job_state()
    assert "flowerUrl" not in state.to_rest()
    assert "flowerUrl" not in state.to_rest(flower_url="http://flower:5555")
    assert "flowerUrl" not in state.to_rest(is_admin=True)
    body = state.to_rest(is_admin=True, flower_url="http://flower:5555/")
    assert body["flowerUrl"] == "http://flower:5555/task/task-1"
    assert "flowerUrls" not in body
    body = job_state("canvas-1").to_rest(is_admin=True, flower_url="http://f", task_ids=["a", "b"])
    assert body["flowerUrl"] == "http://f/task/a"
    assert body["flowerUrls"] == ["http://f/task/a", "http://f/task/b"]


# --- ETA


def test_eta_decreases_for_steady_progress_and_ends_at_zero() -> None:
    eta = EtaEstimator()
    assert eta.update(0, now=0.0) is None
    estimates = [eta.update(p, now=p / 10) for p in range(10, 100, 10)]
    assert all(e is not None and e >= 0 for e in estimates)
    assert estimates == sorted(estimates, reverse=True) and len(set(estimates)) == len(estimates)
    assert eta.update(100, now=10.0) == 0.0


# --- the canvas aggregate scripts, on the real Redis


def stream(redis_client: Any, job_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(fields["p"])
        for _, fields in redis_client.xrange(job_partition(redis_client, job_id).job_events(job_id))
    ]


def test_canvas_aggregate_is_weighted_monotonic_and_completes_once(redis_client: Any) -> None:
    from notifier.contract.events import status_update

    job, user = f"canvas-{uuid.uuid4()}", "u-agg"
    shape = [0, 1]
    heavy = Member(0, 3.0, 4.0, 2, shape, True)
    light = Member(1, 1.0, 4.0, 2, shape, True)
    emit_heavy = aggregate.progress_emitter(job, user, heavy)
    emit_light = aggregate.progress_emitter(job, user, light)
    aggregate.started(job, user, "t-heavy")
    aggregate.started(job, user, "t-light")
    emit_heavy(status_update(job, user, "processing", progress=50))  # 3*50/4 = 37.5
    emit_light(status_update(job, user, "processing", progress=100))  # + 100/4 = 62.5
    emit_light(status_update(job, user, "processing", progress=20))  # lower: ignored
    aggregate.succeeded(job, user, light, "t-light", {"n": 1})
    aggregate.succeeded(job, user, light, "t-light", {"n": 1})  # redelivered: counts once
    aggregate.ended(job, user)
    aggregate.succeeded(job, user, heavy, "t-heavy", [1, 2])
    aggregate.succeeded(job, user, heavy, "t-heavy", [1, 2])  # no second job_completed
    aggregate.ended(job, user)

    events = stream(redis_client, job)
    kinds = [e["data"]["status"] if e["type"] == "job_status_update" else e["type"] for e in events]
    assert kinds.count("started") == 1
    assert kinds.count("job_completed") == 1 and kinds[-1] == "job_completed"
    progress = [e["data"]["progress"] for e in events if "progress" in e.get("data", {})]
    assert progress == sorted(progress)
    assert progress[:2] == [37.5, 62.5] and progress[-1] == 100
    assert events[-1]["result"] == [[1, 2], {"n": 1}]
    assert redis_client.zscore(user_partition(user).running, job) is None  # finished: no lease


def test_canvas_lease_is_dropped_while_no_member_runs(redis_client: Any) -> None:
    job, user = f"canvas-{uuid.uuid4()}", "u-lease"
    running = user_partition(user).running
    aggregate.started(job, user, "t-1")
    aggregate.started(job, user, "t-2")
    assert redis_client.zscore(running, job) is not None
    aggregate.ended(job, user)
    assert redis_client.zscore(running, job) is not None  # t-2 still runs
    aggregate.ended(job, user)
    assert redis_client.zscore(running, job) is None  # waits in the queue


# --- importing the producer API


def test_importing_the_producer_api_builds_no_app_and_opens_no_connection() -> None:
    script = textwrap.dedent(
        """
        import socket, sys
        connects = []
        real_connect = socket.socket.connect
        def connect(self, address):
            connects.append(address)
            return real_connect(self, address)
        socket.socket.connect = connect
        socket.create_connection = lambda *a, **k: connects.append(a) or None

        import workers, workers.install, workers.progress
        from workers.progress import report
        import celery._state
        from workers import publisher

        assert "workers.app" not in sys.modules, "workers.app was imported"
        assert celery._state.default_app is None, "a default Celery app was built"
        assert not list(celery._state._apps), "a Celery app was built"
        assert publisher._publisher is None, "a Redis client was created"
        assert connects == [], connects

        from celery import Celery
        app = Celery("users-own", broker="redis://127.0.0.1:1/0")
        assert workers.install(app) is app
        report(50, "outside any task")  # a no-op, and it must not raise
        assert publisher._publisher is None and connects == [], connects
        print("ok")
        """
    )
    assert python_output(script) == "ok"


# --- the bundled app speaks JSON only (a pickled message: integration/security)


def test_celery_app_is_configured_json_only() -> None:
    code = (
        "import json; from workers.app import app; c = app.conf; "
        "print(json.dumps({k: c[k] for k in ('task_serializer', 'result_serializer', "
        "'event_serializer', 'accept_content', 'result_accept_content')}))"
    )
    conf = json.loads(python_output(code))
    assert conf == {
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
    }
