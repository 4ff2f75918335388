"""``submit()``: publish a task with its owner, so jobcast tracks it."""

from __future__ import annotations

from typing import Any

from celery.canvas import Signature

from workers.tracking import HEADER_USER


def submit(
    task: Any, *args: Any, user_id: str | int, options: dict[str, Any] | None = None, **kwargs: Any
) -> str:
    """Publish ``task`` (a task or a signature) owned by ``user_id``; returns the job id.

    ``args``/``kwargs`` are the task's; ``options`` are ``apply_async`` options (countdown,
    queue, ...). A single task's job id is its Celery task id.
    """
    if user_id is None or str(user_id) == "":
        raise ValueError("submit() needs a user_id: jobcast tracks only jobs with an owner")
    opts = dict(options or {})
    headers = dict(opts.pop("headers", None) or {})
    headers[HEADER_USER] = str(user_id)
    if isinstance(task, Signature) and not hasattr(task, "tasks"):
        result = task.apply_async(args, kwargs, headers=headers, **opts)
    elif isinstance(task, Signature):
        raise TypeError(
            "canvas jobs (group, chain, chord) are not supported by submit() yet; "
            "submit a single task or signature"
        )
    else:
        result = task.apply_async(args, kwargs, headers=headers, **opts)
    return str(result.id)
