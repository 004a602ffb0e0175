"""`mitigate audit trace ID`: the whole story of one incident, read back from the topics.

The ID is any id the pipeline writes: an anomaly event id, incident id,
command id, review id, verdict id, plan id, dead letter id or trace id. The
tool finds every message that names it, widens the result to every message of
the incidents those messages belong to, and adds the dead letters of the
story's events. It then lists what happened in time order.

The raw event's coordinates, its intake and its enrichment come from the
lineage in the decision records. Then come each decision with its gates, the
plans and their commands, the executors' results, every state of each review
request, the verdicts, and the records of plan progress and verdict outcomes.

Everything but `scan_topics` and the command-line handler is pure: decoding
a message, selecting the story, ordering and formatting it work on Message
objects and need no broker.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import TopicPartition
from pydantic import ValidationError

from mitigate.codec import AvroCodec
from mitigate.enrichment import TRACE_HEADER
from mitigate.errors import DecodeError, MitigateError
from mitigate.kafka import client_config
from mitigate.models import (
    ActionCommand,
    ActionResult,
    AvroModel,
    DeadLetter,
    DecisionRecord,
    PlanControl,
    PlanStepSpec,
    ReviewRequest,
    ReviewVerdict,
)
from mitigate.policy import format_duration
from mitigate.report import PLAN_PROGRESS, REVIEW_PROGRESS
from mitigate.topology import EXECUTORS, Topology

# Maximum length of an id, as the records accept it (models.NonEmpty).
MAX_ID_LENGTH = 1024
# With more ids than this, every message is decoded and compared instead of searched,
# because the raw-bytes test runs one substring search per id and message. With 64 UUIDs it
# took 47 us on a 1 KB DecisionRecord, and decoding the record 54 us (timeit, Python
# 3.11, one core of an Intel Xeon server).
PREFILTER_MAX_TERMS = 64
# How long a scan waits without any message before it gives up on the partitions left.
READ_IDLE_TIMEOUT_S = 30.0

Record = DecisionRecord | DeadLetter | PlanControl | ActionCommand | ActionResult | ReviewRequest | ReviewVerdict

_MODELS: dict[str, type[AvroModel]] = {
    model.schema_name: model
    for model in (DecisionRecord, DeadLetter, PlanControl, ActionCommand, ActionResult, ReviewRequest, ReviewVerdict)
}

# Order of entries that share a time. Within one processing step of the worker, the
# records come first, then the plan, the review request and the commands they name.
# Results and verdicts rank before records, because a tie there means one caused the other.
RANKS = {
    "event": 0, "intake": 1, "enrich": 2, "dead-letter": 3, "result": 4, "verdict": 5,
    "decision": 6, "plan-record": 6, "review-record": 6, "plan": 7, "review": 8, "command": 9,
}


class AuditError(MitigateError):
    """An id was not found, or the topics could not be read."""


# Messages


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as read from Kafka, before decoding."""

    topic: str
    partition: int
    offset: int
    written_at: datetime | None  # the message timestamp, when the broker has one
    headers: tuple[tuple[str, bytes | None], ...]
    value: bytes | None


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """The ids that could be read out of the input a dead letter keeps."""

    event_id: str | None
    detector_id: str | None = None
    detector_version: str | None = None
    trace_id: str | None = None  # set when the input was a Signal, rejected by the correlate stage


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message of a story topic, with its coordinates and write time."""

    topic: str
    partition: int
    offset: int
    written_at: datetime | None
    record: Record
    trace_header: str | None = None
    rejected: RejectedEvent | None = None  # dead letters only

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def incident_id(self) -> str | None:
        return None if isinstance(self.record, DeadLetter) else self.record.incident_id


def story_topics(topology: Topology) -> list[str]:
    """Return the topics that a story is read from."""
    return [
        topology.dead_letters, topology.decisions, topology.plans,
        *(topology.actions(executor) for executor in EXECUTORS),
        topology.action_results, topology.review_requests, topology.review_verdicts,
    ]


def schema_of(topic: str, topology: Topology) -> str:
    names = {
        topology.dead_letters: "DeadLetter",
        topology.decisions: "DecisionRecord",
        topology.plans: "PlanControl",
        topology.action_results: "ActionResult",
        topology.review_requests: "ReviewRequest",
        topology.review_verdicts: "ReviewVerdict",
    }
    names.update({topology.actions(executor): "ActionCommand" for executor in EXECUTORS})
    if topic not in names:
        raise AuditError(f"internal error: topic {topic} is not one that mitigate audit reads")
    return names[topic]


def decode_message(raw: RawMessage, codec: AvroCodec, topology: Topology) -> Message | None:
    """Decode a message of a story topic, or return None for a message without value or a plan tick.

    Raises DecodeError or ValidationError when the value is not a valid record of the topic's schema.
    """
    if raw.value is None:
        return None
    name = schema_of(raw.topic, topology)
    record = cast(Record, _MODELS[name].model_validate(codec.decode(raw.value, name).record))
    if isinstance(record, PlanControl) and record.kind == "tick":
        return None  # the orchestrator's timer, sent every second while a plan waits
    rejected = rejected_event(record, codec) if isinstance(record, DeadLetter) else None
    return Message(raw.topic, raw.partition, raw.offset, raw.written_at, record,
                   trace_header=_trace_header(raw.headers), rejected=rejected)


def _trace_header(headers: Iterable[tuple[str, bytes | None]]) -> str | None:
    for key, value in headers:
        if key == TRACE_HEADER and value:
            return value.decode("utf-8", errors="replace")
    return None


def rejected_event(letter: DeadLetter, codec: AvroCodec) -> RejectedEvent | None:
    """Read the event id and detector out of the bytes a dead letter keeps, when they decode.

    The intake stage keeps an AnomalyEvent and the correlate stage a Signal. An
    event whose fields failed validation still gives its id.
    """
    for name in ("AnomalyEvent", "Signal"):
        try:
            record = codec.decode(letter.value, name).record
        except DecodeError:
            continue
        event = record.get("event") if name == "Signal" else record
        if not isinstance(event, dict):
            return None
        return RejectedEvent(
            event_id=_text(event.get("event_id")),
            detector_id=_text(event.get("detector_id")),
            detector_version=_text(event.get("detector_version")),
            trace_id=_text(record.get("trace_id")) if name == "Signal" else None,
        )
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def mentions(message: Message) -> list[tuple[str, str]]:
    """Return (field, id) for every id the message names, its trace-id header included."""
    record = message.record
    pairs: list[tuple[str, str | None]]
    if isinstance(record, DecisionRecord):
        pairs = [("decision_id", record.decision_id), ("event_id", record.event_id), ("trace_id", record.trace_id),
                 ("incident_id", record.incident_id), ("review_id", record.review_id), ("plan_id", record.plan_id),
                 ("verdict_id", record.verdict_id)]
        pairs += [("command_ids", command_id) for command_id in record.command_ids]
    elif isinstance(record, DeadLetter):
        pairs = [("dead_letter_id", record.dead_letter_id), ("trace_id", record.trace_id)]
        pairs += [("headers.trace-id", _trace_header([(header.key, header.value)])) for header in record.headers]
        if message.rejected is not None:
            pairs += [("event_id", message.rejected.event_id), ("trace_id", message.rejected.trace_id)]
    elif isinstance(record, PlanControl):
        pairs = [("plan_id", record.plan_id), ("incident_id", record.incident_id), ("trace_id", record.trace_id)]
    elif isinstance(record, ActionCommand | ActionResult):
        pairs = [("command_id", record.command_id), ("idempotency_key", record.idempotency_key),
                 ("decision_id", record.decision_id), ("incident_id", record.incident_id),
                 ("trace_id", record.trace_id)]
        if isinstance(record, ActionCommand):
            pairs.append(("event_id", record.event_id))
    elif isinstance(record, ReviewRequest):
        pairs = [("review_id", record.review_id), ("decision_id", record.decision_id), ("event_id", record.event_id),
                 ("trace_id", record.trace_id), ("incident_id", record.incident_id)]
        pairs += [("approvals.verdict_id", approval.verdict_id) for approval in record.approvals]
    else:
        pairs = [("verdict_id", record.verdict_id), ("review_id", record.review_id),
                 ("incident_id", record.incident_id)]
    pairs.append(("trace-id header", message.trace_header))
    return [(name, value) for name, value in pairs if value]


def _ids(message: Message, *fields: str) -> set[str]:
    return {value for name, value in mentions(message) if name in fields}


def trace_ids(message: Message) -> set[str]:
    return _ids(message, "trace_id", "trace-id header", "headers.trace-id")


def event_ids(message: Message) -> set[str]:
    return _ids(message, "event_id")


class Terms:
    """Ids to look for, with a test on the raw bytes that skips most messages without decoding them.

    Every id field is an Avro string, written as its UTF-8 bytes, and a dead
    letter keeps its input's bytes unchanged. So a message whose value and
    headers contain none of the ids cannot name one.
    """

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(values)
        self._needles = [value.encode("utf-8") for value in self.values]

    def occur_in(self, raw: RawMessage) -> bool:
        blobs = [raw.value or b"", *(value for _key, value in raw.headers if value)]
        return any(needle in blob for needle in self._needles for blob in blobs)

    def admit(self, raw: RawMessage) -> bool:
        """Return False when the message cannot name any of the ids, True when it has to be decoded to tell."""
        return len(self.values) > PREFILTER_MAX_TERMS or self.occur_in(raw)

    def named_by(self, message: Message) -> bool:
        return any(value in self.values for _name, value in mentions(message))


# The story


@dataclass(frozen=True, slots=True)
class Story:
    """The messages of one lookup: those that name the id, and the rest of their incidents."""

    identifier: str
    messages: tuple[Message, ...]
    matched: dict[str, int]  # field name -> messages in which it is the id looked up
    incidents: frozenset[str]

    @property
    def trace_ids(self) -> set[str]:
        return {value for message in self.messages for value in trace_ids(message)}

    @property
    def event_ids(self) -> set[str]:
        return {value for message in self.messages for value in event_ids(message)}


def select(messages: Iterable[Message], identifier: str) -> Story:
    """Select the story of `identifier` among `messages`.

    The story contains every message that names the id, every message of the
    incidents those messages belong to, and every dead letter that shares a
    trace id or event id with one of them. A message without an incident id
    (a dead letter, or a result an executor sent without one) joins only in
    the first and last way.
    """
    unique = list({message.source: message for message in messages}.values())
    matched: Counter[str] = Counter()
    seeds = []
    for message in unique:
        fields = {name for name, value in mentions(message) if value == identifier}
        if fields:
            seeds.append(message)
            matched.update(fields)
    incidents = frozenset(message.incident_id for message in seeds if message.incident_id)
    members = {message.source: message for message in seeds}
    members.update((message.source, message) for message in unique if message.incident_id in incidents)

    traces = {value for message in members.values() for value in trace_ids(message)}
    events = {value for message in members.values() for value in event_ids(message)}
    for message in unique:
        if isinstance(message.record, DeadLetter) and (trace_ids(message) & traces or event_ids(message) & events):
            members.setdefault(message.source, message)
    return Story(identifier, tuple(members.values()), dict(matched), incidents)


Scanner = Callable[[Sequence[str], Terms], list[Message]]


def collect(scan: Scanner, topology: Topology, identifier: str) -> Story:
    """Find the story of `identifier` with up to three scans of the topics.

    The first scan finds the messages that name the id. The second reads the
    other messages of their incidents, and is skipped when the id is the only
    incident id. The third looks in the dead letters for the story's trace ids
    and event ids. `scan(topics, terms)` returns the messages of `topics` that
    name one of the terms.
    """
    topics = story_topics(topology)
    found = scan(topics, Terms([identifier]))
    story = select(found, identifier)
    if not story.messages:
        hint = ""
        if len(identifier) < 32 and re.fullmatch(r"[0-9a-f-]+", identifier):
            hint = ("; it looks like the start of an id, and audit needs the full id (`mitigate review show "
                    "PREFIX` prints a review's full id)")
        raise AuditError(f"no message mentions {identifier} in {', '.join(topics)}; check the id, or whether "
                         f"the topics' retention has dropped it{hint}")

    if story.incidents - {identifier}:
        others = [topic for topic in topics if topic != topology.dead_letters]
        found += scan(others, Terms([identifier, *story.incidents]))
        story = select(found, identifier)

    links = (story.trace_ids | story.event_ids) - {identifier}
    if links:
        found += scan([topology.dead_letters], Terms([identifier, *links]))
        story = select(found, identifier)
    return story


# Entries


@dataclass(frozen=True, slots=True)
class Entry:
    """One step of the story: when it happened, what it was, and the message it was read from."""

    at: datetime
    kind: str
    summary: str
    details: tuple[str, ...] = ()
    source: str | None = None  # topic[partition]@offset; None for what the lineage of a decision describes
    repeat: bool = False  # an earlier message has the same record: the worker or an executor sent it again
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"time": self.at.isoformat(), "kind": self.kind, "summary": self.summary,
                "details": list(self.details), "source": self.source, "repeat": self.repeat, "data": self.data}


def story_entries(story: Story) -> list[Entry]:
    """Turn the story's messages into entries, in the order things happened.

    Each message's time is its write time (the Kafka message timestamp, else
    the record's own time). The messages that one processing step of the worker
    wrote share a trace id and a record time, and they are kept together in the
    order of RANKS. The event, intake and enrichment entries of each event are
    placed at its ingest time.
    """
    messages = sorted(story.messages, key=lambda message: (written_time(message), message.source))
    step_starts: dict[tuple[str, ...], datetime] = {}
    for message in messages:
        step_starts.setdefault(step_key(message), written_time(message))

    placed: list[tuple[tuple[datetime, int, datetime, int], Entry]] = []
    seen_records: set[str] = set()
    seen_events: set[tuple[str, str, int, int]] = set()
    for index, message in enumerate(messages):
        record = message.record
        if isinstance(record, DecisionRecord):
            lineage = record.lineage
            event_key = (record.event_id, lineage.source_topic, lineage.source_partition, lineage.source_offset)
            if event_key not in seen_events:
                seen_events.add(event_key)
                for entry in lineage_entries(record):
                    placed.append(((entry.at, RANKS[entry.kind], entry.at, index), entry))

        content = repr(record)  # a message sent again repeats its record exactly
        entry = replace(message_entry(message), repeat=content in seen_records)
        seen_records.add(content)
        placed.append(((step_starts[step_key(message)], RANKS[entry.kind], entry.at, index), entry))

    placed.sort(key=lambda item: item[0])
    return [entry for _key, entry in placed]


def record_time(record: Record) -> datetime:
    """Return the time a record carries: when it was decided, issued, finished or last changed."""
    if isinstance(record, DecisionRecord):
        return record.decided_at
    if isinstance(record, DeadLetter):
        return record.failed_at
    if isinstance(record, ActionResult):
        return record.finished_at
    if isinstance(record, ReviewRequest):
        return record.updated_at or record.created_at
    return record.issued_at


def written_time(message: Message) -> datetime:
    return message.written_at or record_time(message.record)


def step_key(message: Message) -> tuple[str, ...]:
    """Return a key that the messages of one processing step of the worker share.

    A step writes all its records, plans, review requests and commands with the
    trace id of one signal and the same record time. Results, verdicts and dead
    letters are steps of their own.
    """
    record = message.record
    if isinstance(record, DecisionRecord | PlanControl | ActionCommand | ReviewRequest):
        return ("step", record.trace_id, record_time(record).isoformat())
    return ("message", message.source)


def message_entry(message: Message) -> Entry:
    record = message.record
    if isinstance(record, DecisionRecord):
        entry = decision_entry(record)
    elif isinstance(record, DeadLetter):
        entry = dead_letter_entry(record, message.rejected)
    elif isinstance(record, PlanControl):
        entry = plan_entry(record)
    elif isinstance(record, ActionCommand):
        entry = command_entry(record)
    elif isinstance(record, ActionResult):
        entry = result_entry(record)
    elif isinstance(record, ReviewRequest):
        entry = review_entry(record)
    else:
        entry = verdict_entry(record)
    return replace(entry, at=written_time(message), source=message.source)


def lineage_entries(record: DecisionRecord) -> list[Entry]:
    """Describe the raw event, its intake and its enrichment, from the lineage a decision record keeps."""
    lineage = record.lineage
    at = lineage.ingest_time
    coordinates = f"{lineage.source_topic}[{lineage.source_partition}]@{lineage.source_offset}"
    event = Entry(
        at, "event",
        f"event {record.event_id} from {lineage.detector_id} {lineage.detector_version}, read from {coordinates}",
        (f"{record.severity} {record.anomaly_type} on {record.entity} ({record.subsystem}), {record.signal_status}, "
         f"confidence {record.confidence!r}, fingerprint {record.fingerprint}",
         f"event time {_stamp(lineage.event_time)}, ingest time {_stamp(lineage.ingest_time)}, "
         f"clock skew {lineage.clock_skew_ms} ms",
         f"trace {record.trace_id}"),
        data={"event_id": record.event_id, "trace_id": record.trace_id, "entity": record.entity,
              "subsystem": record.subsystem, "anomaly_type": record.anomaly_type, "severity": record.severity,
              "confidence": record.confidence, "status": record.signal_status, "fingerprint": record.fingerprint,
              "lineage": lineage.model_dump(mode="json")},
    )
    checks = ["field values valid", "event time within the allowed future skew and age",
              "detector and version registered", "required labels present"]
    intake = Entry(
        at, "intake", f"accepted by intake: decoded with writer schema {lineage.writer_schema}",
        ("checks passed: " + ", ".join(checks), f"pipeline version {lineage.pipeline_version}"),
        data={"event_id": record.event_id, "accepted": True, "writer_schema": lineage.writer_schema,
              "checks": checks, "pipeline_version": lineage.pipeline_version},
    )
    asset = record.asset
    if asset is None:
        summary = f"{record.entity} is not in the assets table; no asset context"
    else:
        summary = (f"asset context of {record.entity}: owner {asset.owner}, tier {asset.tier}, criticality "
                   f"{asset.criticality}, environment {asset.environment}, "
                   f"change freeze {'on' if asset.change_freeze else 'off'}")
    enrich = Entry(at, "enrich", summary,
                   data={"entity": record.entity, "asset": asset.model_dump(mode="json") if asset else None})
    return [event, intake, enrich]


def decision_entry(record: DecisionRecord) -> Entry:
    """Describe a decision, or a record of plan progress or of a review's verdict or end."""
    if record.reason_code.startswith(PLAN_PROGRESS):
        kind = "plan-record"
    elif record.reason_code.startswith(REVIEW_PROGRESS):
        kind = "review-record"
    else:
        kind = "decision"
    details = []
    if kind == "decision":
        policy = f"policy {record.policy_id} v{record.policy_version}" if record.policy_id else "no policy"
        details.append(policy + (f", rule {record.rule}" if record.rule else ""))
        details.append(f"risk score {record.risk_score:.2f}; incident {record.incident_id or '-'}, "
                       f"{_plural(record.incident_signals, 'signal')} so far")
        details += [f"gate {gate.name}: {gate.value} against {gate.threshold}: "
                    f"{'passed' if gate.passed else 'FAILED'}" for gate in record.gates]
    details += _named_ids(record)
    return Entry(record.decided_at, kind, f"{record.outcome} {record.reason_code}: {record.reason}", tuple(details),
                 data=record.model_dump(mode="json"))


