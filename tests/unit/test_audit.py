"""Unit tests for mitigate.audit: decoding, selecting, ordering and printing a story, with no broker.

The pipeline's own stages (Decider, Orchestrator, ReviewDesk and
intake.dead_letter) build the records of each scenario. Each record is encoded
as a topic would contain it and decoded back with decode_message. Write times
are in seconds after builders.NOW, which is also the event time.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from mitigate import cli
from mitigate.audit import (
    AuditError,
    Message,
    RawMessage,
    Terms,
    add_parser,
    collect,
    decode_message,
    format_story,
    run_trace,
    select,
    story_entries,
    story_json,
    story_topics,
)
from mitigate.automation import Orchestration
from mitigate.decision import stable_id
from mitigate.enrichment import TRACE_HEADER
from mitigate.errors import DecodeError
from mitigate.intake import IntakeRejected, SourceMessage, dead_letter
from mitigate.models import AvroModel, DecisionRecord, PlanControl
from mitigate.orchestration import Orchestrator
from mitigate.topology import Topology
from tests.unit.builders import NOW, event_fields
from tests.unit.test_orchestration import THREE_STEPS, decide, result_of, start_control
from tests.unit.test_review import CODEC, Desk, verdict

TOPOLOGY = Topology(prefix="unit.")
TOPICS = story_topics(TOPOLOGY)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


class Topics:
    """Messages as the story topics contain them: encoded with a trace-id header, then decoded as a scan does."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._offsets: Counter[str] = Counter()

    def add(self, topic: str, record: AvroModel, written: float | None, trace: str | None = None) -> Message:
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        trace = trace or getattr(record, "trace_id", None)
        headers = ((TRACE_HEADER, trace.encode()),) if trace else ()
        written_at = None if written is None else at(written)
        raw = RawMessage(topic, 0, offset, written_at, headers, CODEC.encode(record.schema_name, record.to_avro()))
        message = decode_message(raw, CODEC, TOPOLOGY)
        assert message is not None
        self.messages.append(message)
        return message

    def record(self, record: DecisionRecord, written: float | None) -> Message:
        return self.add(TOPOLOGY.decisions, record, written)


class AutoIncident:
    """incident-1: a plan of three steps that completes, then a resolution that closes the incident.

    The signal step writes the plan before the decision, as DecisionStage does,
    and the orchestrator starts the plan 30 ms later.
    """

    def __init__(self) -> None:
        self.topics = Topics()
        decision = decide(THREE_STEPS)
        self.decision = decision.record
        self.control = start_control(decision)
        self.topics.add(TOPOLOGY.plans, self.control, 0.020)
        self.topics.record(self.decision, 0.021)

        orchestrator = Orchestrator(Orchestration(), CODEC)
        plan, started = orchestrator.start(self.control, 0, at(0.030))
        self.commands = list(started.commands)
        for index, command in enumerate(started.commands):
            self.topics.add(TOPOLOGY.actions(command.executor), command, 0.031 + index / 1000)

        rollback, ticket = self.commands
        self.topics.add(TOPOLOGY.action_results, result_of(rollback, "succeeded", at(1.0)), 1.001)
        verify = orchestrator.on_result(plan, result_of(rollback, "succeeded", at(1.0)), at(1.010)).commands[0]
        self.commands.append(verify)
        self.topics.add(TOPOLOGY.actions(verify.executor), verify, 1.011)
        self.topics.add(TOPOLOGY.action_results, result_of(ticket, "succeeded", at(2.0)), 2.001)
        orchestrator.on_result(plan, result_of(ticket, "succeeded", at(2.0)), at(2.010))
        verified = result_of(verify, "succeeded", at(3.0)).model_copy(update={"output": {"temperature": "61.5"}})
        self.topics.add(TOPOLOGY.action_results, verified, 3.001)
        (self.completed,) = orchestrator.on_result(plan, verified, at(3.010)).records
        self.topics.record(self.completed, 3.011)

        self.resolution = self.decision.model_copy(update={
            "decision_id": stable_id("decision", "resolution-1"), "event_id": "resolution-1",
            "trace_id": "trace-resolution-1", "decided_at": at(10), "signal_status": "resolved",
            "outcome": "suppress", "reason_code": "incident-resolved", "gates": [], "command_ids": [],
            "plan_id": None, "reason": "incident incident-1 resolved: no signal of it fires any more",
            "lineage": self.decision.lineage.model_copy(update={
                "source_offset": 101, "event_time": at(10), "ingest_time": at(10.040), "clock_skew_ms": 40}),
        })
        self.cancel = PlanControl(kind="cancel", incident_id="incident-1", plan_id=self.control.plan_id,
                                  trace_id="trace-resolution-1", issued_at=at(10),
                                  reason="incident resolved by signal resolution-1")
        self.topics.add(TOPOLOGY.plans, self.cancel, 10.049)
        self.topics.record(self.resolution, 10.050)

        # Another incident on the same topics, which no lookup of incident-1 may show.
        self.other = self.decision.model_copy(update={
            "decision_id": "decision-other", "event_id": "event-other", "trace_id": "trace-other",
            "incident_id": "incident-2", "plan_id": None, "command_ids": []})
        self.topics.record(self.other, 5.0)

    @property
    def messages(self) -> list[Message]:
        return self.topics.messages


