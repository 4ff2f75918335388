"""``submit()``: publish a task or a canvas with its owner, so jobcast tracks it."""

from __future__ import annotations

from typing import Any

from workers import canvas
from workers.tracking import HEADER_USER


def submit(
    task: Any, *args: Any, user_id: str | int, options: dict[str, Any] | None = None, **kwargs: Any
) -> str:
    """Publish ``task`` owned by ``user_id``; returns the job id.

    ``task`` is a task, a signature, or a canvas (group, chain, chord). ``args``/``kwargs``
    are the task's (for a canvas: the partial arguments Celery passes to its first tasks);
    ``options`` are ``apply_async`` options (countdown, queue, headers, ...). A single task's
    job id is its Celery task id; a canvas gets one job id of its own, and its members are
    not jobs of their own. Give a member more weight in the canvas's progress with
    ``sig.set(jobcast_weight=2)`` (default 1).
    """
    if user_id is None or str(user_id) == "":
        raise ValueError("submit() needs a user_id: jobcast tracks only jobs with an owner")
    opts = dict(options or {})
    headers = dict(opts.pop("headers", None) or {})
    if canvas.is_canvas(task):
        return canvas.submit(
            task, args, kwargs, user_id=str(user_id), headers=headers, options=opts
        )
    headers[HEADER_USER] = str(user_id)
    result = task.apply_async(args, kwargs, headers=headers, **opts)
    return str(result.id)