def _named_ids(record: DecisionRecord) -> list[str]:
    lines = []
    if record.operators:
        lines.append(f"operators {', '.join(record.operators)}")
    for label, value in (("plan", record.plan_id), ("review", record.review_id), ("verdict", record.verdict_id),
                         ("silence", record.silence_id)):
        if value:
            lines.append(f"{label} {value}")
    if record.command_ids:
        lines.append(f"commands {', '.join(record.command_ids)}")
    if record.cancelled_steps:
        lines.append(f"cancelled steps {', '.join(record.cancelled_steps)}")
    return lines


def dead_letter_entry(letter: DeadLetter, rejected: RejectedEvent | None) -> Entry:
    written = f", written {_stamp(letter.source_timestamp)}" if letter.source_timestamp else ""
    details = [f"input {letter.source_topic}[{letter.source_partition}]@{letter.source_offset}{written}",
               f"writer schema {letter.writer_schema or 'unknown'}"]
    if rejected is not None and rejected.event_id:
        detector = f" from {rejected.detector_id} {rejected.detector_version}" if rejected.detector_id else ""
        details.append(f"event {rejected.event_id}{detector}")
    details.append(f"dead letter {letter.dead_letter_id}, trace {letter.trace_id or '-'}")
    data = letter.model_dump(mode="json", exclude={"key", "value", "headers"})
    data["key"] = _base64(letter.key)
    data["value"] = _base64(letter.value)
    data["headers"] = [{"key": header.key, "value": _base64(header.value)} for header in letter.headers]
    data["rejected_event"] = None if rejected is None else {
        "event_id": rejected.event_id, "detector_id": rejected.detector_id,
        "detector_version": rejected.detector_version, "trace_id": rejected.trace_id,
    }
    return Entry(letter.failed_at, "dead-letter",
                 f"rejected at {letter.stage} ({letter.reason_code}): {letter.reason}", tuple(details), data=data)


