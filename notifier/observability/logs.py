"""Structured logging with secrets scrubbed from every record, uvicorn's own included."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

_SECRETS = re.compile(
    r"(?P<q>([?&](token|access_token|password|secret)=))[^&\s\"']+"
    r"|(?P<b>[Bb]earer\s+)[\w.~+/=-]+"
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"
    r"|(?P<u>redis(s)?://[^:/@\s]*:)[^@\s]+@"
)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def scrub(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group("q"):
            return m.group("q") + "[redacted]"
        if m.group("b"):
            return m.group("b") + "[redacted]"
        if m.group("u"):
            return m.group("u") + "[redacted]@"
        return "[redacted-jwt]"

    return _SECRETS.sub(repl, text)


class RedactingFilter(logging.Filter):
    """Formats the message once and removes tokens and passwords from it and its extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = scrub(value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        text = f"{base} {extras}" if extras else base
        if record.exc_info:
            text += "\n" + scrub(self.formatException(record.exc_info))
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


def parse_levels(spec: str) -> dict[str, str]:
    """``"notifier.core.hub=DEBUG,workers=INFO"`` as ``{logger: level}``."""
    levels: dict[str, str] = {}
    for item in spec.split(","):
        name, sep, level = item.strip().partition("=")
        if not sep or not name.strip():
            continue
        level = level.strip().upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {level!r} for {name.strip()!r}")
        levels[name.strip()] = level
    return levels


def logging_config(level: str = "INFO", fmt: str = "text", levels: str = "") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for jobcast and uvicorn alike."""
    formatter = "json" if fmt == "json" else "text"
    per_module = {name: {"level": lvl} for name, lvl in parse_levels(levels).items()}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": formatter,
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
            **per_module,
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure(level: str = "INFO", fmt: str = "text", levels: str = "") -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level, fmt, levels))
