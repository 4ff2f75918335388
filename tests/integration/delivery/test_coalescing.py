"""Progress coalescing (``JOBCAST_PROGRESS_MIN_INTERVAL_MS``, default 50 ms).

A real Celery task (``tests.support.fault_celery_app.hammer``) calls ``report()`` 100,000
times in a tight loop, retrying itself half way. The job's history must hold a bounded number of
events (at most one progress per interval per run, plus the status changes); the latest
value of each run arrives (50 before the retry, 100 before the end); every status change
(started, retrying, started again) and the terminal event are there, at the subscriber too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from notifier.contract.settings import get_settings
from tests.support.celery_helpers import SETTLE_SECONDS, submit
from tests.support.fault_helpers import fault_worker
from tests.support.helpers import assert_strictly_increasing, is_terminal, job_events

pytestmark = pytest.mark.integration

REPORTS = 100_000


@pytest.fixture(scope="module")
def hammer_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with fault_worker(tmp_path_factory.mktemp("fault-worker") / "worker.log"):
        yield


def kind(event: dict[str, Any]) -> str:
    if event["type"] == "job_status_update":
        return str(event["data"]["status"])
    return str(event["type"])


async def test_report_in_a_tight_loop_is_coalesced(
    hammer_worker: None, http: httpx.AsyncClient, sio_client: Any, tokens: Any
) -> None:
    from tests.support.fault_celery_app import hammer

    interval_ms = get_settings().progress_min_interval_ms
    user = "hammer-1"
    token = tokens.make(user)
    client = await sio_client(token)
    # A short countdown: the subscriber is in place before the task starts.
    job_id = await submit(hammer, REPORTS, user_id=user, options={"countdown": 1})
    answer = await client.request("subscribe_job", jobId=job_id)
    assert answer["type"] == "subscribed", answer
    end = await client.wait_for(is_terminal(job_id), within=90, what="the end of the hammer")
    assert end["type"] == "job_completed", end
    assert end["result"] == {"reports": REPORTS}
    await client.settle(SETTLE_SECONDS)

    history = await job_events(http, token, job_id)
    kinds = [kind(e) for e in history]
    changes = [k for k in kinds if k != "processing"]
    assert changes == ["queued", "started", "retrying", "started", "job_completed"], changes
    assert len(history) < 1000, f"{len(history)} events for {REPORTS} reports"

    runs: list[list[dict[str, Any]]] = []
    for event, k in zip(history, kinds, strict=True):
        if k == "started":
            runs.append([])
        elif k == "processing":
            runs[-1].append(event)
    assert len(runs) == 2 and all(runs), [len(r) for r in runs]
    assert runs[0][-1]["data"]["progress"] == 50, "the first run's last value was lost"
    assert runs[1][-1]["data"]["progress"] == 100, "the last value was lost"

    # The subscriber: the snapshot, then events of the history, in order; every status
    # change; the last value of each run before the change that follows it.
    seen = [m for m in client.for_job(job_id) if not m.get("snapshot")]
    by_id = {e["eventId"]: e for e in history}
    assert all(m["eventId"] in by_id for m in seen)
    assert_strictly_increasing(seen)
    seen_kinds = [kind(m) for m in seen]
    assert [k for k in seen_kinds if k not in ("processing", "queued")] == [
        "started",
        "retrying",
        "started",
        "job_completed",
    ], seen_kinds
    for status_index in (seen_kinds.index("retrying"), len(seen) - 1):
        before = seen[status_index - 1]
        assert kind(before) == "processing", seen_kinds[status_index - 3 : status_index + 1]
        assert before["data"]["progress"] == (50 if status_index < len(seen) - 1 else 100)

    # Per run: one progress per interval at most, plus the first and the last (which the
    # status change ending the run flushes). The event's timestamp is when report() built
    # it: a held event goes out when the interval has passed, with the timestamp of the
    # last report before that, so single gaps between timestamps can be short (a report
    # while the task's thread was busy sending); their count over the run cannot exceed
    # one per interval.
    for n, run in enumerate(runs):
        values = [e["data"]["progress"] for e in run]
        assert values == sorted(values), f"run {n}: progress went back"
        span = run[-1]["timestamp"] - run[0]["timestamp"]
        allowed = span / interval_ms + 3  # the first, the last, and one held
        assert len(run) <= allowed, (
            f"run {n}: {len(run)} progress events over {span} ms: more than one per "
            f"{interval_ms} ms (at most {allowed:.0f})"
        )