def plan_entry(control: PlanControl) -> Entry:
    data = control.model_dump(mode="json", exclude={"decision"})
    if control.kind == "cancel":
        return Entry(control.issued_at, "plan", f"cancel for incident {control.incident_id}: "
                     f"{control.reason or 'the incident resolved'}", (f"plan {control.plan_id}",), data=data)
    policy = f" of policy {control.policy_id} v{control.policy_version}" if control.policy_id else ""
    reason = f" ({control.reason})" if control.reason else ""
    summary = f"plan {control.plan_id} started: {_plural(len(control.steps), 'step')}{policy}{reason}"
    details = tuple(step_line(number, step) for number, step in enumerate(control.steps, 1))
    return Entry(control.issued_at, "plan", summary, details, data=data)


def step_line(number: int, step: PlanStepSpec) -> str:
    parts = [f"{number}. {step.step_id}: {step.executor}/{step.action} on {step.target}",
             f"parameters {_pairs(step.parameters)}", f"timeout {format_duration(step.timeout_ms / 1000)}"]
    if step.retries:
        parts.append(f"retries {step.retries}")
    if step.depends_on:
        parts.append(f"after {', '.join(step.depends_on)}")
    if step.preconditions:
        parts.append(f"only if {_pairs(step.preconditions)}")
    if step.compensate is not None:
        parts.append(f"undone by {step.compensate.executor}/{step.compensate.action}")
    return "; ".join(parts)


