"""The event schema shared by the workers, the notifier and the API.

An :class:`Event` is what a producer hands to the bus; a :class:`StreamEvent` is what a
reader gets back, with the Redis stream id that becomes the message's ``eventId``.
This module imports nothing of Celery, Socket.IO or FastAPI, so it is cheap everywhere.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

# --- message types (the Socket.IO event name is the message's type)
JOB_STATUS_UPDATE = "job_status_update"
JOB_COMPLETED = "job_completed"
JOB_ERROR = "job_error"
SYSTEM_NOTIFICATION = "system_notification"
MAINTENANCE_NOTIFICATION = "maintenance_notification"
CHANNEL_MESSAGE = "channel_message"
#: A chunk of a job's live output: ``data.offset`` (code points before it) and ``data.text``.
JOB_OUTPUT = "job_output"

# --- job statuses carried in job_status_update.data.status
QUEUED, STARTED, PROCESSING, RETRYING, CANCELLED = (
    "queued",
    "started",
    "processing",
    "retrying",
    "cancelled",
)
STATUSES = (QUEUED, STARTED, PROCESSING, RETRYING, CANCELLED)
#: Job states as the REST API reports them: the statuses above plus the two outcomes.
COMPLETED, FAILED = "completed", "failed"
#: The final job states: after one of them, a job has no more events.
TERMINAL_STATES = frozenset({CANCELLED, COMPLETED, FAILED})
#: The message types of the two outcomes (a cancellation is a ``job_status_update``).
TERMINAL_TYPES = frozenset({JOB_COMPLETED, JOB_ERROR})

# --- job_error.data.code
ERROR_CODES = ("task_failed", "worker_lost", "time_limit", "rejected")
LEVELS = ("info", "warning", "error", "critical")

# --- channels a connection may subscribe to; the value is the role it needs (None: anyone)
CHANNELS: dict[str, str | None] = {"notifications": None, "maintenance": None, "ops": "ADMIN"}
#: The operators' channel: its subscribers also get every ``job_error`` of every user.
OPS = "ops"
#: Limits of a ``channel_message``: its text in characters, its ``data`` as JSON in bytes.
CHANNEL_MESSAGE_MAX_CHARS = 2000
CHANNEL_DATA_MAX_BYTES = 16384

#: How an event is routed: ``job`` to the job's subscribers; ``owner`` to every connection
#: of the job's owner and to the subscribers; ``all`` to every connection; ``channel`` to
#: the subscribers of one channel.
Route = Literal["job", "owner", "all", "channel"]


def now_ms() -> int:
    """Wall-clock time in milliseconds (stream ids, leases and timestamps use it)."""
    return int(time.time() * 1000)


def is_terminal(message: dict[str, Any]) -> bool:
    """Whether a wire message is its job's last: ``job_completed``, ``job_error``, or a
    ``job_status_update`` whose status is final (``cancelled``)."""
    if message.get("type") in TERMINAL_TYPES:
        return True
    data = message.get("data")
    return isinstance(data, dict) and data.get("status") in TERMINAL_STATES


def parse_event_id(event_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (each 1 to 20 ASCII digits) as two numbers; ``ValueError`` for
    anything else. Every event a notifier reads is parsed once: no regular expression."""
    if isinstance(event_id, str) and event_id.isascii():
        ms, dash, seq = event_id.partition("-")
        if dash and 0 < len(ms) <= 20 and 0 < len(seq) <= 20 and ms.isdigit() and seq.isdigit():
            return int(ms), int(seq)
    raise ValueError(f"not a stream id: {str(event_id)[:64]!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """An event as produced, before it reaches the stream."""

    route: Route
    message: dict[str, Any]
    user_id: str = ""
    job_id: str = ""
    channel: str = ""
    #: The job state this event leads to (``completed``/``failed`` for the outcomes).
    state: str = ""
    #: Ordering within one run of a task: which attempt (retries so far) and which step.
    #: ``seq`` 0 means "not ordered" (signals sent from outside the running task).
    attempt: int = 0
    seq: int = 0
    #: What the job's snapshot shows after this event (status, progress, message, ...).
    snapshot: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.message["type"])

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


# --- builders: the only places the wire shapes of server-to-client events are written


def status_update(
    job_id: str,
    user_id: str,
    status: str,
    *,
    progress: float | None = None,
    message: str | None = None,
    attempt: int = 0,
    seq: int = 0,
    **extra: Any,
) -> Event:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
    data: dict[str, Any] = {"status": status}
    if progress is not None:
        data["progress"] = clamp_progress(progress)
    if message is not None:
        data["message"] = message
    data.update(extra)
    return _status_event(job_id, user_id, data, attempt, seq)


def retrying(
    job_id: str,
    user_id: str,
    retry: int,
    *,
    retry_in_seconds: float | None = None,
    message: str | None = None,
    attempt: int = 0,
    seq: int = 0,
) -> Event:
    """``retrying``: ``data.attempt`` is the retry's number (1 for the first retry) and
    ``data.retryInSeconds`` when it runs; ``attempt``/``seq`` order the event, as above."""
    data: dict[str, Any] = {"status": RETRYING}
    if message is not None:
        data["message"] = message
    data["attempt"] = retry
    if retry_in_seconds is not None:
        data["retryInSeconds"] = max(0.0, float(retry_in_seconds))
    return _status_event(job_id, user_id, data, attempt, seq)


def _status_event(job_id: str, user_id: str, data: dict[str, Any], attempt: int, seq: int) -> Event:
    status = data["status"]
    msg = {"type": JOB_STATUS_UPDATE, "jobId": job_id, "timestamp": now_ms(), "data": data}
    return Event(
        route="owner" if status == CANCELLED else "job",
        message=msg,
        user_id=user_id,
        job_id=job_id,
        state=status,
        attempt=attempt,
        seq=seq,
        snapshot=data,
    )


def job_completed(
    job_id: str, user_id: str, result: Any, *, attempt: int = 0, seq: int = 0
) -> Event:
    msg = {"type": JOB_COMPLETED, "jobId": job_id, "timestamp": now_ms(), "result": result}
    return Event(
        route="owner",
        message=msg,
        user_id=user_id,
        job_id=job_id,
        state=COMPLETED,
        attempt=attempt,
        seq=seq,
        snapshot={"status": COMPLETED, "progress": 100},
    )


def job_error(
    job_id: str,
    user_id: str,
    error: str,
    *,
    code: str = "task_failed",
    exception_type: str | None = None,
    attempt: int = 0,
    seq: int = 0,
) -> Event:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}; expected one of {ERROR_CODES}")
    data: dict[str, Any] = {"code": code}
    if exception_type:
        data["exceptionType"] = exception_type
    msg = {"type": JOB_ERROR, "jobId": job_id, "timestamp": now_ms(), "error": error, "data": data}
    return Event(
        route="owner",
        message=msg,
        user_id=user_id,
        job_id=job_id,
        state=FAILED,
        attempt=attempt,
        seq=seq,
        snapshot={"status": FAILED, "message": error, "code": code},
    )


def job_output(job_id: str, offset: int, text: str, timestamp: int) -> dict[str, Any]:
    """A ``job_output`` message: ``text`` goes at ``offset`` (code points) of the job's live
    output. The output script writes it in Redis, from :func:`output_head`."""
    return {
        "type": JOB_OUTPUT,
        "jobId": job_id,
        "timestamp": timestamp,
        "data": {"offset": offset, "text": text},
    }


#: How the JSON of :func:`job_output` ends after the ``data.offset`` key, for offset 0 and
#: no text.
_OUTPUT_TAIL = '0,"text":""}}'


def output_head(job_id: str, timestamp: int) -> str:
    """The JSON of a ``job_output`` message up to its offset: the output script (which
    alone knows the offset) appends ``<offset>,"text":<text as JSON>}}``."""
    return dumps(job_output(job_id, 0, "", timestamp))[: -len(_OUTPUT_TAIL)]


def system_notification(message: str, level: str = "info") -> Event:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    msg = {"type": SYSTEM_NOTIFICATION, "message": message, "level": level, "timestamp": now_ms()}
    return Event(route="all", message=msg)


def maintenance_notification(
    message: str, *, starts_at: int | None = None, duration_minutes: int | None = None
) -> Event:
    msg: dict[str, Any] = {"type": MAINTENANCE_NOTIFICATION, "message": message}
    if starts_at is not None:
        msg["startsAt"] = starts_at
    if duration_minutes is not None:
        msg["durationMinutes"] = duration_minutes
    msg["timestamp"] = now_ms()
    return Event(route="all", message=msg)


def channel_message(
    channel: str, message: str, level: str = "info", data: dict[str, Any] | None = None
) -> Event:
    """A ``channel_message`` to the subscribers of ``channel``.

    Raises ``ValueError`` for an unknown channel or level, an empty or too long message,
    ``data`` that is not a JSON object or whose JSON exceeds ``CHANNEL_DATA_MAX_BYTES``
    (``TypeError`` when it is not JSON at all).
    """
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {tuple(CHANNELS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    if not isinstance(message, str) or not message:
        raise ValueError("message must be a non-empty string")
    if len(message) > CHANNEL_MESSAGE_MAX_CHARS:
        raise ValueError(f"message is longer than {CHANNEL_MESSAGE_MAX_CHARS} characters")
    payload = {} if data is None else data
    if not isinstance(payload, dict):
        raise ValueError("data must be a JSON object")
    size = len(dumps(payload).encode())
    if size > CHANNEL_DATA_MAX_BYTES:
        raise ValueError(f"data is {size} bytes as JSON; at most {CHANNEL_DATA_MAX_BYTES}")
    msg = {
        "type": CHANNEL_MESSAGE,
        "channel": channel,
        "message": message,
        "level": level,
        "data": payload,
        "timestamp": now_ms(),
    }
    return Event(route="channel", message=msg, channel=channel)


def clamp_progress(progress: float) -> float:
    value = float(progress)
    if value != value:  # NaN
        raise ValueError("progress must be a number between 0 and 100")
    value = min(100.0, max(0.0, value))
    return int(value) if value.is_integer() else round(value, 2)


# --- the stream side


#: What orjson would encode by rules of its own goes to the json module instead: dates
#: and dataclasses (refused there, as results that are not JSON must be), subclasses of
#: str/int/dict/list (encoded there as their base type).
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def dumps(obj: Any) -> str:
    """Compact JSON. orjson (several times faster: every delivered message is encoded
    here), with the standard library's rules where orjson's differ: non-string keys,
    integers beyond 64 bits, lone surrogates, dates, dataclasses and subclasses take the
    json module's path, and NaN or infinities are refused (orjson would write null).
    (orjson still writes a UUID or an Enum member, which the json module refuses.)"""
    try:
        encoded = orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: what orjson cannot encode as json would
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = encoded.decode()
    if "null" in text and _has_non_finite(obj):
        raise ValueError("Out of range float values are not JSON compliant")
    return text


def loads(text: str | bytes) -> Any:
    """JSON to Python, orjson first; what orjson refuses the json module decides."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _has_non_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return obj != obj or obj in (float("inf"), float("-inf"))
    if isinstance(obj, dict):
        return any(_has_non_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_non_finite(v) for v in obj)
    return False