AUTO_KINDS = ["event", "intake", "enrich", "decision", "plan", "command", "command", "result", "command",
              "result", "result", "plan-record", "event", "intake", "enrich", "decision", "plan"]


def rejected_letter(topics: Topics, *, trace: str = "trace-rejected", event_id: str = "rejected-1") -> Message:
    """Send an event stamped an hour ahead through intake's dead_letter, as the anomalies agent does."""
    value = CODEC.encode("AnomalyEvent", event_fields(event_id=event_id, event_time=at(3600)))
    source = SourceMessage("unit.anomalies", 2, 7, at(0.5), b"machine-temperature-01", value,
                           ((TRACE_HEADER, trace.encode()),))
    rejection = IntakeRejected("event-time-future", "event_time is 3600 s ahead of the pipeline clock (limit 300 s)",
                               "fingerprint:2a11a66bf2fb32de")
    letter = dead_letter(source, rejection, now=at(0.6), pipeline_version="0.1.0-unit", trace_id=trace)
    return topics.add(TOPOLOGY.dead_letters, letter, 0.601)


def sources(messages: tuple[Message, ...] | list[Message]) -> set[str]:
    return {message.source for message in messages}


def scanner(messages: list[Message], calls: list[tuple[list[str], set[str]]]) -> Any:
    """A scan over `messages` that records the topics and terms of each call."""
    def scan(topics: list[str], terms: Terms) -> list[Message]:
        calls.append((list(topics), set(terms.values)))
        return [message for message in messages if message.topic in topics and terms.named_by(message)]
    return scan


# Decoding


def test_decode_keeps_coordinates() -> None:
    incident = AutoIncident()
    message = incident.messages[1]

    assert message.source == "unit.decisions[0]@0"
    assert message.written_at == at(0.021)
    assert message.trace_header == incident.decision.trace_id


def test_decode_skips_tick() -> None:
    tick = PlanControl(kind="tick", incident_id="incident-1", plan_id="incident-1", trace_id="incident-1",
                       issued_at=NOW)
    raw = RawMessage(TOPOLOGY.plans, 0, 5, NOW, (), CODEC.encode("PlanControl", tick.to_avro()))

    assert decode_message(raw, CODEC, TOPOLOGY) is None


def test_decode_empty_value_skipped() -> None:
    assert decode_message(RawMessage(TOPOLOGY.decisions, 0, 5, NOW, (), None), CODEC, TOPOLOGY) is None


def test_decode_wrong_schema_raises() -> None:
    value = CODEC.encode("AnomalyEvent", event_fields())

    with pytest.raises(DecodeError, match="cannot be read as DecisionRecord"):
        decode_message(RawMessage(TOPOLOGY.decisions, 0, 5, NOW, (), value), CODEC, TOPOLOGY)


def test_decode_invalid_record_raises() -> None:
    record = AutoIncident().decision.to_avro() | {"risk_score": 7.0}
    raw = RawMessage(TOPOLOGY.decisions, 0, 5, NOW, (), CODEC.encode("DecisionRecord", record))

    with pytest.raises(ValidationError, match="risk_score"):
        decode_message(raw, CODEC, TOPOLOGY)