def command_entry(command: ActionCommand) -> Entry:
    undoes = f", undoes step {command.compensates}" if command.compensates else ""
    summary = (f"command {command.executor}/{command.action} on {command.target}, step {command.step_id}, "
               f"attempt {command.attempt}{undoes}")
    details = [f"parameters {_pairs(command.parameters)}", f"deadline {_stamp(command.deadline)}"]
    if command.preconditions:
        details.append(f"only if {_pairs(command.preconditions)}")
    if command.depends_on:
        details.append(f"after {', '.join(command.depends_on)}")
    details.append(f"command {command.command_id}, plan {command.decision_id}, "
                   f"policy {command.policy_id} v{command.policy_version}")
    return Entry(command.issued_at, "command", summary, tuple(details), data=command.model_dump(mode="json"))


def result_entry(result: ActionResult) -> Entry:
    reason = f": {result.reason}" if result.reason else ""
    summary = f"result {result.status} from {result.executor}, step {result.step_id}, attempt {result.attempt}{reason}"
    details = (f"output {_pairs(result.output)}", f"command {result.command_id}, finished {_stamp(result.finished_at)}")
    return Entry(result.finished_at, "result", summary, details, data=result.model_dump(mode="json"))


def review_entry(request: ReviewRequest) -> Entry:
    data = request.model_dump(mode="json", exclude={"decision"})
    approvals = f"approvals {len(request.approvals)} of {request.quorum}" + (
        f" ({', '.join(approval.operator for approval in request.approvals)})" if request.approvals else "")
    if request.status == "pending" and request.revision == 1 and not request.approvals:
        summary = f"review {request.review_id} requested ({request.reason_code}): {request.reason}"
        # The gates are on the decision that asked for review. The steps are shown here, because
        # a plan that an approval starts has no message on the plans topic.
        details = [f"pending, revision 1, {approvals}, deadline {_stamp(request.deadline)}, "
                   f"on expiry {request.on_expiry}"]
        details += [step_line(number, step) for number, step in enumerate(request.steps, 1)]
        return Entry(request.created_at, "review", summary, tuple(details), data=data)
    summary = f"review {request.review_id} {request.status}: {request.status_reason or request.reason}"
    details = [f"revision {request.revision}, {approvals}"]
    return Entry(request.updated_at or request.created_at, "review", summary, tuple(details), data=data)


