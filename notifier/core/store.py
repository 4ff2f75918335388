"""The read side of job state kept by the publish script: snapshots, job lists, history.

A job's keys live in its owner's partition: :func:`locate` finds it from the job id alone
(one ``GET`` of the owner index the publisher writes before the job's first event)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from notifier.contract import keys
from notifier.contract.events import JOB_STATUS_UPDATE, TERMINAL_STATES, parse_event_id
from notifier.contract.keys import Keyspace, Partition
from notifier.core.bus import AsyncRedis, stream_events, text


def _snapshot(raw: dict[str, str]) -> dict[str, Any]:
    """A job hash's snapshot: the data of its latest progress step (``step``, written by the
    hot path, ``lua/progress.lua``), else ``snapshot`` (``lua/publish.lua``)."""
    step = raw.get("step")
    if step:
        data = json.loads(step).get("data")
        if isinstance(data, dict):
            return data
    return dict(json.loads(raw.get("snapshot") or "{}"))


@dataclass(frozen=True, slots=True)
class JobState:
    job_id: str
    owner: str
    state: str
    snapshot: dict[str, Any]
    event_id: str
    created_at: int
    updated_at: int
    terminal: dict[str, Any] | None
    #: The live output's length in code points and in bytes, and whether it was cut.
    output_length: int = 0
    output_bytes: int = 0
    output_truncated: bool = False
    #: The output itself (its first ``output_bytes`` bytes), when it was read; else None.
    output: str | None = None

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[str, str]) -> JobState | None:
        if not raw or "owner" not in raw:
            return None
        return cls(
            job_id=job_id,
            owner=raw["owner"],
            state=raw.get("state", ""),
            snapshot=_snapshot(raw),
            event_id=raw.get("eventId", "0-0"),
            created_at=int(raw.get("createdAt") or 0),
            updated_at=int(raw.get("updatedAt") or 0),
            terminal=json.loads(raw["terminal"]) if raw.get("terminal") else None,
            output_length=int(raw.get("outputLength") or 0),
            output_bytes=int(raw.get("outputBytes") or 0),
            output_truncated=bool(raw.get("outputTruncated")),
        )

    def output_fields(self) -> dict[str, Any]:
        """``output`` (when read), ``outputLength`` and, once cut, ``outputTruncated``."""
        fields: dict[str, Any] = {}
        if self.output is not None:
            fields["output"] = self.output
        fields["outputLength"] = self.output_length
        if self.output_truncated:
            fields["outputTruncated"] = True
        return fields

    @property
    def key(self) -> tuple[int, int]:
        return parse_event_id(self.event_id)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def snapshot_message(self) -> dict[str, Any]:
        """What a new subscriber gets at once: the terminal message, or the current update;
        its ``data`` also holds the live output so far (``output``, ``outputLength``,
        ``outputTruncated``): exactly the chunks up to the snapshot's ``eventId``."""
        if self.terminal is not None:
            msg = dict(self.terminal)
            data = msg.get("data")
            msg["data"] = {**(data if isinstance(data, dict) else {}), **self.output_fields()}
        else:
            msg = {
                "type": JOB_STATUS_UPDATE,
                "jobId": self.job_id,
                "timestamp": self.updated_at,
                "data": {**self.snapshot, **self.output_fields()},
            }
        msg["eventId"] = self.event_id
        msg["snapshot"] = True
        return msg

    def to_rest(
        self,
        *,
        is_admin: bool = False,
        flower_url: str | None = None,
        task_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The job as ``GET /api/v1/jobs/{jobId}`` shows it.

        For an admin, when Flower's URL is configured, it links the job's task in Flower
        (``flowerUrl``); a canvas job (``task_ids``: its members) links its first member and
        lists every member's link in ``flowerUrls``. Terminal events carry no link: they go
        to the job's owner, who need not be an admin.
        """
        body: dict[str, Any] = {
            "jobId": self.job_id,
            "userId": self.owner,
            "status": self.state,
            "progress": self.snapshot.get("progress", 0),
            "message": self.snapshot.get("message"),
            "eventId": self.event_id,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }
        if "etaSeconds" in self.snapshot:
            body["etaSeconds"] = self.snapshot["etaSeconds"]
        body.update(self.output_fields())
        if self.terminal is not None:
            if "result" in self.terminal:
                body["result"] = self.terminal["result"]
            if "error" in self.terminal:
                body["error"] = self.terminal["error"]
                body["errorCode"] = self.terminal.get("data", {}).get("code")
        if is_admin and flower_url:
            base = flower_url.rstrip("/")
            links = [f"{base}/task/{task_id}" for task_id in (task_ids or [self.job_id])]
            body["flowerUrl"] = links[0]
            if task_ids:
                body["flowerUrls"] = links
        return body


async def job_owner(client: AsyncRedis, job_id: str) -> str | None:
    """Who owns ``job_id`` (None: no such job, or it expired)."""
    owner = await client.get(keys.job_owner(job_id))
    return text(owner) if owner else None


async def locate(client: AsyncRedis, space: Keyspace, job_id: str) -> Partition | None:
    """The partition of ``job_id`` (its owner's), or None when there is no such job."""
    owner = await job_owner(client, job_id)
    return space.of_user(owner) if owner is not None else None


async def get_job(client: AsyncRedis, job_id: str, part: Partition) -> JobState | None:
    """The job's state and its live output as of the state's ``eventId``: the output key is
    append only, and the hash says how many of its bytes that event had written."""
    raw: dict[str, str] = await client.hgetall(part.job(job_id))  # type: ignore[assignment]
    state = JobState.from_hash(job_id, raw)
    if state is None:
        return None
    output = ""
    if state.output_bytes > 0:
        output = text(await client.getrange(part.job_output(job_id), 0, state.output_bytes - 1))
    return replace(state, output=output)


async def find_job(client: AsyncRedis, space: Keyspace, job_id: str) -> JobState | None:
    """The job, from its id alone (:func:`locate`, then its hash)."""
    part = await locate(client, space, job_id)
    return await get_job(client, job_id, part) if part is not None else None


async def user_jobs(
    client: AsyncRedis, part: Partition, user_id: str, limit: int = 50
) -> list[JobState]:
    """The user's most recent jobs (``part``: the user's partition), newest first."""
    job_ids = [text(j) for j in await client.zrevrange(part.user_jobs(user_id), 0, limit - 1)]
    if not job_ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(part.job(job_id))
        hashes = await pipe.execute()
    states = (JobState.from_hash(job_id, raw) for job_id, raw in zip(job_ids, hashes, strict=True))
    return [state for state in states if state is not None]


async def job_events(
    client: AsyncRedis, part: Partition, job_id: str, after: str = "0-0", limit: int = 1000
) -> list[dict[str, Any]]:
    """The job's events after ``after`` (exclusive), in order, as wire messages."""
    entries = await client.xrange(part.job_events(job_id), min=f"({after}", count=limit)
    return [event.message() for event in stream_events(entries)]


async def canvas_tasks(
    client: AsyncRedis, part: Partition, job_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The member task ids of those of ``job_ids`` (jobs of ``part``) that are canvas jobs."""
    if not job_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(part.canvas(job_id), "tasks")
        raw = await pipe.execute()
    return {
        job_id: [str(task_id) for task_id in json.loads(tasks)]
        for job_id, tasks in zip(job_ids, raw, strict=True)
        if tasks
    }