def test_decode_dead_letter_reads_event() -> None:
    letter = rejected_letter(Topics())

    assert letter.rejected is not None
    assert letter.rejected.event_id == "rejected-1"
    assert (letter.rejected.detector_id, letter.rejected.detector_version) == ("robust-zscore", "1.2.0")


def test_decode_dead_letter_of_garbage() -> None:
    source = SourceMessage("unit.anomalies", 0, 3, None, None, b'{"entity": "x"}', ())
    letter = dead_letter(source, IntakeRejected("unknown-wire-format", "not Avro"), now=NOW,
                         pipeline_version="0.1.0-unit", trace_id="trace-garbage")

    message = Topics().add(TOPOLOGY.dead_letters, letter, 1.0)

    assert message.rejected is None


# Terms


def test_terms_admit_message_containing_id() -> None:
    raw = RawMessage(TOPOLOGY.decisions, 0, 0, None, (), b"\x48abc-123\x00")

    assert Terms(["abc-123"]).admit(raw)
    assert not Terms(["abc-124"]).admit(raw)


def test_terms_admit_header_value() -> None:
    raw = RawMessage(TOPOLOGY.review_verdicts, 0, 0, None, ((TRACE_HEADER, b"trace-9"),), b"\x00")

    assert Terms(["trace-9"]).admit(raw)


def test_terms_many_ids_admit_all() -> None:
    raw = RawMessage(TOPOLOGY.decisions, 0, 0, None, (), b"nothing here")

    assert Terms(f"id-{number}" for number in range(65)).admit(raw)
    assert not Terms(f"id-{number}" for number in range(64)).admit(raw)


# Selecting the story


def test_select_event_id_expands_incident() -> None:
    incident = AutoIncident()

    story = select(incident.messages, incident.decision.event_id)

    other = {message.source for message in incident.messages if message.record == incident.other}
    assert sources(story.messages) == sources(incident.messages) - other
    assert story.incidents == {"incident-1"}


@pytest.mark.parametrize("lookup", ["incident", "command", "trace", "plan", "resolution"])
def test_select_other_ids_same_story(lookup: str) -> None:
    incident = AutoIncident()
    identifier = {
        "incident": "incident-1",
        "command": incident.commands[2].command_id,
        "trace": incident.decision.trace_id,
        "plan": incident.control.plan_id,
        "resolution": "resolution-1",
    }[lookup]

    by_event = select(incident.messages, incident.decision.event_id)
    story = select(incident.messages, identifier)

    assert sources(story.messages) == sources(by_event.messages)


def test_select_names_matched_fields() -> None:
    incident = AutoIncident()

    story = select(incident.messages, incident.commands[0].command_id)

    assert story.matched == {"command_id": 2, "command_ids": 1}


def test_select_unknown_id_empty() -> None:
    story = select(AutoIncident().messages, "no-such-id")

    assert story.messages == ()
    assert story.incidents == frozenset()


def test_select_rejected_event_by_event_id() -> None:
    incident = AutoIncident()
    letter = rejected_letter(incident.topics)

    story = select(incident.messages, "rejected-1")

    assert story.messages == (letter,)
    assert story.matched == {"event_id": 1}


def test_select_rejected_event_by_trace_id() -> None:
    incident = AutoIncident()
    letter = rejected_letter(incident.topics)

    story = select(incident.messages, "trace-rejected")

    assert story.messages == (letter,)
    assert story.matched == {"headers.trace-id": 1, "trace-id header": 1, "trace_id": 1}


def test_select_dead_letter_of_story_trace_joins() -> None:
    # The detector sent the event once too early, with the trace id it used again for the accepted copy.
    incident = AutoIncident()
    letter = rejected_letter(incident.topics, trace=incident.decision.trace_id, event_id="first-copy")

    story = select(incident.messages, "incident-1")

    assert letter.source in sources(story.messages)


def test_select_unrelated_dead_letter_left_out() -> None:
    incident = AutoIncident()
    letter = rejected_letter(incident.topics)

    story = select(incident.messages, "incident-1")

    assert letter.source not in sources(story.messages)


def test_select_counts_message_once() -> None:
    incident = AutoIncident()

    story = select(incident.messages + incident.messages, "incident-1")

    assert len(story.messages) == len(incident.messages) - 1


# Collecting with scans


