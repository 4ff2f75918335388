"""The event schema: builders, stream ids, stream entries (pure logic, no processes)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from notifier.contract import events
from notifier.contract.events import StreamEvent, parse_event_id


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [("0-0", (0, 0)), ("1640995200000-0", (1640995200000, 0)), ("1-12", (1, 12))],
)
def test_parse_event_id(event_id: str, expected: tuple[int, int]) -> None:
    assert parse_event_id(event_id) == expected


@pytest.mark.parametrize(
    "bogus",
    [
        "",
        "-",
        "12",
        "12-",
        "-3",
        "a-1",
        "1-b",
        "1-2-3",
        " 1-2",
        "1-2 ",
        "1.5-0",
        "+1-0",
        "1_0-0",
        "\u0661-\u0662",
        "\uff11-2",
        "\u00b2-1",
        "1" * 21 + "-0",
        "0-" + "1" * 21,
    ],
)
def test_parse_event_id_refuses_anything_else(bogus: str) -> None:
    with pytest.raises(ValueError):
        parse_event_id(bogus)


def test_parse_event_id_takes_twenty_digits() -> None:
    assert parse_event_id("9" * 20 + "-" + "0" * 20) == (10**20 - 1, 0)


def test_event_ids_compare_as_two_numbers() -> None:
    # As strings "9-0" > "10-0"; as stream ids it is the other way round.
    assert parse_event_id("9-0") < parse_event_id("10-0")
    assert parse_event_id("10-2") < parse_event_id("10-10")


def test_status_update_is_routed_to_the_job() -> None:
    event = events.status_update(
        "job-1", "7", "processing", progress=50, message="Writing", attempt=1, seq=3, section=2
    )
    assert event.route == "job"
    assert event.type == "job_status_update"
    assert (event.user_id, event.job_id, event.state) == ("7", "job-1", "processing")
    assert (event.attempt, event.seq) == (1, 3)
    assert not event.terminal
    msg = event.message
    assert msg["type"] == "job_status_update"
    assert msg["jobId"] == "job-1"
    assert isinstance(msg["timestamp"], int)
    assert msg["data"] == {
        "status": "processing",
        "progress": 50,
        "message": "Writing",
        "section": 2,
    }
    assert event.snapshot == msg["data"]


def test_cancelled_goes_to_the_owner_and_is_terminal() -> None:
    event = events.status_update("job-1", "7", "cancelled", message="Cancelled")
    assert event.route == "owner"
    assert event.terminal
    assert "progress" not in event.message["data"]


def test_status_update_refuses_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown status"):
        events.status_update("job-1", "7", "done")


@pytest.mark.parametrize(
    ("given", "shown"), [(-5, 0), (0, 0), (33.333333, 33.33), (50.0, 50), (100, 100), (250, 100)]
)
def test_progress_is_clamped_to_0_100(given: float, shown: float) -> None:
    event = events.status_update("j", "u", "processing", progress=given)
    assert event.message["data"]["progress"] == shown
    assert type(event.message["data"]["progress"]) is type(shown)


def test_progress_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        events.clamp_progress(float("nan"))


def test_job_completed() -> None:
    result = {"success": True, "contentId": "content-456", "title": "Generated Content"}
    event = events.job_completed("job-1", "7", result, attempt=0, seq=9)
    assert event.route == "owner"
    assert event.terminal
    assert event.state == "completed"
    assert event.message == {
        "type": "job_completed",
        "jobId": "job-1",
        "timestamp": event.message["timestamp"],
        "result": result,
    }
    assert event.snapshot == {"status": "completed", "progress": 100}


def test_job_error() -> None:
    event = events.job_error("job-1", "7", "Generation failed: x", exception_type="ValueError")
    assert event.route == "owner"
    assert event.terminal
    assert event.state == "failed"
    assert event.message["type"] == "job_error"
    assert event.message["error"] == "Generation failed: x"
    assert event.message["data"] == {"code": "task_failed", "exceptionType": "ValueError"}


@pytest.mark.parametrize("code", ["task_failed", "worker_lost", "time_limit", "rejected"])
def test_job_error_codes(code: str) -> None:
    assert events.job_error("j", "u", "x", code=code).message["data"]["code"] == code


def test_job_error_refuses_unknown_code() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        events.job_error("j", "u", "x", code="oops")


def test_system_notification() -> None:
    event = events.system_notification("System maintenance in 30 minutes", "warning")
    assert event.route == "all"
    assert not event.terminal
    assert event.message["type"] == "system_notification"
    assert event.message["level"] == "warning"
    assert event.message["message"] == "System maintenance in 30 minutes"
    assert events.system_notification("hello").message["level"] == "info"
    with pytest.raises(ValueError, match="unknown level"):
        events.system_notification("x", "loud")


def test_maintenance_notification() -> None:
    event = events.maintenance_notification("down", starts_at=1640997000000, duration_minutes=30)
    assert event.route == "all"
    assert event.message["type"] == "maintenance_notification"
    assert event.message["startsAt"] == 1640997000000
    assert event.message["durationMinutes"] == 30
    bare = events.maintenance_notification("soon").message
    assert "startsAt" not in bare and "durationMinutes" not in bare


def test_stream_event_round_trip() -> None:
    event = events.job_completed("job-1", "7", {"ok": True})
    fields = {
        "r": event.route,
        "t": event.type,
        "u": event.user_id,
        "j": event.job_id,
        "c": "",
        "p": events.dumps(event.message),
    }
    read = StreamEvent.from_entry("1700000000000-3", fields)
    assert read.key == (1700000000000, 3)
    assert events.is_terminal(read.message())
    assert read.message() == {**event.message, "eventId": "1700000000000-3"}
    assert read.message(snapshot=True)["snapshot"] is True


def test_broadcast_stream_event_is_not_terminal() -> None:
    event = events.system_notification("hi")
    read = StreamEvent.from_entry(
        "5-0", {"r": "all", "t": event.type, "p": json.dumps(event.message)}
    )
    assert not events.is_terminal(read.message())
    assert read.job_id == ""


def test_dumps_is_compact_json_without_nan() -> None:
    assert events.dumps({"a": 1, "b": "é"}) == '{"a":1,"b":"é"}'
    with pytest.raises(ValueError):
        events.dumps({"x": float("inf")})


# --- JSON: orjson where it agrees with the json module, the json module where it does not


@pytest.mark.parametrize(
    "value",
    [
        {"type": "job_status_update", "data": {"progress": 42.5, "message": "Écrire ✓"}},
        {1: "non-string key"},  # orjson refuses; json writes "1"
        {"big": 2**70},  # beyond orjson's 64 bits
        {"lone": "\ud800"},  # a lone surrogate: orjson refuses it
        [None, True, 0.1, "</script>"],
    ],
)
def test_dumps_writes_what_the_json_module_would_read_back(value: Any) -> None:
    text = events.dumps(value)
    assert json.loads(text) == json.loads(
        json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    )
    assert ", " not in text and ": " not in text  # compact


@pytest.mark.parametrize(
    "bad",
    [
        float("nan"),
        float("inf"),
        {"a": [1, float("-inf")]},
        {"when": datetime.datetime(2024, 1, 1)},
        [datetime.date(2024, 1, 1)],
        {"obj": object()},
    ],
)
def test_dumps_refuses_what_is_not_json(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        events.dumps(bad)


def test_loads_takes_what_orjson_refuses() -> None:
    assert events.loads('{"a":"\\ud800"}') == {"a": "\ud800"}
    assert events.loads(b'{"a":[1,2.5,"x"]}') == {"a": [1, 2.5, "x"]}


def test_the_output_head_is_a_job_output_message_up_to_its_offset() -> None:
    head = events.output_head('job "1" ☕', 1700000000000)
    assert head.endswith('"data":{"offset":')
    message = json.loads(head + '12,"text":' + json.dumps("héllo 𝄞") + "}}")
    assert message == events.job_output('job "1" ☕', 12, "héllo 𝄞", 1700000000000)