def verdict_entry(verdict: ReviewVerdict) -> Entry:
    reason = f": {verdict.reason}" if verdict.reason else ""
    summary = (f"verdict {verdict.kind} by {verdict.operator} on review {verdict.review_id} "
               f"revision {verdict.revision}{reason}")
    details = []
    if verdict.drop_steps:
        details.append(f"drop steps {', '.join(verdict.drop_steps)}")
    for step_id, values in sorted(verdict.parameters.items()):
        details.append(f"set {step_id}: " + ", ".join(
            f"{name}={value}" if value else f"{name} removed" for name, value in sorted(values.items())))
    details.append(f"verdict {verdict.verdict_id}, sent by {verdict.client or 'an unnamed client'}")
    return Entry(verdict.issued_at, "verdict", summary, tuple(details), data=verdict.model_dump(mode="json"))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(values.items())) or "none"


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _base64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


# Output

KIND_WIDTH = max(len(kind) for kind in RANKS)
STAMP_WIDTH = len("2026-03-02 10:30:15.250")  # as _stamp writes it


def format_story(story: Story, entries: list[Entry]) -> str:
    """Format the story for a terminal: a headline, then one block per entry."""
    found = " and ".join(f"the {name} of {_plural(count, 'message')}" for name, count in sorted(story.matched.items()))
    incidents = sorted(story.incidents)
    if not incidents:
        incident_text = "no incident"
    else:
        incident_text = ("incident " if len(incidents) == 1 else "incidents ") + ", ".join(incidents)
    lines = [f"Trace of {story.identifier}: {found}; {incident_text}; {_plural(len(entries), 'entry', 'entries')}",
             "Times are UTC: when each message was written, and the ingest time for an event's intake."]
    indent = " " * (STAMP_WIDTH + KIND_WIDTH + 4)
    for entry in entries:
        again = " [sent again]" if entry.repeat else ""
        lines.append(f"{_stamp(entry.at)}  {entry.kind:<{KIND_WIDTH}}  {entry.summary}{again}")
        lines += [indent + line for line in entry.details]
        if entry.source is not None:
            lines.append(f"{indent}message {entry.source}")
    return "\n".join(lines)