def test_collect_event_scans_three_times() -> None:
    incident = AutoIncident()
    calls: list[tuple[list[str], set[str]]] = []
    event_id = incident.decision.event_id

    story = collect(scanner(incident.messages, calls), TOPOLOGY, event_id)

    assert len(story.messages) == len(incident.messages) - 1
    assert calls[0] == (TOPICS, {event_id})
    assert calls[1] == ([topic for topic in TOPICS if topic != TOPOLOGY.dead_letters], {event_id, "incident-1"})
    assert calls[2] == ([TOPOLOGY.dead_letters], {event_id, "resolution-1", incident.decision.trace_id,
                                                  "trace-resolution-1"})
    assert len(calls) == 3


def test_collect_incident_skips_second_scan() -> None:
    incident = AutoIncident()
    calls: list[tuple[list[str], set[str]]] = []

    collect(scanner(incident.messages, calls), TOPOLOGY, "incident-1")

    assert [topics for topics, _terms in calls] == [TOPICS, [TOPOLOGY.dead_letters]]


def test_collect_finds_dead_letter_of_incident_event() -> None:
    incident = AutoIncident()
    letter = rejected_letter(incident.topics, trace="trace-resolution-1", event_id="resolution-1")

    story = collect(scanner(incident.messages, []), TOPOLOGY, incident.commands[0].command_id)

    assert letter.source in sources(story.messages)


def test_collect_prefix_hint() -> None:
    with pytest.raises(AuditError, match="it looks like the start of an id, and audit needs the full id"):
        collect(scanner(AutoIncident().messages, []), TOPOLOGY, "217889df")


def test_collect_missing_id_error() -> None:
    with pytest.raises(AuditError) as caught:
        collect(scanner(AutoIncident().messages, []), TOPOLOGY, "no-such-id")

    assert str(caught.value) == (
        "no message mentions no-such-id in unit.anomalies.dead-letter, unit.decisions, unit.plans, "
        "unit.actions.demo-target, unit.actions.shell, unit.actions.ticket, unit.actions.webhook, "
        "unit.action-results, unit.reviews.requests, unit.reviews.verdicts; check the id, or whether the "
        "topics' retention has dropped it")


# Entries of an automated plan


def auto_entries() -> list[Any]:
    incident = AutoIncident()
    return story_entries(select(incident.messages, "incident-1"))


def test_auto_entries_in_order() -> None:
    assert [entry.kind for entry in auto_entries()] == AUTO_KINDS


def test_auto_entries_times_ascend_between_steps() -> None:
    times = [entry.at for entry in auto_entries()]

    assert times[0] == NOW  # the ingest time of the first event
    assert times[-1] == at(10.049)  # the cancel, written just before the resolution's decision
    assert times[5:12] == sorted(times[5:12])


def test_decision_written_after_plan_listed_first() -> None:
    entries = auto_entries()

    assert entries[3].source == "unit.decisions[0]@0"
    assert entries[4].source == "unit.plans[0]@0"
    assert entries[3].at > entries[4].at


def test_event_entry_has_lineage() -> None:
    event, intake, enrich = auto_entries()[:3]

    assert event.summary.endswith("from robust-zscore 1.2.0, read from unit.anomalies[1]@100")
    assert "event time 2026-03-02 10:30:15.250, ingest time 2026-03-02 10:30:15.250, clock skew 0 ms" in event.details
    assert event.data["lineage"]["writer_schema"] == "fingerprint:2a11a66bf2fb32de"
    assert intake.summary == "accepted by intake: decoded with writer schema fingerprint:2a11a66bf2fb32de"
    assert enrich.summary == ("asset context of machine-temperature-01: owner plant-operations, tier tier-1, "
                              "criticality high, environment production, change freeze off")


def test_second_event_has_own_lineage() -> None:
    event = auto_entries()[12]

    assert event.summary.startswith("event resolution-1 from robust-zscore 1.2.0, read from unit.anomalies[1]@101")
    assert event.at == at(10.040)
    assert "clock skew 40 ms" in event.details[1]