@dataclass(slots=True)
class StreamEvent:
    """An event as read back from the stream; ``event_id`` is its stream id.

    Not changed once read, but not ``frozen``: a frozen dataclass sets each field through
    ``object.__setattr__``, which made building one 2.4 µs instead of 0.8 (every event a
    notifier reads is built once, W2 delivers over 20,000 a second)."""

    event_id: str
    route: str
    type: str
    user_id: str
    job_id: str
    channel: str
    payload: str  # the message as JSON, without eventId
    #: The partition whose stream the event was read from (its id is of that stream).
    partition: int = 0
    #: ``event_id`` as two numbers (:func:`parse_event_id`), parsed once: the reader, the
    #: hub and the metrics each compare or read it.
    key: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = parse_event_id(self.event_id)

    @classmethod
    def from_entry(cls, event_id: str, fields: dict[str, str], partition: int = 0) -> StreamEvent:
        return cls(
            event_id=event_id,
            route=fields.get("r", ""),
            type=fields.get("t", ""),
            user_id=fields.get("u", ""),
            job_id=fields.get("j", ""),
            channel=fields.get("c", ""),
            payload=fields.get("p", "{}"),
            partition=partition,
        )

    @classmethod
    def from_live(cls, data: bytes, partition: int = 0) -> StreamEvent:
        """An entry as the publishing scripts announce it on a partition's live channel
        (``lua/live.lua``): ``b'<id> <route> <type> <#user> <#job> <#channel>\\n'`` and then
        the user, job, channel and payload, each its byte length long (the payload: the
        rest). Raises ValueError on anything else."""
        head, newline, rest = data.partition(b"\n")
        eid, route, typ, user_len, job_len, channel_len = head.split(b" ")
        if not newline:
            raise ValueError("live message without a body")
        user_end = int(user_len)
        job_end = user_end + int(job_len)
        channel_end = job_end + int(channel_len)
        if channel_end > len(rest):
            raise ValueError("live message shorter than its lengths")
        return cls(  # by position: the fields' order (this is once per event read)
            eid.decode(),
            route.decode(),
            typ.decode(),
            rest[:user_end].decode(),
            rest[user_end:job_end].decode(),
            rest[job_end:channel_end].decode(),
            rest[channel_end:].decode(),
            partition,
        )

    def message(self, **extra: Any) -> dict[str, Any]:
        """The wire message: the payload with ``eventId`` (and any ``extra``) added."""
        msg: dict[str, Any] = loads(self.payload)
        msg["eventId"] = self.event_id
        msg.update(extra)
        return msg


# --- result payloads

#: How much of an oversized result's JSON a truncation marker keeps, in bytes.
RESULT_PREVIEW_BYTES = 1024


def result_payload(result: Any, max_bytes: int, *, task_id: str | None = None) -> Any:
    """``result`` as ``job_completed.result``: unchanged when its JSON fits in ``max_bytes``,
    else a marker ``{"truncated": true, "bytes": N, "limit": max_bytes, "preview": "..."}``
    (plus ``taskId`` when the full result can be fetched from Celery's result backend).

    Raises ``TypeError``/``ValueError`` when ``result`` is not JSON.
    """
    encoded = dumps(result).encode()
    if len(encoded) <= max_bytes:
        return result
    preview = encoded[: min(RESULT_PREVIEW_BYTES, max_bytes)].decode(errors="ignore")
    marker: dict[str, Any] = {
        "truncated": True,
        "bytes": len(encoded),
        "limit": max_bytes,
        "preview": preview,
    }
    if task_id:
        marker["taskId"] = task_id
    return marker