def story_json(entries: list[Entry]) -> str:
    return json.dumps([entry.as_json() for entry in entries], indent=2)


# Reading Kafka


def scan_topics(
    bootstrap_servers: str, topology: Topology, codec: AvroCodec, topics: Sequence[str], terms: Terms,
    *, warn: Callable[[str], None], timeout_s: float = READ_IDLE_TIMEOUT_S,
) -> list[Message]:
    """Read `topics` from the beginning to their end as of the call, and return the messages that name a term.

    A message whose bytes contain a term but that cannot be decoded is skipped and reported through `warn`.
    """
    consumer = Consumer(client_config(
        bootstrap_servers,
        **{"group.id": f"mitigate-audit-{uuid.uuid4()}", "enable.auto.commit": False, "enable.partition.eof": True},
    ))
    found = []
    try:
        ends = _assign_from_beginning(consumer, topics, timeout_s)
        for raw in _read_to_end(consumer, ends, timeout_s):
            if not terms.admit(raw):
                continue
            try:
                message = decode_message(raw, codec, topology)
            except (DecodeError, ValidationError) as exc:
                if terms.occur_in(raw):
                    warn(f"skipped {raw.topic}[{raw.partition}]@{raw.offset}, which contains the id but cannot be "
                         f"decoded: {_short_error(exc)}")
                continue
            if message is not None and terms.named_by(message):
                found.append(message)
    except KafkaException as exc:
        raise AuditError(f"reading {', '.join(topics)} failed: {exc}") from exc
    finally:
        consumer.close()
    return found


