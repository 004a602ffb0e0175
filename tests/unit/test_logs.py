"""Unit tests for mitigate.logs: the JSON format and the limit on repeated warnings."""

from __future__ import annotations

import json
import logging
import logging.config
import sys

import pytest

from mitigate.logs import JsonFormatter, RepeatFilter, TextFormatter, logging_config


def record(message: str = "dead letter reason=%s", level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("mitigate.pipeline", level, __file__, 1, message, ("undecodable",), None)
    for name, value in extra.items():
        setattr(entry, name, value)
    return entry


def test_json_has_ids() -> None:
    line = json.loads(JsonFormatter().format(record(incident_id="i-1", trace_id="t-1")))

    assert line["message"] == "dead letter reason=undecodable"
    assert (line["incident_id"], line["trace_id"], line["level"]) == ("i-1", "t-1", "warning")
    assert "event_id" not in line


def test_json_includes_error() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        entry = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    assert "ValueError: broken" in json.loads(JsonFormatter().format(entry))["error"]


def test_repeats_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("mitigate.logs.time.monotonic", lambda: clock[0])
    limit = RepeatFilter(limit=3, period_s=60)

    passed = [limit.filter(record()) for _ in range(10)]

    assert passed == [True] * 3 + [False] * 7


def test_repeat_note_after_period(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("mitigate.logs.time.monotonic", lambda: clock[0])
    limit = RepeatFilter(limit=2, period_s=60)
    for _ in range(5):
        limit.filter(record())
    clock[0] = 161.0
    later = record()

    assert limit.filter(later) is True
    assert TextFormatter().format(later).endswith("(3 more like this were not logged in the last period)")


def test_last_allowed_repeat_announces_limit() -> None:
    limit = RepeatFilter(limit=2, period_s=60)
    limit.filter(record())
    second = record()
    limit.filter(second)

    assert TextFormatter().format(second).endswith("(further messages like this are limited for 60 s)")


def test_info_not_limited() -> None:
    limit = RepeatFilter(limit=1, period_s=60)

    assert all(limit.filter(record(level=logging.INFO)) for _ in range(5))


def test_other_templates_counted_apart() -> None:
    limit = RepeatFilter(limit=1, period_s=60)
    limit.filter(record("first %s"))

    assert limit.filter(record("second %s")) is True


def test_config_is_valid() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.config.dictConfig(logging_config("json", "info"))
    try:
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert isinstance(root.handlers[0].filters[0], RepeatFilter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
