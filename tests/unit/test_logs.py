"""Secrets never reach a log line (no processes)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from notifier.edge.auth import mint_token
from notifier.observability.logs import (
    JsonFormatter,
    RedactingFilter,
    TextFormatter,
    logging_config,
    parse_levels,
    scrub,
)

JWT = mint_token("log-test-secret-" + "k" * 48, 1, username="alice")
SIGNATURE = JWT.rsplit(".", 1)[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '"WebSocket /ws/job-status-native?token=abc.def.ghi" [accepted]',
            '"WebSocket /ws/job-status-native?token=[redacted]" [accepted]',
        ),
        (
            "GET /api/v1/jobs?limit=5&token=s3cr3t&x=1",
            "GET /api/v1/jobs?limit=5&token=[redacted]&x=1",
        ),
        ("/cb?access_token=abc", "/cb?access_token=[redacted]"),
        ("/login?user=a&password=hunter2", "/login?user=a&password=[redacted]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [redacted]"),
        ("authorization: bearer opaque~token+/=", "authorization: bearer [redacted]"),
        ("redis://:p4ss@127.0.0.1:6379/0", "redis://:[redacted]@127.0.0.1:6379/0"),
        ("rediss://user:p4ss@cache:6380/1", "rediss://user:[redacted]@cache:6380/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_scrub_removes_a_bare_jwt() -> None:
    scrubbed = scrub(f"token refused: {JWT} (expired)")
    assert JWT not in scrubbed and SIGNATURE not in scrubbed
    assert scrubbed == "token refused: [redacted-jwt] (expired)"


def test_scrub_removes_jwts_in_query_and_header() -> None:
    for text in (
        f"/ws/job-status?EIO=4&token={JWT}",
        f"Bearer {JWT}",
        f"auth={{'token': '{JWT}'}}",
    ):
        assert SIGNATURE not in scrub(text), text


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {
            "name": "uvicorn.access",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": msg,
            "args": args,
        }
    )
    rec.__dict__.update(extra)
    return rec


def test_filter_scrubs_arguments_and_extras() -> None:
    rec = record(
        '%s - "%s %s"',
        "127.0.0.1",
        "GET",
        f"/api/v1/jobs?token={JWT}",
        url="redis://:pw@host:6379/0",
        conn="c-1",
    )
    assert RedactingFilter().filter(rec) is True
    assert SIGNATURE not in rec.getMessage()
    assert rec.getMessage() == '127.0.0.1 - "GET /api/v1/jobs?token=[redacted]"'
    assert rec.url == "redis://:[redacted]@host:6379/0"
    assert rec.conn == "c-1"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_formatters_scrub_tracebacks(formatter: logging.Formatter) -> None:
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        rec = record("failed", exc_info=None)
        rec.exc_info = sys.exc_info()
    RedactingFilter().filter(rec)
    line = formatter.format(rec)
    assert SIGNATURE not in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["msg"] == "failed"


def test_per_module_levels_are_parsed_and_applied() -> None:
    assert parse_levels("notifier.core.hub=debug, workers=INFO") == {
        "notifier.core.hub": "DEBUG",
        "workers": "INFO",
    }
    config = logging_config("INFO", "json", "notifier.core.hub=DEBUG")
    assert config["loggers"]["notifier.core.hub"] == {"level": "DEBUG"}
    assert config["handlers"]["default"]["formatter"] == "json"


def test_an_unknown_level_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="LOUD"):
        parse_levels("notifier=LOUD")
