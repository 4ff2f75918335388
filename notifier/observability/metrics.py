"""Prometheus metrics of a notifier process.

The dashboard (``deploy/grafana/jobcast.json``) and the alert rules
(``deploy/prometheus/alerts.yml``) use these names; a test checks that every name they use
is on a running server's ``/metrics``.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from notifier.contract.events import (
    COMPLETED,
    ERROR_CODES,
    FAILED,
    JOB_COMPLETED,
    JOB_ERROR,
    JOB_STATUS_UPDATE,
    STATUSES,
    StreamEvent,
    loads,
)

CONNECTIONS = Gauge(
    "jobcast_connections", "Open client connections on this instance", ["transport"]
)
EVENTS_CONSUMED = Counter("jobcast_events_consumed_total", "Events read from the event stream")
EVENTS_DELIVERED = Counter("jobcast_events_delivered_total", "Messages sent to client connections")
AUTH_FAILURES = Counter(
    "jobcast_auth_failures_total", "Refused connections and requests", ["reason", "transport"]
)
CLIENT_ERRORS = Counter("jobcast_client_errors_total", "Error answers to client messages", ["code"])
# Rate-limited clients are CLIENT_ERRORS{code="rate_limited"} (socket messages and REST
# 429s): exposed at 0 from the start, so that rate() and increase() see the first one.
CLIENT_ERRORS.labels("rate_limited")
DELIVERY_DELAY = Histogram(
    "jobcast_delivery_delay_seconds",
    "From the event's timestamp to its emission to the first recipient",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
READER_LAG = Gauge(
    "jobcast_reader_lag_entries",
    "Stream entries after this instance's last ids in the partitions it reads (capped)",
)
READER_PARTITIONS = Gauge(
    "jobcast_reader_partitions",
    "Partitions this instance reads: those of its connected users, of the jobs they "
    "subscribe to, and all of them while an ops subscriber is connected",
)

SLOW_CONSUMER_CLOSES = Counter(
    "jobcast_slow_consumer_closes_total",
    "Connections closed because their send queue passed its byte limit (slow_consumer)",
)
#: Every instance reads the whole event stream, so every instance counts every job event:
#: across instances take max(), not sum().
JOB_EVENTS = Counter(
    "jobcast_job_events_total",
    "Job events read from the event stream, by the job state they carry "
    "(processing: each progress report)",
    ["status"],
)
JOB_ERRORS = Counter(
    "jobcast_job_errors_total",
    "job_error events read from the event stream, by data.code (worker_lost: a lost worker)",
    ["code"],
)
JOBS_RUNNING = Gauge(
    "jobcast_jobs_running",
    "Started jobs holding a run lease (cluster-wide, read from Redis by every instance)",
)
REDIS_UP = Gauge(
    "jobcast_redis_up",
    "1 when this instance's last Redis round trip (once a second) succeeded, else 0",
)
# Unknown until the notifier's first check: a process without a notifier (the REST API
# alone) never reports 0, which would read as Redis down.
REDIS_UP.set(math.nan)

TRANSPORT = Info(
    "jobcast_transport",
    "The transport path this process serves through: fast (jobcast's own write path) or "
    "stock (the libraries as released)",
)

_JOB_STATES = (*STATUSES, COMPLETED, FAILED)
_STATE_CHILDREN = {state: JOB_EVENTS.labels(state) for state in _JOB_STATES}
_ERROR_CHILDREN = {code: JOB_ERRORS.labels(code) for code in (*ERROR_CODES, "unknown")}


def _field(payload: str, marker: str, known: Iterable[str]) -> str | None:
    """The string value after ``marker`` (``"status":"``) in compact JSON, if a known one.

    A JSON string cannot hold an unescaped quote, so the first match is a key; the
    builders of ``notifier.contract.events`` put ``data.status`` and ``data.code`` before
    any other nested key. Anything else returns None (the caller decodes the payload)."""
    start = payload.find(marker)
    if start < 0:
        return None
    start += len(marker)
    value = payload[start : payload.find('"', start)]
    return value if value in known else None


def _data_field(payload: str, name: str) -> str | None:
    try:
        message = loads(payload)
    except ValueError:
        return None
    data = message.get("data") if isinstance(message, dict) else None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def count_job_events(batch: Iterable[StreamEvent]) -> None:
    """Count a batch's job events by state and job errors by code (one increment per label
    per batch; no payload decoded unless it is not in the builders' form)."""
    states: Tally[str] = Tally()
    codes: Tally[str] = Tally()
    for event in batch:
        kind = event.type
        if kind == JOB_STATUS_UPDATE:
            status = _field(event.payload, '"status":"', STATUSES)
            if status is None:
                status = _data_field(event.payload, "status")
            if status in _STATE_CHILDREN:
                states[status] += 1
        elif kind == JOB_COMPLETED:
            states[COMPLETED] += 1
        elif kind == JOB_ERROR:
            states[FAILED] += 1
            code = _field(event.payload, '"code":"', ERROR_CODES)
            if code is None:
                code = _data_field(event.payload, "code")
            codes[code if code in _ERROR_CHILDREN else "unknown"] += 1
    for state, count in states.items():
        _STATE_CHILDREN[state].inc(count)
    for code, count in codes.items():
        _ERROR_CHILDREN[code].inc(count)


def metrics_route() -> Route:
    """``GET /metrics`` in the Prometheus text format (at that exact path: no redirect)."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, include_in_schema=False)
