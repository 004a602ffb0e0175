"""Logging of the worker: text or JSON lines, with the ids of what each line is about, and repeats limited.

Log calls pass the ids they know as `extra` (incident_id, trace_id, event_id,
plan_id, review_id, verdict_id, operator, source). The JSON format puts them
in fields of their own; the text format relies on the message, which names
them as key=value too.

During an alert storm one fault can repeat on every message. RepeatFilter
lets the first `limit` records of each message template and level through per
period, drops the rest, and notes the number dropped on the next record of
that template it lets through.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("incident_id", "trace_id", "event_id", "plan_id", "review_id", "verdict_id", "command_id",
                  "operator", "source")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Let at most `limit` warnings or errors of one message template through per `period_s`."""

    def __init__(self, limit: int = 10, period_s: float = 60.0) -> None:
        super().__init__()
        self.limit = limit
        self.period_s = period_s
        self._counts: dict[tuple[str, int, str], tuple[float, int, int]] = {}  # start, passed, dropped

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        start, passed, dropped = self._counts.get(key, (now, 0, 0))
        if now - start >= self.period_s:
            if dropped:
                record.suppressed = dropped
            self._counts[key] = (now, 1, 0)
            return True
        if passed < self.limit:
            if passed == self.limit - 1:
                record.suppressed_next = self.period_s
            self._counts[key] = (start, passed + 1, dropped)
            return True
        self._counts[key] = (start, passed, dropped + 1)
        return False


class TextFormatter(logging.Formatter):
    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text + _repeat_note(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids in the record, and the error if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage() + _repeat_note(record),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _repeat_note(record: logging.LogRecord) -> str:
    dropped = getattr(record, "suppressed", 0)
    if dropped:
        return f" ({dropped} more like this were not logged in the last period)"
    period = getattr(record, "suppressed_next", None)
    if period:
        return f" (further messages like this are limited for {period:.0f} s)"
    return ""


def configure_tool_logging() -> None:
    """Log warnings and errors of a command-line tool to stderr, each kind at most `RepeatFilter.limit` a minute.

    While a broker is down, the Kafka client reports every failed connection;
    the limit keeps a tool's output readable.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """Return a logging.config.dictConfig for the worker: one stdout handler with the format and the repeat limit."""
    formatter = "mitigate.logs.JsonFormatter" if log_format == "json" else "mitigate.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mitigate": {"()": formatter}},
        "filters": {"repeats": {"()": "mitigate.logs.RepeatFilter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "mitigate", "filters": ["repeats"],
                        "stream": "ext://sys.stdout"},
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
