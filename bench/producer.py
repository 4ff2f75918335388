"""The Python producer: publishes in the format each Python server under test consumes.

    python -m bench.producer '{"mode": "jobcast", "redisUrl": "...", ...}'

``mode`` ``jobcast``: ``notifier.core.bus.publish_sync`` -- the Lua publish path that
``workers.progress.report()`` uses -- with events built by
``notifier.contract.events.status_update``;
broadcasts through ``POST /api/v1/websocket/broadcast/system`` with an ADMIN token (or, with
no ``apiUrl``, ``publish_sync(system_notification)``). ``mode`` ``naive``: a write-only
``socketio.RedisManager`` emitting to room ``job:<id>``.

It obeys the same JSON-lines command protocol as ``bench/emitter_node.js`` (stdin in,
stdout out; progress on stderr): ``setup``, ``rate``, ``burst``, ``broadcast``, ``stop``.
Event ``k`` goes to job ``k % jobs`` with per-job number ``n = k // jobs + 1``; every event
carries ``data.sentAt`` (epoch ms, float) taken just before the publish call. With
``"soak": true`` in ``setup`` and ``rate`` (``bench/soak.py``), ``jobs`` is the number of
users and each user's jobs start and finish one after another (:func:`soak_event`).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def now_ms() -> float:
    return time.time() * 1000.0


def log(msg: str) -> None:
    print(f"  [producer] {msg}", file=sys.stderr, flush=True)


def out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def progress_fields(n: int) -> tuple[int, str]:
    return n % 100, f"Generating content: section {n % 10 + 1} of 10"


class JobcastPublisher:
    def __init__(self, params: dict[str, Any]) -> None:
        from notifier.contract.settings import get_settings
        from notifier.core import bus
        from notifier.edge.auth import mint_token

        self.bus = bus
        self.settings = get_settings()  # REDIS_URL and JOBCAST_JWT_SECRET from the environment
        self.client = bus.sync_client(self.settings)
        self.api_url = params.get("apiUrl")
        self.admin_token = mint_token(
            self.settings.verification_key(), "bench-admin", roles=["ADMIN"]
        )
        #: Burst mode sends this many publish-script calls per round trip (a pipeline of the
        #: very script and arguments publish_sync uses); 1 means plain publish_sync. Paced
        #: mode uses publish_sync, and one pipeline when several events are due at once.
        self.batch = max(1, int(params.get("burstBatch", 100)))
        self.connections = max(1, int(params.get("burstConnections", 1)))
        self._shas: dict[str, str] = {}  # script source -> its sha, loaded once

    def _event(self, cmd: dict[str, Any], k: int) -> Any:
        from notifier.contract.events import status_update

        if cmd.get("soak"):
            return soak_event(cmd, k)
        jobs = cmd["jobs"]
        n = k // jobs + 1
        progress, message = progress_fields(n)
        j = k % jobs
        return status_update(
            f"{cmd['jobPrefix']}{j}",
            f"{cmd['userPrefix']}{j}",
            "processing",
            progress=progress,
            message=message,
            seq=n,
            sentAt=now_ms(),
            n=n,
        )

    def setup(self, cmd: dict[str, Any]) -> int:
        """A ``queued`` update per job, owned by the client that will subscribe to it."""
        from notifier.contract.events import status_update

        jobs = int(cmd["jobs"])
        if cmd.get("soak"):  # the first job of each user, <jobPrefix><user>-0
            for u in range(jobs):
                job, user = soak_ids(cmd, u, 0)
                self.bus.publish_sync(self.client, status_update(job, user, "queued", seq=1),
                                      self.settings)  # fmt: skip
            return jobs
        for j in range(jobs):
            event = status_update(f"{cmd['jobPrefix']}{j}", f"{cmd['userPrefix']}{j}", "queued")
            self.bus.publish_sync(self.client, event, self.settings)
        return jobs

    def one(self, cmd: dict[str, Any], k: int) -> None:
        self.bus.publish_sync(self.client, self._event(cmd, k), self.settings)

    def many(self, cmd: dict[str, Any], start: int, stop: int, batched: bool = False) -> None:
        if self.batch == 1 and not batched:
            for k in range(start, stop):
                self.one(cmd, k)
            return
        self.pipelined(cmd, range(start, stop))

    def pipelined(self, cmd: dict[str, Any], ks: Sequence[int]) -> None:
        """Events ``ks`` in one round trip (a pipeline of publish_sync's script calls); the
        steps the hot path hands back (``bus.declined``) in a second one, as publish_sync."""
        from notifier.contract import keys

        space = keys.keyspace(self.settings.partitions)
        events = [self._event(cmd, k) for k in ks]
        calls: list[int] = []  # where each event's script call is among the replies
        with self.client.pipeline(transaction=False) as pipe:
            for event in events:
                if self.bus.records_owner(event):  # as publish_sync: a change of state
                    pipe.set(
                        keys.job_owner(event.job_id), event.user_id,
                        ex=self.settings.retention_seconds,
                    )  # fmt: skip
                part = space.of_user(event.user_id)
                calls.append(len(pipe))
                self._evalsha(pipe, self.bus.publish_call(part, event, self.settings))
            replies = pipe.execute()
        declined = [e for e, i in zip(events, calls, strict=True) if self.bus.declined(replies[i])]
        if declined:
            with self.client.pipeline(transaction=False) as pipe:
                for event in declined:
                    part = space.of_user(event.user_id)
                    self._evalsha(pipe, self.bus.full_call(part, event, self.settings))
                pipe.execute()

    def _evalsha(self, pipe: Any, call: Any) -> None:
        # EVALSHA of each script loaded once: a pipeline of redis-py Script calls would first
        # ask SCRIPT EXISTS, one more round trip per batch that publish_sync does not make.
        sha = self._shas.get(call.source)
        if sha is None:
            sha = self._shas[call.source] = self.client.script_load(call.source)
        pipe.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)

    def broadcast(self, ident: int) -> float:
        from notifier.contract.events import SYSTEM_NOTIFICATION, Event

        sent_at = now_ms()
        text = f"bench broadcast {ident} sentAt={sent_at:.3f}"
        if self.api_url:
            request = urllib.request.Request(
                f"{self.api_url}/api/v1/websocket/broadcast/system",
                data=json.dumps({"message": text, "level": "info"}).encode(),
                headers={
                    "Authorization": f"Bearer {self.admin_token}",
                    "Content-Type": "application/json",
                },
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        else:
            message = {
                "type": SYSTEM_NOTIFICATION,
                "message": text,
                "level": "info",
                "timestamp": int(sent_at),
                "sentAt": sent_at,
            }
            self.bus.publish_sync(self.client, Event(route="all", message=message), self.settings)
        return sent_at

    def close(self) -> None:
        self.client.close()


#: bench/soak.py: the events of one job of a user, one per pass over the users: three
#: progress steps, the next job's ``queued``, then this job's ``job_completed``.
SOAK_CYCLE = 5
SOAK_COMPLETED_STEP = 4


def soak_ids(cmd: dict[str, Any], user: int, seq: int) -> tuple[str, str]:
    """(job id, user id) of user ``user``'s job number ``seq``."""
    return f"{cmd['jobPrefix']}{user}-{seq}", f"{cmd['userPrefix']}{user}"


def soak_event(cmd: dict[str, Any], k: int) -> Any:
    """Event ``k`` of the soak: user ``k % jobs``; pass ``r = k // jobs`` is step ``r % 5``
    of that user's job ``r // 5`` (see SOAK_CYCLE). Each user has one job running and the
    next one queued before the running one completes, so jobs start and finish throughout."""
    from notifier.contract.events import job_completed, status_update

    users = int(cmd["jobs"])
    user, r = k % users, k // users
    seq, step = divmod(r, SOAK_CYCLE)
    job, owner = soak_ids(cmd, user, seq)
    if step == SOAK_COMPLETED_STEP:
        return job_completed(job, owner, {"ok": True, "k": k}, seq=5)
    if step == SOAK_COMPLETED_STEP - 1:
        nxt, _ = soak_ids(cmd, user, seq + 1)
        return status_update(nxt, owner, "queued", seq=1)
    progress = 25 * (step + 1)
    text = f"step {step + 1} of 3"
    return status_update(
        job, owner, "processing", progress=progress, message=text, seq=step + 2, sentAt=now_ms()
    )


class NaivePublisher:
    """What the naive server consumes: python-socketio's own Redis pub/sub messages."""

    batch = 1

    def __init__(self, params: dict[str, Any]) -> None:
        import socketio

        self.manager = socketio.RedisManager(params["redisUrl"], write_only=True)
        self.connections = max(1, int(params.get("burstConnections", 1)))

    def setup(self, cmd: dict[str, Any]) -> int:
        return 0

    def one(self, cmd: dict[str, Any], k: int) -> None:
        jobs = cmd["jobs"]
        n = k // jobs + 1
        progress, text = progress_fields(n)
        job_id = f"{cmd['jobPrefix']}{k % jobs}"
        sent_at = now_ms()
        message = {
            "type": "job_status_update",
            "jobId": job_id,
            "timestamp": int(sent_at),
            "data": {
                "status": "processing",
                "progress": progress,
                "message": text,
                "sentAt": sent_at,
                "n": n,
            },
            "eventId": f"{int(sent_at)}-{k}",
        }
        self.manager.emit("job_status_update", message, namespace="/", room=f"job:{job_id}")

    def many(self, cmd: dict[str, Any], start: int, stop: int, batched: bool = False) -> None:
        self.pipelined(cmd, range(start, stop))

    def pipelined(self, cmd: dict[str, Any], ks: Sequence[int]) -> None:
        for k in ks:
            self.one(cmd, k)

    def broadcast(self, ident: int) -> float:
        sent_at = now_ms()
        message = {
            "type": "system_notification",
            "message": f"bench broadcast {ident}",
            "level": "info",
            "timestamp": int(sent_at),
            "sentAt": sent_at,
            "eventId": f"{int(sent_at)}-0",
        }
        self.manager.emit("system_notification", message, namespace="/")
        return sent_at

    def close(self) -> None:
        pass


def run_rate(pub: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """``rate`` events/s for ``durationS`` seconds, paced; gives up at 1.5x the duration."""
    rate = float(cmd["rate"])
    total = round(rate * float(cmd["durationS"]))
    limit = float(cmd["durationS"]) * 1.5 + 5
    t0_wall = now_ms()
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        elapsed = time.perf_counter() - t0
        if elapsed > limit:
            log(f"fell behind: {sent}/{total} sent after {elapsed:.1f}s; stopping")
            break
        due = min(total, int(elapsed * rate) + 1)
        if due - sent == 1:
            pub.one(cmd, sent)
            sent += 1
        elif due > sent:
            # Several events are due at once (high rates): one round trip for them, as
            # concurrent Celery workers would overlap theirs; at most 100 at a time.
            stop = min(due, sent + 100)
            pub.many(cmd, sent, stop, batched=True)
            sent = stop
        wait = sent / rate - (time.perf_counter() - t0)
        if wait > 0:
            time.sleep(min(wait, 0.01))
    return {"sent": sent, "t0": t0_wall, "t1": now_ms()}


def run_burst(pub: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """``count`` events as fast as they go, over ``pub.connections`` publishing threads.

    Each thread publishes the events of its own share of the jobs (job ``j`` goes to thread
    ``j % connections``), so a job's events keep their order; one thread would leave its
    connection idle while Redis runs a batch, and Redis idle while it builds the next.
    """
    count = int(cmd["count"])
    step = max(1, getattr(pub, "batch", 1))
    lanes = max(1, getattr(pub, "connections", 1))
    if int(cmd["jobs"]) % lanes:
        lanes = 1  # k % lanes must follow the job for the order to hold
    t0 = now_ms()
    published = [0] * lanes

    def lane(t: int) -> None:
        ks = range(t, count, lanes)
        last_log = time.monotonic()
        for i in range(0, len(ks), step):
            if step == 1:
                pub.one(cmd, ks[i])
            else:
                pub.pipelined(cmd, ks[i : i + step])
            published[t] = min(len(ks), i + step)
            if t == 0 and time.monotonic() - last_log > 2:
                last_log = time.monotonic()
                log(f"published {sum(published)}/{count}")

    if lanes == 1:
        lane(0)
    else:
        with ThreadPoolExecutor(lanes, thread_name_prefix="lane") as pool:
            for done in [pool.submit(lane, t) for t in range(lanes)]:
                done.result()
    return {"sent": sum(published), "t0": t0, "t1": now_ms()}


def main(argv: list[str]) -> int:
    params = json.loads(argv[1] if len(argv) > 1 else "{}")
    factories: dict[str, Callable[[dict[str, Any]], Any]] = {
        "jobcast": JobcastPublisher,
        "naive": NaivePublisher,
    }
    pub = factories[params["mode"]](params)
    out({"event": "ready"})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            name = cmd.get("cmd")
            try:
                if name == "setup":
                    out({"event": "done", "sent": pub.setup(cmd)})
                elif name == "rate":
                    out({"event": "done", **run_rate(pub, cmd)})
                elif name == "burst":
                    out({"event": "done", **run_burst(pub, cmd)})
                elif name == "broadcast":
                    sent_at = pub.broadcast(int(cmd["id"]))
                    out({"event": "done", "sent": 1, "t0": sent_at, "t1": now_ms()})
                elif name == "stop":
                    out({"event": "stopped"})
                    break
            except Exception as exc:  # reported to the orchestrator, which fails the run
                log(f"{name} failed: {exc!r}")
                out({"event": "error", "error": repr(exc)})
    finally:
        pub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