def _assign_from_beginning(consumer: Consumer, topics: Sequence[str], timeout_s: float) -> dict[tuple[str, int], int]:
    """Assign every partition that contains messages, and return the end offset of each as of now."""
    metadata = consumer.list_topics(timeout=timeout_s)
    ends: dict[tuple[str, int], int] = {}
    for topic in topics:
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None or topic_metadata.error is not None:
            raise AuditError(f"topic {topic} not found; run `mitigate topics create`, or set MITIGATE_TOPIC_PREFIX "
                             "to the prefix of the deployment")
        for partition in topic_metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[(topic, partition)] = high
    if ends:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in ends])
    return ends


def _read_to_end(consumer: Consumer, ends: dict[tuple[str, int], int], timeout_s: float) -> Iterator[RawMessage]:
    pending = dict(ends)
    last_message = time.monotonic()
    while pending:
        message = consumer.poll(1.0)
        if message is None:
            if time.monotonic() - last_message > timeout_s:
                left = ", ".join(f"{topic}[{partition}]" for topic, partition in sorted(pending))
                raise AuditError(f"timed out after {timeout_s:g} s without a message, reading {left} to the end; "
                                 "check that the broker is healthy and try again")
            continue
        last_message = time.monotonic()
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.pop((topic, partition), None)
                continue
            raise AuditError(f"consuming {topic}[{partition}] failed: {error.str()}")
        end = pending.get((topic, partition))
        if end is None:
            continue  # written after the scan started, to a partition read to its end already
        if offset >= end - 1:
            del pending[(topic, partition)]
        yield _raw(message, topic, partition, offset)