def test_decision_entry_lists_gates() -> None:
    decision = auto_entries()[3]

    assert decision.summary.startswith("auto policy-matched: all 6 gates passed; plan of 3 steps started")
    assert decision.details[0] == ("policy cooling-spike v1, rule anomaly_types=spike subsystems=industrial/* "
                                   "severities=medium,high,critical")
    assert "gate min-confidence: 0.95 against >= 0.85: passed" in decision.details
    assert "gate approval-severity: high against not in [critical]: passed" in decision.details
    assert decision.data["gates"][0] == {"name": "min-confidence", "passed": True, "value": "0.95",
                                         "threshold": ">= 0.85"}


def test_plan_entry_lists_steps() -> None:
    plan = auto_entries()[4]

    assert plan.summary.startswith("plan ")
    assert plan.summary.endswith("started: 3 steps of policy cooling-spike v1")
    assert plan.details[2] == ("3. verify: webhook/verify-temperature on machine-temperature-01; parameters none; "
                               "timeout 5m; after rollback-config")
    assert "decision" not in plan.data


def test_command_entry_fields() -> None:
    incident = AutoIncident()
    command = story_entries(select(incident.messages, "incident-1"))[5]

    assert command.summary == ("command demo-target/rollback-config on machine-temperature-01, step rollback-config, "
                               "attempt 1")
    assert command.details[:2] == ("parameters to_version=last-known-good", "deadline 2026-03-02 10:32:15.280")
    assert command.data["command_id"] == incident.commands[0].command_id


def test_result_entry_fields() -> None:
    result = auto_entries()[10]

    assert result.summary == "result succeeded from webhook, step verify, attempt 1"
    assert result.details[0] == "output temperature=61.5"
    assert result.data["status"] == "succeeded"


def test_plan_record_entry() -> None:
    record = auto_entries()[11]

    assert record.summary == ("auto plan-completed: plan completed: rollback-config succeeded, "
                              "open-ticket succeeded, verify succeeded")


def test_cancel_entry() -> None:
    cancel = auto_entries()[-1]

    assert cancel.summary == "cancel for incident incident-1: incident resolved by signal resolution-1"


def test_unknown_asset_entry() -> None:
    incident = AutoIncident()
    unknown = incident.decision.model_copy(update={"asset": None})
    topics = Topics()
    topics.record(unknown, 0.1)

    enrich = story_entries(select(topics.messages, "incident-1"))[2]

    assert enrich.summary == "machine-temperature-01 is not in the assets table; no asset context"
    assert enrich.data["asset"] is None


def test_write_time_falls_back_to_record() -> None:
    incident = AutoIncident()
    topics = Topics()
    topics.record(incident.decision, None)

    decision = story_entries(select(topics.messages, "incident-1"))[3]

    assert decision.at == incident.decision.decided_at


def test_message_sent_again_marked() -> None:
    incident = AutoIncident()
    again = incident.topics.record(incident.decision, 0.5)

    entries = story_entries(select(incident.messages, "incident-1"))

    decisions = [entry for entry in entries if entry.kind == "decision"]
    assert [(entry.source, entry.repeat) for entry in decisions[:2]] == [
        ("unit.decisions[0]@0", False), (again.source, True)]
    assert [entry.kind for entry in entries].count("event") == 2


# Entries of a review


def review_story() -> tuple[Desk, list[Any]]:
    """Return a request opened at NOW and approved by bob 10 s later, and the entries of its story.

    The agent writes the commands, then the request's new state, then the record, as PlanAgent does.
    """
    desk = Desk()
    topics = Topics()
    request = desk.request
    assert request.decision is not None
    template = DecisionRecord.model_validate(CODEC.decode(request.decision, "DecisionRecord").record)
    topics.add(TOPOLOGY.review_requests, request, 0.020)
    topics.record(template, 0.021)

    answer = verdict(request, "approve", "bob", reason="seen on the console")
    topics.add(TOPOLOGY.review_verdicts, answer, 9.0, trace=request.trace_id)
    effects = desk.desk.on_verdict(desk.book, answer, 2, at(10))
    written = 10.001
    for command in effects.commands:
        topics.add(TOPOLOGY.actions(command.executor), command, written)
        written += 0.001
    for state in effects.reviews:
        topics.add(TOPOLOGY.review_requests, state, written)
        written += 0.001
    for record in effects.records:
        topics.record(record, written)
        written += 0.001
    return desk, story_entries(select(topics.messages, request.review_id))


