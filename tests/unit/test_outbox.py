"""The per-connection outbox: order, progress merging, the byte bound, the direct path."""

from __future__ import annotations

import asyncio
from typing import Any

from notifier.core.outbox import SLOW_CONSUMER, Outbox


def progress(job: str, value: int) -> dict[str, Any]:
    return {
        "type": "job_status_update",
        "jobId": job,
        "data": {"status": "processing", "progress": value},
    }


def done(job: str) -> dict[str, Any]:
    return {"type": "job_completed", "jobId": job}


class Transport:
    """Records writes; ``accepting`` says whether the direct path takes a message."""

    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, Any]]] = []
        self.accepting = True
        self.closed: tuple[int, str] | None = None

    async def write(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        self.written.append(("queued", message))

    def write_now(self, message: dict[str, Any]) -> bool:
        if self.accepting:
            self.written.append(("direct", message))
        return self.accepting

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def values(self) -> list[Any]:
        return [m.get("data", {}).get("progress", m["type"]) for _, m in self.written]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def writer_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def test_idle_connection_writes_directly_in_order_without_a_task() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000, write_now=transport.write_now)
    outbox.start()
    await settle()
    assert writer_tasks() == [], "an idle connection holds no writer task"
    for value in (1, 2, 3):
        assert outbox.put(progress("j", value), 100)
    assert [how for how, _ in transport.written] == ["direct"] * 3
    assert transport.values() == [1, 2, 3]
    assert writer_tasks() == []


async def test_messages_wait_until_started_then_go_first() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000, write_now=transport.write_now)
    outbox.put(done("a"), 100)  # before the transport has greeted the client
    assert transport.written == []
    outbox.start()
    outbox.put(done("b"), 100)  # must not overtake "a"
    await settle()
    assert [m["jobId"] for _, m in transport.written] == ["a", "b"]
    assert writer_tasks() == [], "the writer ends once the queue is empty"


async def test_backed_up_transport_queues_and_later_messages_wait_their_turn() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000, write_now=transport.write_now)
    outbox.start()
    transport.accepting = False
    outbox.put(progress("j", 1), 100)
    transport.accepting = True  # the next put must not overtake the queued one
    outbox.put(progress("k", 2), 100)
    outbox.put(done("j"), 100)
    assert len(writer_tasks()) == 1
    await settle()
    assert transport.values() == [1, 2, "job_completed"]
    assert [how for how, _ in transport.written] == ["queued"] * 3
    assert writer_tasks() == []
    outbox.put(progress("j", 4), 100)  # idle again: direct
    assert transport.written[-1][0] == "direct"


async def test_stop_cancels_a_waiting_writer() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000, backpressure=lambda: True)
    outbox.start()
    outbox.put(done("a"), 100)
    await settle()
    assert len(writer_tasks()) == 1  # held back by the backed-up transport
    outbox.stop()
    await settle()
    assert writer_tasks() == []
    assert transport.written == []


async def test_unsent_progress_is_replaced_by_the_newer_one() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000)  # no direct path
    for value in range(1, 6):
        outbox.put(progress("j", value), 100)
    outbox.put(done("j"), 100)
    outbox.put(progress("k", 7), 100)
    assert outbox.merged == 4
    outbox.start()
    await settle()
    assert transport.values() == [5, "job_completed", 7]


async def test_past_the_byte_limit_the_connection_is_closed_as_slow_consumer() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 1_000)
    assert all(outbox.put(done(f"j{i}"), 100) for i in range(10))
    assert not outbox.put(done("j10"), 100)
    assert outbox.queued_bytes == 0
    outbox.start()
    await asyncio.wait_for(outbox.done(), 1)
    assert transport.closed is not None and transport.closed[1] == SLOW_CONSUMER
    assert writer_tasks() == []
    assert not outbox.put(done("late"), 100), "a closing outbox takes nothing more"


def chunk(job: str, offset: int, text: str, event: int = 0) -> dict[str, Any]:
    return {
        "type": "job_output",
        "jobId": job,
        "eventId": f"{event}-0",
        "data": {"offset": offset, "text": text},
    }


async def test_unsent_output_chunks_are_joined_in_order() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000)  # no direct path
    first = chunk("j", 0, "héllo ", 1)
    outbox.put(first, 100)
    outbox.put(chunk("j", 6, "wörld ", 2), 100)
    outbox.put(chunk("k", 0, "other", 3), 100)
    outbox.put(chunk("j", 12, "𝄞!", 4), 100)
    assert outbox.merged == 2
    assert outbox.queued_bytes == 400, "joined text still counts against the limit"
    outbox.start()
    await settle()
    written = [m for _, m in transport.written]
    assert written[0] == {
        "type": "job_output",
        "jobId": "j",
        "eventId": "4-0",
        "data": {"offset": 0, "text": "héllo wörld 𝄞!"},
    }
    assert [m["type"] for m in written[1:]] == ["job_output"]
    assert written[1]["data"] == {"offset": 0, "text": "other"}
    assert first["data"]["text"] == "héllo ", "a message shared with other connections is unchanged"


async def test_nothing_of_a_job_moves_past_its_other_messages() -> None:
    """Chunks and progress updates of one job keep their order: a progress queued after a
    chunk ends the joining, a chunk queued after a progress ends its replacing."""
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000)
    outbox.put(chunk("j", 0, "a"), 100)
    outbox.put(progress("j", 10), 100)
    outbox.put(chunk("j", 1, "b"), 100)  # not joined to "a": it would jump the progress
    outbox.put(chunk("j", 2, "c"), 100)  # joined to "b"
    outbox.put(progress("j", 20), 100)  # not merged into 10: it would jump "bc"
    outbox.put(progress("j", 30), 100)  # merged into 20
    assert outbox.merged == 2
    outbox.start()
    await settle()
    assert [
        m.get("data", {}).get("text", m["data"].get("progress")) for _, m in transport.written
    ] == [
        "a",
        10,
        "bc",
        30,
    ]


async def test_an_empty_outbox_takes_one_message_past_the_bound() -> None:
    """A snapshot with a large output is delivered to a connection with nothing queued;
    what follows it while it is unsent counts against the bound as usual."""
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 1_000)
    assert outbox.put(done("big"), 5_000)
    assert outbox.queued_bytes == 5_000
    assert not outbox.put(done("next"), 100)  # the bound holds from there on
    outbox.start()
    await asyncio.wait_for(outbox.done(), 1)
    assert transport.closed is not None and transport.closed[1] == SLOW_CONSUMER

    fresh = Transport()
    alone = Outbox(fresh.write, fresh.close, 1_000)
    assert alone.put(done("big"), 5_000)
    alone.start()
    await settle()
    assert fresh.written == [("queued", done("big"))] and fresh.closed is None


async def test_output_joining_stops_at_a_status_change_or_a_gap() -> None:
    transport = Transport()
    outbox = Outbox(transport.write, transport.close, 10_000)
    outbox.put(chunk("j", 0, "ab"), 100)
    outbox.put(chunk("j", 5, "gap"), 100)  # not contiguous: a message of its own
    outbox.put(done("j"), 100)
    outbox.put(chunk("j", 8, "late"), 100)  # after the outcome: never moved before it
    assert outbox.merged == 0
    outbox.start()
    await settle()
    assert [m.get("data", {}).get("text", m["type"]) for _, m in transport.written] == [
        "ab",
        "gap",
        "job_completed",
        "late",
    ]
