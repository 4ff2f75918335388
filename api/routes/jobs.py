"""``/api/v1/jobs``: start, list, read, cancel content-generation jobs, and read their events."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import CurrentUser, Redis
from api.errors import ApiError
from notifier.contract.events import CANCELLED, parse_event_id, status_update
from notifier.contract.keys import Keyspace, keyspace
from notifier.core import bus, store
from notifier.edge.auth import Principal

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    topic: str = Field(min_length=1, max_length=200, description="What to write about")
    sections: int = Field(default=5, ge=1, le=100)
    secondsPerSection: float = Field(default=1.0, ge=0, le=60)
    failAtSection: int | None = Field(default=None, ge=1, description="Fail at this section (demo)")

    @model_validator(mode="after")
    def _fail_inside(self) -> JobRequest:
        if self.failAtSection is not None and self.failAtSection > self.sections:
            raise ValueError("failAtSection must not be greater than sections")
        return self


def _submit(user_id: str, job: JobRequest) -> str:
    import workers
    from workers.tasks import generate_content

    return str(
        workers.submit(
            generate_content,
            job.topic,
            user_id=user_id,
            sections=job.sections,
            seconds_per_section=job.secondsPerSection,
            fail_at_section=job.failAtSection,
        )
    )


def _revoke(task_ids: list[str], terminate: bool) -> None:
    from workers.app import app

    app.control.revoke(task_ids, terminate=terminate, signal="SIGTERM")


async def _rest(
    client: Any, request: Request, user: Principal, states: list[store.JobState]
) -> list[dict[str, Any]]:
    """The jobs as REST shows them; for an admin, with their Flower links when configured."""
    flower_url = request.app.state.settings.flower_url if user.is_admin else None
    if not flower_url:
        return [state.to_rest() for state in states]
    members: dict[str, list[str]] = {}
    for state in states:  # a job's canvas hash is in its owner's partition
        part = _space(request).of_user(state.owner)
        members.update(await store.canvas_tasks(client, part, [state.job_id]))
    return [
        state.to_rest(is_admin=True, flower_url=flower_url, task_ids=members.get(state.job_id))
        for state in states
    ]


def _space(request: Request) -> Keyspace:
    return keyspace(request.app.state.settings.partitions)


async def _visible_job(
    client: Any, request: Request, user: Principal, job_id: str
) -> store.JobState:
    state = await store.find_job(client, _space(request), job_id)
    if state is None:
        raise ApiError(404, "job_not_found", f"Job {job_id} not found")
    if not user.may_see(state.owner):
        raise ApiError(403, "forbidden", f"Job {job_id} belongs to another user")
    return state


@router.post("", status_code=202, summary="Start a content-generation job")
async def create_job(job: JobRequest, user: CurrentUser) -> dict[str, Any]:
    job_id = await asyncio.to_thread(_submit, user.user_id, job)  # Celery is blocking I/O
    return {"message": "Job queued", "data": {"jobId": job_id, "status": "queued"}}


@router.get("", summary="The caller's recent jobs, newest first")
async def list_jobs(
    request: Request,
    user: CurrentUser,
    client: Redis,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    part = _space(request).of_user(user.user_id)
    jobs = await store.user_jobs(client, part, user.user_id, limit)
    return {"message": "Jobs retrieved", "data": {"jobs": await _rest(client, request, user, jobs)}}


@router.get("/{jobId}", summary="A job's current state")
async def get_job(jobId: str, request: Request, user: CurrentUser, client: Redis) -> dict[str, Any]:
    state = await _visible_job(client, request, user, jobId)
    [body] = await _rest(client, request, user, [state])
    return {"message": "Job retrieved", "data": body}


@router.delete("/{jobId}", summary="Cancel (revoke) a job")
async def cancel_job(
    jobId: str,
    request: Request,
    user: CurrentUser,
    client: Redis,
    terminate: bool = Query(False, description="Also stop the task if it is running"),
) -> dict[str, Any]:
    state = await _visible_job(client, request, user, jobId)
    part = _space(request).of_user(state.owner)
    if state.finished:
        raise ApiError(409, "job_finished", f"Job {jobId} has already finished ({state.state})")
    # A canvas job is its members' tasks; a single task's job id is its task id.
    members = (await store.canvas_tasks(client, part, [jobId])).get(jobId) or [jobId]
    await asyncio.to_thread(_revoke, members, terminate)
    event = status_update(
        jobId,
        state.owner,
        CANCELLED,
        message="Cancelled by " + ("an admin" if user.user_id != state.owner else "its owner"),
    )
    if await bus.publish(client, event, request.app.state.settings) is None:
        # Ended meanwhile: cancelled by the revoke itself (the worker reported the terminated
        # task first) is what was asked; any other ending is a conflict.
        current = await store.get_job(client, jobId, part)
        status = current.state if current else "unknown"
        if status != CANCELLED:
            raise ApiError(409, "job_finished", f"Job {jobId} has already finished ({status})")
    return {"message": "Job cancelled", "data": {"jobId": jobId, "status": CANCELLED}}


@router.get("/{jobId}/events", summary="The job's events after an id, in order")
async def job_events(
    jobId: str,
    request: Request,
    user: CurrentUser,
    client: Redis,
    after: Annotated[str, Query(description="An eventId; omit for all")] = "0-0",
) -> dict[str, Any]:
    try:
        parse_event_id(after)
    except ValueError as exc:
        raise ApiError(
            422, "validation_error", "after: must be an eventId like 1700000000000-0"
        ) from exc
    state = await _visible_job(client, request, user, jobId)
    part = _space(request).of_user(state.owner)
    events = await store.job_events(client, part, jobId, after)
    return {"message": "Events retrieved", "data": {"jobId": jobId, "events": events}}
