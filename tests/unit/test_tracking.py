"""Producer-side bookkeeping (no processes): ETA estimation and progress coalescing."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from notifier.contract.events import Event, status_update
from workers.tracking import EtaEstimator, Run, Runs, owner_from

# --- EtaEstimator


def test_eta_needs_two_points() -> None:
    eta = EtaEstimator()
    assert eta.update(0, now=100.0) is None
    # 10 % in 2 s: 5 %/s, 90 % left: 18 s.
    assert eta.update(10, now=102.0) == pytest.approx(18.0)


def test_eta_is_smoothed() -> None:
    eta = EtaEstimator(alpha=0.5)
    eta.update(0, now=0.0)
    assert eta.update(10, now=1.0) == pytest.approx(9.0)  # 10 %/s, 90 % left
    # Next step at 30 %/s: smoothed rate 0.5 * 30 + 0.5 * 10 = 20 %/s; 60 % left: 3 s.
    assert eta.update(40, now=2.0) == pytest.approx(3.0)


def test_eta_is_zero_at_100() -> None:
    eta = EtaEstimator()
    assert eta.update(100, now=5.0) == 0.0
    eta = EtaEstimator()
    eta.update(0, now=0.0)
    eta.update(50, now=1.0)
    assert eta.update(100, now=2.0) == 0.0


def test_eta_ignores_going_backwards_and_stalls() -> None:
    eta = EtaEstimator()
    eta.update(0, now=0.0)
    assert eta.update(20, now=2.0) == pytest.approx(8.0)  # 10 %/s, 80 % left
    # Progress going back, or no time passing, keeps the last rate.
    assert eta.update(10, now=3.0) == pytest.approx(9.0)
    assert eta.update(20, now=2.0) == pytest.approx(8.0)


def test_eta_without_forward_rate_is_unknown() -> None:
    eta = EtaEstimator()
    eta.update(30, now=0.0)
    assert eta.update(30, now=5.0) is None  # no progress: no rate yet


# --- Run: sequence numbers and coalescing


def progress_event(run: Run, value: float) -> Event:
    return status_update(run.job_id, run.user_id, "processing", progress=value, seq=run.next_seq())


def progress_values(sent: list[Event]) -> list[float]:
    return [event.message["data"]["progress"] for event in sent]


def make_run(min_interval: float) -> tuple[Run, list[Event]]:
    sent: list[Event] = []
    return Run("job-1", "7", 0, min_interval, sent.append), sent


def test_sequence_numbers_increase() -> None:
    run, _ = make_run(0.05)
    assert [run.next_seq() for _ in range(3)] == [1, 2, 3]


def test_first_progress_is_sent_at_once_then_held() -> None:
    run, sent = make_run(60.0)  # an interval no test run reaches: nothing is sent by time
    assert run.progress(progress_event(run, 10)) is True
    assert run.progress(progress_event(run, 20)) is False
    assert run.progress(progress_event(run, 30)) is False
    assert progress_values(sent) == [10]
    run.flush()  # what a status change or the outcome does first
    assert progress_values(sent) == [10, 30], "only the latest held value is sent"
    run.flush()
    assert progress_values(sent) == [10, 30], "flush sends a held value once"


def test_urgent_progress_is_never_held() -> None:
    run, sent = make_run(60.0)
    run.progress(progress_event(run, 10))
    run.progress(progress_event(run, 50))
    assert run.progress(progress_event(run, 100), urgent=True) is True
    assert progress_values(sent) == [10, 100]
    run.flush()
    assert progress_values(sent) == [10, 100], "the urgent send replaced the held value"


def test_held_progress_is_sent_by_a_timer() -> None:
    sent: list[Event] = []
    arrived = threading.Event()

    def emit(event: Event) -> None:
        sent.append(event)
        if len(sent) == 2:
            arrived.set()

    run = Run("job-1", "7", 0, 0.05, emit)
    run.progress(progress_event(run, 10))
    run.progress(progress_event(run, 20))
    run.progress(progress_event(run, 30))
    assert arrived.wait(timeout=10), "the held progress was never sent"
    assert progress_values(sent) == [10, 30]


def test_progress_after_the_interval_is_sent_at_once() -> None:
    run, sent = make_run(0.02)
    run.progress(progress_event(run, 10))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not run.progress(progress_event(run, 20)):
        time.sleep(0.03)  # bounded: the interval is 20 ms
    assert progress_values(sent)[-1] == 20


def test_runs_finish_flushes_held_progress() -> None:
    runs = Runs()
    run, sent = make_run(60.0)
    runs.start("task-1", run)
    assert runs.get("task-1") is run
    assert runs.get(None) is None
    run.progress(progress_event(run, 10))
    run.progress(progress_event(run, 40))
    assert runs.finish("task-1") is run
    assert progress_values(sent) == [10, 40]
    assert runs.get("task-1") is None
    assert runs.finish("task-1") is None
    assert runs.finish(None) is None


def test_owner_from_request() -> None:
    assert owner_from(SimpleNamespace(id="t1", jobcast_user_id="7")) == ("t1", "7")
    assert owner_from(SimpleNamespace(id="t1", jobcast_user_id=7, jobcast_job_id="j")) == ("j", "7")
    from_headers = SimpleNamespace(id="t1", headers={"jobcast_user_id": "7"})
    assert owner_from(from_headers) == ("t1", "7")
    assert owner_from(SimpleNamespace(id="t1", headers=None)) is None
    assert owner_from(SimpleNamespace(id="t1", jobcast_user_id="")) is None


# --- live output (Run.stream)


class Sink:
    """Collects the chunks a run writes; ``answers`` says what each write returns."""

    def __init__(self, *answers: bool | None) -> None:
        self.chunks: list[tuple[str, bool]] = []
        self.answers = list(answers)
        self.wrote = threading.Event()

    def __call__(self, text: str, final: bool) -> bool | None:
        self.chunks.append((text, final))
        self.wrote.set()
        return self.answers.pop(0) if self.answers else True

    def text(self) -> str:
        return "".join(text for text, _ in self.chunks)


def output_run(sink: Sink, min_interval: float = 60.0, limit: int = 1 << 62) -> Run:
    return Run("job-1", "7", 0, min_interval, lambda _: None, output=sink, output_limit=limit)


def test_streamed_text_is_joined_in_order_and_the_end_sends_the_rest() -> None:
    sink = Sink()
    run = output_run(sink)  # an interval no test run reaches: nothing is sent by time
    run.stream("first ")
    for n in range(1000):
        run.stream(f"{n} ")
    run.stream("")  # nothing to add: ignored
    assert sink.chunks == [("first ", False)], "the first text goes out at once, then held"
    run.flush(final=True)
    assert len(sink.chunks) == 2 and sink.chunks[1][1] is True
    assert sink.text() == "first " + "".join(f"{n} " for n in range(1000))
    run.flush(final=True)
    assert len(sink.chunks) == 2, "flush writes held text once"


def test_held_text_is_sent_by_a_timer() -> None:
    sink = Sink()
    run = output_run(sink, min_interval=0.05)
    run.stream("a")
    sink.wrote.clear()
    run.stream("b")
    run.stream("c")
    assert sink.wrote.wait(timeout=10), "the held text was never sent"
    assert sink.chunks == [("a", False), ("bc", False)]


def test_text_redis_did_not_take_is_kept_in_order() -> None:
    sink = Sink(None)  # the first write fails (Redis did not answer)
    run = output_run(sink)
    run.stream("one ")
    run.stream("two ")
    run.flush(final=True)
    assert [text for text, _ in sink.chunks] == ["one ", "one two "]
    assert sink.chunks[-1][1] is True


def test_a_closed_output_takes_no_more_text() -> None:
    sink = Sink(False)  # the job ended, or its output is full
    run = output_run(sink)
    run.stream("kept ")
    run.stream("dropped")
    run.flush(final=True)
    assert sink.chunks == [("kept ", False)]


def test_text_past_the_limit_in_code_points_is_dropped_early() -> None:
    sink = Sink()
    run = output_run(sink, limit=5)
    run.stream("abcdef")  # 6 code points: at least 6 bytes, past the limit (Redis cuts it)
    run.stream("more")
    run.flush(final=True)
    assert sink.chunks == [("abcdef", False)]


def test_a_run_without_output_ignores_stream() -> None:
    run, sent = make_run(0.05)
    run.stream("nothing")
    run.flush(final=True)
    assert sent == []
