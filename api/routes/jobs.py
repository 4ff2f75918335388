"""``/api/v1/jobs``: start, list, read, cancel content-generation jobs, and read their events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser, Redis
from api.errors import ApiError
from notifier import bus, store
from notifier.auth import Principal
from notifier.events import CANCELLED, parse_event_id, status_update

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

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


def _revoke(job_id: str, terminate: bool) -> None:
    from workers.app import app

    app.control.revoke(job_id, terminate=terminate, signal="SIGTERM")


async def _visible_job(client: Any, user: Principal, job_id: str) -> store.JobState:
    state = await store.get_job(client, job_id)
    if state is None:
        raise ApiError(404, "job_not_found", f"Job {job_id} not found")
    if not user.may_see(state.owner):
        raise ApiError(403, "forbidden", f"Job {job_id} belongs to another user")
    return state


@router.post("", status_code=202, summary="Start a content-generation job")
async def create_job(job: JobRequest, user: CurrentUser) -> dict[str, Any]:
    job_id = await run_in_threadpool(_submit, user.user_id, job)
    return {"message": "Job queued", "data": {"jobId": job_id, "status": "queued"}}


@router.get("", summary="The caller's recent jobs, newest first")
async def list_jobs(
    user: CurrentUser, client: Redis, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    jobs = await store.user_jobs(client, user.user_id, limit)
    return {"message": "Jobs retrieved", "data": {"jobs": [j.to_rest() for j in jobs]}}


@router.get("/{jobId}", summary="A job's current state")
async def get_job(jobId: str, user: CurrentUser, client: Redis) -> dict[str, Any]:
    state = await _visible_job(client, user, jobId)
    return {"message": "Job retrieved", "data": state.to_rest()}


@router.delete("/{jobId}", summary="Cancel (revoke) a job")
async def cancel_job(
    jobId: str,
    request: Request,
    user: CurrentUser,
    client: Redis,
    terminate: bool = Query(False, description="Also stop the task if it is running"),
) -> dict[str, Any]:
    state = await _visible_job(client, user, jobId)
    if state.finished:
        raise ApiError(409, "job_finished", f"Job {jobId} has already finished ({state.state})")
    await run_in_threadpool(_revoke, jobId, terminate)
    event = status_update(
        jobId,
        state.owner,
        CANCELLED,
        message="Cancelled by " + ("an admin" if user.user_id != state.owner else "its owner"),
    )
    if await bus.publish(client, event, request.app.state.settings) is None:
        current = await store.get_job(client, jobId)
        status = current.state if current else "unknown"
        raise ApiError(409, "job_finished", f"Job {jobId} has already finished ({status})")
    return {"message": "Job cancelled", "data": {"jobId": jobId, "status": CANCELLED}}


@router.get("/{jobId}/events", summary="The job's events after an id, in order")
async def job_events(
    jobId: str,
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
    await _visible_job(client, user, jobId)
    events = await store.job_events(client, jobId, after)
    return {"message": "Events retrieved", "data": {"jobId": jobId, "events": events}}
