"""The bundled Celery app: ``celery -A workers.app worker``."""

from __future__ import annotations

from celery import Celery

from notifier.contract.settings import get_settings
from workers.install import install

settings = get_settings()

app = Celery(
    "jobcast",
    broker=settings.broker_url(),
    backend=settings.result_backend(),
    include=["workers.tasks"],
)
app.conf.update(
    # Sentinel-managed broker and results (sentinel:// URLs): which master to ask for.
    broker_transport_options=settings.celery_sentinel_options(settings.broker_url()),
    result_backend_transport_options=settings.celery_sentinel_options(settings.result_backend()),
    # JSON only: no pickle on any wire.
    task_serializer="json",
    result_serializer="json",
    event_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    # What Flower needs to list tasks live.
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    # Long content-generation tasks: take one at a time.
    worker_prefetch_multiplier=1,
    # Acknowledge on receipt. With acks_late, kombu 5.7's Redis transport crashes the whole
    # worker ("Unrecoverable error ... 'NoneType' object has no attribute 'hostname'" in
    # restore_unacked) when Redis restarts under a running task; and a task lost with its
    # worker is reported as worker_lost by jobcast's lease reaper either way.
    task_acks_late=False,
    task_reject_on_worker_lost=False,  # a dead child fails its task: reported as worker_lost
    result_expires=settings.retention_seconds,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
install(app)
