"""Unit tests for mitigate.pipeline: one message through intake, enrich, decide and encode, with no broker."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from mitigate.codec import AvroCodec
from mitigate.decision import Decider, Decision
from mitigate.intake import DetectorCatalog, Intake, SourceMessage
from mitigate.models import ActionCommand, AssetContext, AvroModel, DeadLetter, DecisionRecord, ReviewRequest
from mitigate.pipeline import Processed, Pipeline
from mitigate.policy import ActivePolicy, PolicyIndex, load_policy_files
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology
from tests.unit.builders import DETECTORS_FILE, NOW, POLICY_DIR, SCHEMA_DIR, anomaly_event, asset_context

TOPOLOGY = Topology(prefix="unit.")
SCHEMA_OF_TOPIC: dict[str, type[AvroModel]] = {
    "unit.actions.demo-target": ActionCommand,
    "unit.actions.ticket": ActionCommand,
    "unit.reviews.requests": ReviewRequest,
    "unit.decisions": DecisionRecord,
    "unit.anomalies.dead-letter": DeadLetter,
}
GARBAGE = b'{"entity": "machine-temperature-01", "severity": "high"}'


class Recorder:
    """In-memory policy table and asset table that count their requests."""

    def __init__(self, policies: PolicyIndex, assets: dict[str, AssetContext]) -> None:
        self.policy_index = policies
        self.assets = assets
        self.policy_calls = 0
        self.asset_requests: list[str] = []

    def policies(self) -> PolicyIndex:
        self.policy_calls += 1
        return self.policy_index

    def asset(self, entity: str) -> AssetContext | None:
        self.asset_requests.append(entity)
        return self.assets.get(entity)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SchemaRepository(SCHEMA_DIR))


@pytest.fixture
def tables() -> Recorder:
    shipped = [ActivePolicy(document, 1) for document in load_policy_files([POLICY_DIR])]
    return Recorder(PolicyIndex(shipped), {"machine-temperature-01": asset_context()})


@pytest.fixture
def pipeline(codec: AvroCodec, tables: Recorder) -> Pipeline:
    return Pipeline(
        topology=TOPOLOGY,
        codec=codec,
        intake=Intake(
            codec,
            DetectorCatalog.load(DETECTORS_FILE),
            max_future_skew=timedelta(minutes=5),
            max_event_age=timedelta(days=1),
        ),
        decider=Decider(default_review_timeout=timedelta(minutes=30)),
        policies=tables.policies,
        assets=tables.asset,
        clock=lambda: NOW,
        pipeline_version="0.1.0-unit",
    )


def message(value: bytes | None, headers: tuple[tuple[str, bytes | None], ...] = (), offset: int = 17) -> SourceMessage:
    return SourceMessage("unit.anomalies", 2, offset, NOW - timedelta(seconds=1), b"machine-temperature-01", value,
                         headers)


def event_message(codec: AvroCodec, headers: tuple[tuple[str, bytes | None], ...] = (), **changes: Any) -> SourceMessage:
    return message(codec.encode("AnomalyEvent", anomaly_event(**changes).to_avro()), headers)


def decided(outcome: Processed) -> Decision:
    assert outcome.decision is not None
    return outcome.decision


def decode_all(codec: AvroCodec, outcome: Processed) -> list[Any]:
    return [
        SCHEMA_OF_TOPIC[sent.topic].model_validate(codec.decode(sent.value, SCHEMA_OF_TOPIC[sent.topic].schema_name).record)
        for sent in outcome.messages
    ]


# A good event that the shipped policy machine-temperature-high acts on


def test_good_event_topics_in_order(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert [sent.topic for sent in outcome.messages] == [
        "unit.actions.demo-target",
        "unit.actions.demo-target",
        "unit.actions.ticket",
        "unit.decisions",
    ]


def test_good_event_decided_auto(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert decided(outcome).record.outcome == "auto"
    assert outcome.rejection is None


def test_good_event_values_decode(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert decode_all(codec, outcome) == [*decided(outcome).commands, decided(outcome).record]


def test_good_event_keys(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert [sent.key for sent in outcome.messages] == [b"machine-temperature-01"] * 4


def test_trace_header_from_producer(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec, headers=(("trace-id", b"4bf92f3577b34da6"),)))

    assert [sent.headers for sent in outcome.messages] == [(("trace-id", b"4bf92f3577b34da6"),)] * 4


def test_trace_id_in_records(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec, headers=(("trace-id", b"4bf92f3577b34da6"),)))

    assert {record.trace_id for record in decode_all(codec, outcome)} == {"4bf92f3577b34da6"}


def test_derived_trace_header_shared(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))
    trace_id = decided(outcome).record.trace_id.encode()

    assert [sent.headers for sent in outcome.messages] == [(("trace-id", trace_id),)] * 4


def test_replay_gives_same_messages(pipeline: Pipeline, codec: AvroCodec) -> None:
    first = pipeline.process(event_message(codec))
    again = pipeline.process(event_message(codec))

    assert again.messages == first.messages


def test_clock_stamps_decision(pipeline: Pipeline, codec: AvroCodec) -> None:
    record = decided(pipeline.process(event_message(codec))).record

    assert record.decided_at == NOW
    assert record.lineage.ingest_time == NOW


def test_lineage_names_source(pipeline: Pipeline, codec: AvroCodec) -> None:
    lineage = decided(pipeline.process(event_message(codec))).record.lineage

    assert (lineage.source_topic, lineage.source_partition, lineage.source_offset) == ("unit.anomalies", 2, 17)
    assert lineage.pipeline_version == "0.1.0-unit"


def test_tables_asked_once(pipeline: Pipeline, codec: AvroCodec, tables: Recorder) -> None:
    pipeline.process(event_message(codec))

    assert tables.asset_requests == ["machine-temperature-01"]
    assert tables.policy_calls == 1


# Events that end in review, shadow or suppress

# (case, event changes, topics of the produced messages, outcome)
OTHER_OUTCOMES = [
    ("low-confidence", {"confidence": 0.6}, ["unit.reviews.requests", "unit.decisions"], "review"),
    ("no-policy", {"subsystem": "network/edge"}, ["unit.reviews.requests", "unit.decisions"], "review"),
    ("unknown-asset", {"entity": "machine-temperature-99"}, ["unit.reviews.requests", "unit.decisions"], "review"),
    ("shadow-policy", {"severity": "low"}, ["unit.decisions"], "shadow"),
    ("resolved", {"status": "resolved"}, ["unit.decisions"], "suppress"),
]


@pytest.mark.parametrize(
    ("changes", "topics"), [(case[1], case[2]) for case in OTHER_OUTCOMES], ids=[case[0] for case in OTHER_OUTCOMES]
)
def test_outcome_topics(pipeline: Pipeline, codec: AvroCodec, changes: dict[str, Any], topics: list[str]) -> None:
    outcome = pipeline.process(event_message(codec, **changes))

    assert [sent.topic for sent in outcome.messages] == topics


@pytest.mark.parametrize(
    ("changes", "expected"), [(case[1], case[3]) for case in OTHER_OUTCOMES], ids=[case[0] for case in OTHER_OUTCOMES]
)
def test_outcome_recorded(pipeline: Pipeline, codec: AvroCodec, changes: dict[str, Any], expected: str) -> None:
    outcome = pipeline.process(event_message(codec, **changes))

    assert decode_all(codec, outcome)[-1].outcome == expected


def test_review_message_decodes(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec, confidence=0.6))

    assert decode_all(codec, outcome)[0] == decided(outcome).review


def test_review_keyed_by_entity(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec, confidence=0.6))

    assert [sent.key for sent in outcome.messages] == [b"machine-temperature-01"] * 2


# Rejected input


def test_garbage_one_dead_letter(pipeline: Pipeline) -> None:
    outcome = pipeline.process(message(GARBAGE))

    assert [sent.topic for sent in outcome.messages] == ["unit.anomalies.dead-letter"]


def test_garbage_keeps_bytes(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(message(GARBAGE, headers=(("source", b"\xff\x00"),)))
    (letter,) = decode_all(codec, outcome)

    assert letter.value == GARBAGE
    assert letter.key == b"machine-temperature-01"
    assert [(header.key, header.value) for header in letter.headers] == [("source", b"\xff\x00")]


def test_garbage_keeps_coordinates(pipeline: Pipeline, codec: AvroCodec) -> None:
    (letter,) = decode_all(codec, pipeline.process(message(GARBAGE)))

    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("unit.anomalies", 2, 17)
    assert letter.source_timestamp == NOW - timedelta(seconds=1)


def test_garbage_reason_code(pipeline: Pipeline, codec: AvroCodec) -> None:
    (letter,) = decode_all(codec, pipeline.process(message(GARBAGE)))

    assert letter.reason_code == "unknown-wire-format"
    assert letter.stage == "intake"


def test_garbage_keyed_as_source(pipeline: Pipeline) -> None:
    (sent,) = pipeline.process(message(GARBAGE)).messages

    assert sent.key == b"machine-temperature-01"


def test_garbage_trace_header(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(message(GARBAGE))
    (sent,) = outcome.messages
    (letter,) = decode_all(codec, outcome)

    assert sent.headers == (("trace-id", letter.trace_id.encode()),)


def test_garbage_outcome_fields(pipeline: Pipeline) -> None:
    outcome = pipeline.process(message(GARBAGE))

    assert outcome.decision is None
    assert outcome.rejection is not None
    assert outcome.rejection.reason_code == "unknown-wire-format"


def test_garbage_skips_tables(pipeline: Pipeline, tables: Recorder) -> None:
    pipeline.process(message(GARBAGE))

    assert tables.asset_requests == []
    assert tables.policy_calls == 0


def test_garbage_logged(pipeline: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mitigate.pipeline"):
        pipeline.process(message(GARBAGE))

    (entry,) = caplog.records
    assert entry.getMessage().startswith("dead letter reason=unknown-wire-format source=unit.anomalies[2]@17 trace_id=")


@pytest.mark.parametrize(
    ("value", "reason_code"),
    [(None, "empty-message"), (b"\xc3\x01\x00\x01", "undecodable"), (b"\x00\x00\x00\x00\x01\x02", "registry-unavailable")],
    ids=["tombstone", "truncated", "registry-framing"],
)
def test_undecodable_dead_letter(pipeline: Pipeline, codec: AvroCodec, value: bytes | None, reason_code: str) -> None:
    (letter,) = decode_all(codec, pipeline.process(message(value)))

    assert letter.reason_code == reason_code


def test_future_event_dead_letter(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec, event_time=NOW + timedelta(hours=1)))
    (letter,) = decode_all(codec, outcome)

    assert letter.reason_code == "event-time-future"
    assert letter.writer_schema == codec.repository.current("AnomalyEvent").identifier


def test_dead_letter_ids_differ_by_offset(pipeline: Pipeline, codec: AvroCodec) -> None:
    (first,) = decode_all(codec, pipeline.process(message(GARBAGE, offset=1)))
    (second,) = decode_all(codec, pipeline.process(message(GARBAGE, offset=2)))

    assert first.dead_letter_id != second.dead_letter_id
