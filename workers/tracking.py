"""Per-process bookkeeping of the tracked task runs: ordering, coalescing, ETA, output.

A *run* is one execution of a tracked task in this process. It numbers the events it
produces (``seq``) so the bus can drop stale ones, holds back progress that comes faster
than ``JOBCAST_PROGRESS_MIN_INTERVAL_MS`` (the latest value is always sent in the end),
and estimates the time left from a smoothed progress rate. A held report is kept as it
came (value, message, fields, when): its event is built only if it goes out, so a
coalesced ``report()`` costs a lock and a tuple. Events of a run are built and sent one at
a time, in ``seq`` order, whichever thread sends them (the task's, or a timer's). Its live output
(``workers.progress.stream``) is coalesced by the same interval, by concatenation: text
streamed within an interval goes out as one chunk, in order, nothing dropped; the run's
end sends what is held before the job's outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from notifier.contract.events import PROCESSING, Event, clamp_progress, status_update

log = logging.getLogger(__name__)

#: The task headers that carry the owner and the job id (a canvas's members share one).
HEADER_USER = "jobcast_user_id"
HEADER_JOB = "jobcast_job_id"
#: The header of a canvas member: its share of the canvas job (see :class:`Member`).
HEADER_MEMBER = "jobcast_member"


def _header(request: Any, name: str) -> Any:
    value = getattr(request, name, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(name) if isinstance(headers, dict) else None
    return value


def owner_from(request: Any) -> tuple[str, str] | None:
    """``(job_id, user_id)`` of a Celery task request, or None for an untracked task."""
    user = _header(request, HEADER_USER)
    if user is None or user == "":
        return None
    job = _header(request, HEADER_JOB) or getattr(request, "id", None)
    return (str(job), str(user)) if job else None


@dataclass(frozen=True, slots=True)
class Member:
    """A canvas member's share of its canvas job, as ``workers.submit`` put it in the
    ``jobcast_member`` header: its index in the canvas (depth first: chain steps in order,
    a chord's header before its body), its weight and the weights' total, how many members
    the canvas has, the shape of the canvas's result (member indexes nested in lists) and
    whether this member's result is part of it."""

    index: int
    weight: float
    total_weight: float
    members: int
    result: Any
    keep: bool

    def header(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "weight": self.weight,
            "totalWeight": self.total_weight,
            "members": self.members,
            "result": self.result,
            "keep": self.keep,
        }

    @classmethod
    def from_header(cls, raw: Any) -> Member | None:
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                index=int(raw["index"]),
                weight=float(raw["weight"]),
                total_weight=float(raw["totalWeight"]),
                members=int(raw["members"]),
                result=raw.get("result"),
                keep=bool(raw.get("keep")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def member_from(request: Any) -> Member | None:
    """The canvas share of a task request, or None for a task that is a job of its own."""
    return Member.from_header(_header(request, HEADER_MEMBER))


class EtaEstimator:
    """Seconds left from an exponentially smoothed progress rate (percent per second)."""

    def __init__(self, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self._last: tuple[float, float] | None = None
        self._rate: float | None = None

    def update(self, progress: float, now: float) -> float | None:
        """Feed one progress point; None until two points give a forward rate."""
        if progress >= 100:
            self._last = (now, progress)
            return 0.0
        if self._last is None:
            self._last = (now, progress)
            return None
        t0, p0 = self._last
        if now > t0 and progress >= p0:
            rate = (progress - p0) / (now - t0)
            self._rate = (
                rate if self._rate is None else self._alpha * rate + (1 - self._alpha) * self._rate
            )
            self._last = (now, progress)
        if not self._rate or self._rate <= 0:
            return None
        return round(max(0.0, (100 - progress) / self._rate), 1)


#: A progress report held back as it came: value, message, fields, monotonic time.
Held = tuple[float, str | None, dict[str, Any], float]

#: Writes one chunk of a job's output: ``(text, final)`` → True (written, more may follow),
#: False (written or not, nothing more will be kept: the job ended or its output is full),
#: None (not written: Redis did not answer; with ``final`` it is retried in order before the
#: job's outcome by the publisher).
OutputSink = Callable[[str, bool], bool | None]

#: After a chunk could not be written, how long before the held text is tried again.
OUTPUT_RETRY_SECONDS = 1.0


class Run:
    def __init__(
        self,
        job_id: str,
        user_id: str,
        attempt: int,
        min_interval: float,
        emit: Callable[[Event], object],
        member: Member | None = None,
        output: OutputSink | None = None,
        output_limit: int = 1 << 62,
    ) -> None:
        self.job_id = job_id
        self.user_id = user_id
        self.attempt = attempt
        #: Set for a canvas member: its progress is folded into the canvas job's aggregate.
        self.member = member
        self.eta = EtaEstimator()
        self._seq = 0
        self._min_interval = min_interval
        self._emit = emit
        #: How the run's events are published (for a canvas member: into the aggregate).
        self.emit = emit
        self._lock = threading.Lock()
        #: Held while an event of this run is built and sent: one at a time, in seq order.
        self._send = threading.Lock()
        self._last_sent = float("-inf")
        #: The latest progress held back: a report as it came, (value, message, fields,
        #: monotonic time), or an event built by the caller (:meth:`progress`).
        self._pending: Held | Event | None = None
        self._timer: threading.Timer | None = None
        #: Progress 100 has been sent: later reports at 100 are coalesced like any other.
        self.reached_end = False
        #: Progress events sent so far (by any thread); the run has ended.
        self.sent = 0
        self.finished = False
        # Live output: the texts held back (in order), code points streamed by this run,
        # when a chunk last went out. ``_out_send`` makes chunks go out one at a time, in
        # the order their texts were taken; ``_out_lock`` guards the rest (never held
        # while writing).
        self._output = output
        self._out_limit = output_limit
        self._out_parts: list[str] = []
        self._out_chars = 0
        self._out_last = float("-inf")
        self._out_timer: threading.Timer | None = None
        self._out_closed = output is None
        self._out_lock = threading.Lock()
        self._out_send = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def report(
        self,
        value: float,
        message: str | None,
        fields: dict[str, Any],
        send: Callable[[Event], object] | None = None,
    ) -> Event | None:
        """A progress report (``value`` a float, not NaN; clamped when the event is built).
        Within the interval since the last event it is only kept, as the latest (None);
        a timer sends it once the interval has passed unless a later report does first.
        Otherwise its event is built and sent now, by ``send`` (default: the run's
        ``emit``), and returned. 100 the first time is never held."""
        now = time.monotonic()
        urgent = value >= 100 and not self.reached_end
        with self._lock:
            wait = self._last_sent + self._min_interval - now
            if wait > 0 and not urgent:
                self._pending = (value, message, fields, now)
                if self._timer is None:
                    self._arm(wait)
                return None
            self._claim(now, urgent)
        with self._send:
            event = self._build((value, message, fields, now))
            self.sent += 1
            (send or self._emit)(event)
        return event

    def progress(self, event: Event, *, urgent: bool = False) -> bool:
        """Send an event built by the caller now (True), or hold it as the latest if the
        last send was too recent (False); a timer sends what is held once the interval has
        passed."""
        now = time.monotonic()
        with self._lock:
            wait = self._last_sent + self._min_interval - now
            if wait > 0 and not urgent:
                self._pending = event
                if self._timer is None:
                    self._arm(wait)
                return False
            self._claim(now, urgent)
        with self._send:
            self.sent += 1
            self._emit(event)
        return True

    def _arm(self, delay: float) -> None:
        """(With ``_lock`` held.) Send what is held in ``delay`` seconds."""
        timer = threading.Timer(delay, self._flush_progress)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _claim(self, now: float, urgent: bool) -> None:
        """(With ``_lock`` held.) An event goes out now: what is held is superseded."""
        self._pending = None
        self._last_sent = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if urgent:
            self.reached_end = True

    def _build(self, held: Held | Event) -> Event:
        """(With ``_send`` held.) The event of a held report, numbered now: the ETA is fed
        the points that go out, at the time they were reported."""
        if isinstance(held, Event):
            return held
        value, message, fields, at = held
        extra = fields
        if self.member is None:  # a canvas member's ETA is the canvas's (workers.aggregate)
            eta = self.eta.update(value, at)
            if eta is not None:
                extra = {**fields, "etaSeconds": eta}
        return status_update(
            self.job_id,
            self.user_id,
            PROCESSING,
            progress=clamp_progress(value),
            message=message,
            attempt=self.attempt,
            seq=self.next_seq(),
            **extra,
        )

    def _flush_progress(self) -> None:
        """Build and send the held progress, if any (a timer, a status change, the end)."""
        with self._send:
            with self._lock:
                held, self._pending = self._pending, None
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if held is None:
                    return
                self._last_sent = time.monotonic()
            try:
                event = self._build(held)
            except Exception:  # report() took it without raising; nothing can be sent
                log.exception("held progress could not be built", extra={"job": self.job_id})
                return
            self.sent += 1
            self._emit(event)

    def stream(self, text: str) -> None:
        """Append ``text`` to the job's output: sent now if the last chunk went out at least
        an interval ago, else held and joined to what follows (a timer sends it)."""
        if not text:
            return
        now = time.monotonic()
        with self._out_lock:
            # Past the limit in code points, the limit in bytes is passed too (and the job's
            # output already says so, or will once what is held is written): drop early.
            if self._out_closed or self._out_chars > self._out_limit:
                return
            self._out_parts.append(text)
            self._out_chars += len(text)
            wait = self._out_last + self._min_interval - now
            if wait > 0:
                if self._out_timer is None:
                    self._arm_output(wait)
                return
        self.flush_output()

    def _arm_output(self, delay: float) -> None:
        """(With ``_out_lock`` held.) Send what is held in ``delay`` seconds."""
        timer = threading.Timer(delay, self.flush_output)
        timer.daemon = True
        self._out_timer = timer
        timer.start()

    def flush_output(self, *, final: bool = False) -> None:
        """Send the held text as one chunk. ``final``: the run ends, the job's outcome
        follows; text that cannot be written now is kept in order before it."""
        with self._out_send:
            with self._out_lock:
                parts, self._out_parts = self._out_parts, []
                if self._out_timer is not None:
                    self._out_timer.cancel()
                    self._out_timer = None
                if not parts or self._output is None:
                    return
                self._out_last = time.monotonic()
            text = parts[0] if len(parts) == 1 else "".join(parts)
            written = self._output(text, final)
            if written is not None and written:
                return
            with self._out_lock:
                if written is False:  # the job ended or its output is full
                    self._out_closed = True
                    self._out_parts.clear()
                elif not final:  # Redis did not answer: held, in order, tried again later
                    self._out_parts.insert(0, text)
                    if self._out_timer is None:
                        self._arm_output(OUTPUT_RETRY_SECONDS)

    def flush(self, *, final: bool = False) -> None:
        """Send the held-back output and progress, if any (before any status change or
        outcome; ``final``: the run's end). Returns once an event another thread is
        sending has gone out too: what follows comes after it."""
        self.flush_output(final=final)
        self._flush_progress()


class Runs:
    """The runs of this process, by Celery task id."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def start(self, task_id: str, run: Run) -> Run:
        with self._lock:
            self._runs[task_id] = run
        return run

    def jobs(self) -> list[tuple[str, str]]:
        """``(job id, owner)`` of every run of this process."""
        with self._lock:
            return [(run.job_id, run.user_id) for run in self._runs.values()]

    def get(self, task_id: str | None) -> Run | None:
        return self._runs.get(task_id) if task_id else None

    def finish(self, task_id: str | None) -> Run | None:
        if not task_id:
            return None
        with self._lock:
            run = self._runs.pop(task_id, None)
        if run is not None:
            run.finished = True
            run.flush(final=True)
        return run


RUNS = Runs()