def test_review_entries_in_order() -> None:
    _desk, entries = review_story()

    assert [entry.kind for entry in entries] == ["event", "intake", "enrich", "decision", "review", "verdict",
                                                 "review-record", "review", "command", "command"]


def test_review_request_entry() -> None:
    desk, entries = review_story()
    requested = entries[4]

    assert requested.summary == (f"review {desk.request.review_id} requested (gate-failed): gates failed: "
                                 "min-confidence 0.6 (needs >= 0.85)")
    assert requested.details[0] == ("pending, revision 1, approvals 0 of 1, deadline 2026-03-02 10:45:15.250, "
                                    "on expiry escalate")
    assert requested.details[1].startswith("1. rollback-config: demo-target/rollback-config")
    assert "decision" not in requested.data


def test_review_decision_failed_gate() -> None:
    _desk, entries = review_story()

    assert entries[3].summary.startswith("review gate-failed: gates failed: min-confidence 0.6")
    assert "gate min-confidence: 0.6 against >= 0.85: FAILED" in entries[3].details


def test_verdict_entry_operator_reason() -> None:
    desk, entries = review_story()
    answer = entries[5]

    assert answer.summary == (f"verdict approve by bob on review {desk.request.review_id} revision 1: "
                              "seen on the console")
    assert answer.data["operator"] == "bob"


def test_verdict_outcome_entries() -> None:
    desk, entries = review_story()
    record, state = entries[6], entries[7]

    assert record.summary.startswith("auto review-approved: approved by bob (quorum 1): seen on the console; plan ")
    assert "operators bob" in record.details
    assert state.summary.startswith(f"review {desk.request.review_id} approved: approved by bob")
    assert state.details == ("revision 1, approvals 1 of 1 (bob)",)


def test_verdict_details_list_changes() -> None:
    desk = Desk()
    answer = verdict(desk.request, "modify", "carol", drop_steps=["verify"],
                     parameters={"open-ticket": {"queue": "night-shift", "owner": ""}})
    topics = Topics()
    topics.add(TOPOLOGY.review_verdicts, answer, 1.0)

    (entry,) = story_entries(select(topics.messages, answer.verdict_id))

    assert entry.details[:2] == ("drop steps verify", "set open-ticket: owner removed, queue=night-shift")


# Dead letters


def test_dead_letter_entry() -> None:
    topics = Topics()
    rejected_letter(topics)

    (entry,) = story_entries(select(topics.messages, "rejected-1"))

    assert entry.kind == "dead-letter"
    assert entry.summary == ("rejected at intake (event-time-future): event_time is 3600 s ahead of the pipeline "
                             "clock (limit 300 s)")
    assert entry.details[:3] == ("input unit.anomalies[2]@7, written 2026-03-02 10:30:15.750",
                                 "writer schema fingerprint:2a11a66bf2fb32de",
                                 "event rejected-1 from robust-zscore 1.2.0")
    assert entry.data["rejected_event"]["event_id"] == "rejected-1"
    assert entry.data["headers"] == [{"key": "trace-id", "value": "dHJhY2UtcmVqZWN0ZWQ="}]


# Output


def test_json_lists_entries() -> None:
    topics = AutoIncident().topics
    rejected_letter(topics, trace="trace-resolution-1", event_id="resolution-1")

    entries = json.loads(story_json(story_entries(select(topics.messages, "incident-1"))))

    # The dead letter was written 0.6 s after the event, between the plan's first commands and results.
    assert [entry["kind"] for entry in entries] == [*AUTO_KINDS[:7], "dead-letter", *AUTO_KINDS[7:]]
    assert entries[0]["time"] == "2026-03-02T10:30:15.250000+00:00"
    assert set(entries[5]) == {"time", "kind", "summary", "details", "source", "repeat", "data"}
    assert entries[7]["data"]["value"] == base64.b64encode(
        CODEC.encode("AnomalyEvent", event_fields(event_id="resolution-1", event_time=at(3600)))).decode()


def test_text_has_headline_and_times() -> None:
    incident = AutoIncident()
    story = select(incident.messages, incident.decision.event_id)

    lines = format_story(story, story_entries(story)).splitlines()

    assert lines[0] == (f"Trace of {incident.decision.event_id}: the event_id of 5 messages; incident incident-1; "
                        "17 entries")
    assert lines[2].startswith("2026-03-02 10:30:15.250  event          event ")
    assert any(line.startswith("2026-03-02 10:30:15.271  decision       auto policy-matched: ") for line in lines)
    assert f"{' ' * 40}message unit.decisions[0]@0" in lines


