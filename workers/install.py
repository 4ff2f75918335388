"""``install(app)``: connect jobcast's signal handlers for a Celery app.

    from celery import Celery
    import workers

    app = Celery("mine", broker=...)
    workers.install(app)

    @app.task(bind=True)
    def render(self, doc_id):
        report(50, "Rendering")            # from workers.progress import report
        return {"docId": doc_id}

    job_id = workers.submit(render, 42, user_id=current_user.id)

Install it where the app is defined, so that it runs both in the processes that publish
(``before_task_publish`` sends ``queued``) and in the workers. jobcast's Redis is
``REDIS_URL``; the app's broker and result backend may be anything else. Nothing connects
until the first tracked event; importing this module builds no app.

Celery signals are process-wide; handlers ignore every task published without a
``jobcast_user_id`` header, so installing costs untracked tasks one dict lookup.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from workers import signals as handlers

_CONNECTIONS = (
    (signals.before_task_publish, handlers.on_before_task_publish),
    (signals.task_prerun, handlers.on_task_prerun),
    (signals.task_retry, handlers.on_task_retry),
    (signals.task_success, handlers.on_task_success),
    (signals.task_failure, handlers.on_task_failure),
    (signals.task_revoked, handlers.on_task_revoked),
    (signals.task_postrun, handlers.on_task_postrun),
    (signals.task_rejected, handlers.on_task_rejected),
    (signals.task_unknown, handlers.on_task_rejected),
    (signals.worker_init, handlers.on_worker_init),
)


def install(app: Any = None) -> Any:
    """Connect the handlers (idempotent) and return ``app``.

    ``app`` is accepted so the call reads as what it does for the user's app; the
    handlers themselves are process-wide, as Celery's signals are.
    """
    for signal, handler in _CONNECTIONS:
        uid = f"jobcast.{signal.name}.{handler.__name__}"
        signal.connect(handler, weak=False, dispatch_uid=uid)
    return app
