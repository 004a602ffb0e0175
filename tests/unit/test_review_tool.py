"""Unit tests for mitigate.review_tool: finding, filtering and presenting requests, and verdict arguments."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from mitigate.cli import main
from mitigate.models import DecisionRecord, ReviewRequest
from mitigate.review_tool import (
    ReviewToolError,
    Selection,
    as_json,
    build_verdict,
    describe,
    find,
    latest_states,
    parse_changes,
    report_outcome,
    table,
)
from tests.unit.builders import NOW
from tests.unit.test_review import CODEC, request


def variant(review_id: str, **changes: Any) -> ReviewRequest:
    return request().model_copy(update={"review_id": review_id, **changes})


STATES = {
    review.review_id: review for review in (
        variant("aaaaaaaa-1111", risk_score=0.2, created_at=NOW - timedelta(minutes=50), severity="low"),
        variant("aaaaaaab-2222", risk_score=0.9, created_at=NOW - timedelta(minutes=5), subsystem="web/frontend"),
        variant("bbbbbbbb-3333", risk_score=0.5, created_at=NOW - timedelta(minutes=20), status="approved"),
    )
}


def test_latest_state_wins() -> None:
    first = variant("r-1")
    later = first.model_copy(update={"status": "vetoed"})

    assert latest_states([first, variant("r-2"), later])["r-1"].status == "vetoed"


def test_find_by_prefix() -> None:
    assert find(STATES, "bbbbbb").review_id == "bbbbbbbb-3333"


def test_find_by_incident() -> None:
    assert find(STATES, "incident-1").review_id == "aaaaaaab-2222"  # the newest request of the incident


@pytest.mark.parametrize(("identifier", "message"), [
    ("aaaaaa", "'aaaaaa' matches 2 review requests"),
    ("abc", "give the full id or at least 6 characters"),
    ("cccccccc", "no review request 'cccccccc'; `mitigate review list --status all` lists them"),
])
def test_find_errors(identifier: str, message: str) -> None:
    with pytest.raises(ReviewToolError, match=message):
        find(STATES, identifier)


@pytest.mark.parametrize(("selection", "expected"), [
    (Selection(), ["aaaaaaab-2222", "aaaaaaaa-1111"]),
    (Selection(sort="risk"), ["aaaaaaab-2222", "aaaaaaaa-1111"]),
    (Selection(sort="oldest"), ["aaaaaaaa-1111", "aaaaaaab-2222"]),
    (Selection(statuses=()), ["aaaaaaab-2222", "bbbbbbbb-3333", "aaaaaaaa-1111"]),
    (Selection(statuses=(), sort="risk"), ["aaaaaaab-2222", "bbbbbbbb-3333", "aaaaaaaa-1111"]),
    (Selection(subsystem="web/*"), ["aaaaaaab-2222"]),
    (Selection(severities=("low",)), ["aaaaaaaa-1111"]),
    (Selection(min_age=600), ["aaaaaaaa-1111"]),
    (Selection(max_age=600), ["aaaaaaab-2222"]),
    (Selection(limit=1, sort="oldest"), ["aaaaaaaa-1111"]),
], ids=["pending-newest", "risk", "oldest", "all", "all-risk", "subsystem", "severity", "min-age", "max-age", "limit"])
def test_selection(selection: Selection, expected: list[str]) -> None:
    assert [review.review_id for review in selection.apply(STATES.values(), NOW)] == expected


def test_table() -> None:
    lines = table(Selection().apply(STATES.values(), NOW), NOW).splitlines()

    assert lines[0].split() == ["REVIEW", "AGE", "SEVERITY", "RISK", "SUBSYSTEM", "ENTITY", "TYPE", "WHY",
                                "APPROVALS", "DEADLINE"]
    assert lines[1].split() == ["aaaaaaab", "5m", "high", "0.90", "web/frontend", "machine-temperature-01", "spike",
                                "gate-failed", "0/1", "in", "15m"]


def test_describe_sections() -> None:
    text = describe(request(quorum=2), NOW + timedelta(minutes=1))

    assert "Status    pending" in text
    assert "Approvals 0/2" in text
    assert "Why       gate-failed: gates failed: min-confidence 0.6 (needs >= 0.85)" in text
    assert "  3. verify: webhook/verify-temperature on machine-temperature-01" in text
    assert "     timeout 5m; after rollback-config" in text
    assert "Risk      0.56 = severity high (0.75) x criticality high (0.75)" in text
    assert "Answer    mitigate review approve " in text


def test_json_leaves_out_binary_record() -> None:
    data = as_json(request(), NOW)

    assert "decision" not in data
    assert data["overdue"] is False
    json.dumps(data)


def test_overdue_in_json() -> None:
    review = request()

    assert as_json(review, review.deadline + timedelta(seconds=1))["overdue"] is True


def test_parse_changes() -> None:
    drops, parameters = parse_changes(["verify", "verify"], ["rollback-config.to_version=v1", "a.b=c=d"],
                                      ["open-ticket.queue"])

    assert drops == ["verify"]
    assert parameters == {"rollback-config": {"to_version": "v1"}, "a": {"b": "c=d"}, "open-ticket": {"queue": ""}}


@pytest.mark.parametrize("text", ["to_version=v1", "step.=v1", ".name=v1", "step.name=", "step.name"])
def test_parse_changes_rejects_set(text: str) -> None:
    with pytest.raises(ReviewToolError, match="write STEP.NAME=VALUE"):
        parse_changes([], [text], [])


def test_build_verdict_checks_modify() -> None:
    with pytest.raises(ReviewToolError, match="cannot modify review .*: step 'nothing' is not in the plan"):
        build_verdict(request(), "modify", "bob", "", revision=None, drops=["nothing"], parameters={}, now=NOW)


def test_build_verdict_answers_current_revision() -> None:
    review = request().model_copy(update={"revision": 3})
    verdict = build_verdict(review, "approve", "bob", "", revision=None, drops=[], parameters={}, now=NOW)

    assert (verdict.revision, verdict.incident_id, verdict.kind) == (3, "incident-1", "approve")


def _record(reason_code: str, reason: str) -> DecisionRecord:
    template = request()
    assert template.decision is not None
    record = DecisionRecord.model_validate(CODEC.decode(template.decision, "DecisionRecord").record)
    return record.model_copy(update={"reason_code": reason_code, "reason": reason})


@pytest.mark.parametrize(("code", "status", "stream"), [
    ("review-approved", 0, "out"), ("review-approval-recorded", 0, "out"), ("verdict-rejected", 1, "err"),
])
def test_report_outcome(code: str, status: int, stream: str) -> None:
    verdict = build_verdict(request(), "approve", "bob", "", revision=None, drops=[], parameters={}, now=NOW)
    out, err = io.StringIO(), io.StringIO()

    assert report_outcome(verdict, _record(code, "the reason"), 30, False, out, err) == status
    assert "the reason" in (out if stream == "out" else err).getvalue()


def test_report_no_answer() -> None:
    verdict = build_verdict(request(), "approve", "bob", "", revision=None, drops=[], parameters={}, now=NOW)
    err = io.StringIO()

    assert report_outcome(verdict, None, 30, False, io.StringIO(), err) == 3
    assert "the pipeline recorded no answer within 30 s; is the worker running?" in err.getvalue()


@pytest.mark.parametrize("argv", [
    ["review", "approve"],
    ["review", "veto", "abcdef"],
    ["review", "veto", "abcdef", "--reason", " "],
    ["review", "modify", "abcdef"],
    ["review", "modify", "abcdef", "--set", "noequals"],
    ["review", "list", "--status", "done"],
    ["review", "list", "--severity", "urgent"],
    ["review", "list", "--min-age", "soon"],
    ["review", "watch", "--max", "0"],
    ["review", "approve", "abcdef", "--timeout", "-1s"],
], ids=["no-id", "veto-no-reason", "veto-blank-reason", "modify-no-change", "bad-set", "bad-status",
        "bad-severity", "bad-age", "bad-max", "bad-timeout"])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert "usage: mitigate review" in capsys.readouterr().err


class _Error:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return f"error {self._code}"


class _Message:
    def __init__(self, value: bytes | None = None, error: int | None = None) -> None:
        self._value = value
        self._error = _Error(error) if error is not None else None

    def error(self) -> _Error | None:
        return self._error

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "reviews.requests"


class _Consumer:
    """Hands out a fixed list of messages, then nothing."""

    def __init__(self, messages: list[_Message]) -> None:
        self.messages = messages

    def poll(self, timeout: float) -> _Message | None:
        return self.messages.pop(0) if self.messages else None


def test_poll_values_waits_out_a_broker_outage(capsys: pytest.CaptureFixture[str]) -> None:
    from confluent_kafka import KafkaError

    from mitigate.review_tool import poll_values

    consumer = _Consumer([_Message(b"before"), _Message(error=KafkaError._ALL_BROKERS_DOWN),
                          _Message(error=KafkaError._TRANSPORT), _Message(b"after")])

    values = list(poll_values(consumer, time.monotonic() + 0.5))  # type: ignore[arg-type]

    assert values == [b"before", b"after"]
    assert capsys.readouterr().err.splitlines() == [
        f"mitigate: lost the connection to Kafka (error {KafkaError._ALL_BROKERS_DOWN}); waiting for it",
        "mitigate: reading from Kafka again",
    ]


def test_poll_values_raises_other_errors() -> None:
    from confluent_kafka import KafkaError

    from mitigate.review_tool import ReviewToolError, poll_values

    consumer = _Consumer([_Message(error=KafkaError.TOPIC_AUTHORIZATION_FAILED)])

    with pytest.raises(ReviewToolError, match="consuming reviews.requests failed"):
        list(poll_values(consumer, time.monotonic() + 0.5))  # type: ignore[arg-type]