def test_text_marks_repeat() -> None:
    incident = AutoIncident()
    incident.topics.record(incident.decision, 0.5)
    story = select(incident.messages, "incident-1")

    text = format_story(story, story_entries(story))

    assert text.count("[sent again]") == 1


# Command line


def audit_parser() -> argparse.ArgumentParser:
    """The `mitigate` parser with the audit subcommand only, as cli.build_parser will add it."""
    parser = argparse.ArgumentParser(prog="mitigate")
    parser.add_argument("--bootstrap-servers")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(commands)
    return parser


@pytest.fixture
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop MITIGATE_* variables of the calling shell, and use the unit topology's prefix."""
    for name in list(os.environ):
        if name.startswith("MITIGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MITIGATE_TOPIC_PREFIX", TOPOLOGY.prefix)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, plain_environment: None) -> list[Message]:
    """Run the CLI against in-memory topics: no broker check, and scan_topics reads the returned list."""
    messages: list[Message] = []

    def scan_topics(bootstrap_servers: str, topology: Topology, codec: Any, topics: list[str], terms: Terms,
                    **options: Any) -> list[Message]:
        return [message for message in messages if message.topic in topics and terms.named_by(message)]

    monkeypatch.setattr("mitigate.kafka.check_reachable", lambda bootstrap_servers: None)
    monkeypatch.setattr("mitigate.audit.scan_topics", scan_topics)
    monkeypatch.setattr(cli, "build_parser", audit_parser)
    return messages


def test_parser_reads_id_and_json() -> None:
    args = audit_parser().parse_args(["audit", "trace", "4d7f3c1e", "--json"])

    assert (args.identifier, args.json, args.handler) == ("4d7f3c1e", True, run_trace)


# (case, arguments, error line)
USAGE_ERRORS = [
    ("no-action", ["audit"], "mitigate audit: error: the following arguments are required: ACTION"),
    ("unknown-action", ["audit", "replay"],
     "mitigate audit: error: argument ACTION: invalid choice: 'replay' (choose from 'trace')"),
    ("no-id", ["audit", "trace"], "mitigate audit trace: error: the following arguments are required: ID"),
    ("blank-id", ["audit", "trace", " "], "mitigate audit trace: error: argument ID: the id is empty; give the full "
                                         "id of an event, incident, command, review, verdict, plan, dead letter or "
                                         "trace"),
    ("long-id", ["audit", "trace", "x" * 1025], "mitigate audit trace: error: argument ID: the id is 1025 "
                                               "characters long; ids are at most 1024 characters"),
    ("unknown-option", ["audit", "trace", "abc", "--yaml"], "mitigate: error: unrecognized arguments: --yaml"),
]


@pytest.mark.parametrize(("arguments", "message"), [case[1:] for case in USAGE_ERRORS],
                         ids=[case[0] for case in USAGE_ERRORS])
def test_usage_error_exit_2(arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        audit_parser().parse_args(arguments)

    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert err.startswith("usage: mitigate ")
    assert err.rstrip("\n").endswith(message)


def test_missing_id_exit_1(offline: list[Message], capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["audit", "trace", "no-such-id"])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("mitigate: error: no message mentions no-such-id in unit.anomalies.dead-letter, ")
    assert err.endswith("; check the id, or whether the topics' retention has dropped it\n")


def test_found_id_exit_0(offline: list[Message], capsys: pytest.CaptureFixture[str]) -> None:
    offline.extend(AutoIncident().messages)

    code = cli.main(["audit", "trace", "incident-1"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Trace of incident-1: the incident_id of 11 messages; incident incident-1; 17 entries\n")


def test_handler_json_output(offline: list[Message]) -> None:
    offline.extend(AutoIncident().messages)
    args = audit_parser().parse_args(["audit", "trace", "resolution-1", "--json"])
    out = io.StringIO()

    code = run_trace(args, out)

    assert code == 0
    assert [entry["kind"] for entry in json.loads(out.getvalue())] == AUTO_KINDS