def _raw(message: KafkaMessage, topic: str, partition: int, offset: int) -> RawMessage:
    timestamp_type, timestamp_ms = message.timestamp()
    written_at = None
    if timestamp_type != TIMESTAMP_NOT_AVAILABLE and timestamp_ms >= 0:
        written_at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    headers = message.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    return RawMessage(topic, partition, offset, written_at,
                      tuple((key, value.encode() if isinstance(value, str) else value) for key, value in items),
                      message.value())


def _short_error(exc: DecodeError | ValidationError) -> str:
    if isinstance(exc, DecodeError):
        return str(exc)
    return "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())


# Command line


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `audit trace ID [--json]` to the subcommands of `mitigate`."""
    audit = commands.add_parser("audit", help="read back from the topics what the pipeline did")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    trace = actions.add_parser(
        "trace",
        help="print the whole story of one incident, in time order",
        description="Print every message of an incident: the event's coordinates, intake and enrichment, each "
                    "decision with its gates, plans, commands, results, review requests, verdicts and the "
                    "records of their outcomes. A dead letter stands for a rejected event.",
    )
    trace.add_argument("identifier", type=_identifier, metavar="ID",
                       help="the full id of an anomaly event, incident, command, review, verdict, plan, dead letter "
                            "or trace")
    trace.add_argument("--json", action="store_true", help="print the story as a JSON array of entries")
    trace.set_defaults(handler=run_trace)


def _identifier(text: str) -> str:
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("the id is empty; give the full id of an event, incident, command, "
                                         "review, verdict, plan, dead letter or trace")
    if len(text) > MAX_ID_LENGTH:
        raise argparse.ArgumentTypeError(f"the id is {len(text)} characters long; ids are at most "
                                         f"{MAX_ID_LENGTH} characters")
    return text


def run_trace(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the story of args.identifier to `out` (default: standard output).

    Raises AuditError when no message names the id. Warnings about messages
    that cannot be decoded go to `err` (default: standard error).
    """
    from mitigate.cli import _codec, _kafka_settings

    out = out or sys.stdout
    warnings = err or sys.stderr
    settings = _kafka_settings(args)
    topology = settings.topology()
    codec = _codec(settings)

    def warn(text: str) -> None:
        warnings.write(f"mitigate: warning: {text}\n")

    def scan(topics: Sequence[str], terms: Terms) -> list[Message]:
        return scan_topics(settings.bootstrap_servers, topology, codec, topics, terms, warn=warn)

    story = collect(scan, topology, args.identifier)
    entries = story_entries(story)
    out.write((story_json(entries) if args.json else format_story(story, entries)) + "\n")
    return 0
