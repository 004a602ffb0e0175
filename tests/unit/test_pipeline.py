"""Unit tests for mitigate.pipeline: intake and enrich in Pipeline, correlate and decide in DecisionStage, no broker."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from mitigate.automation import AutomationSettings
from mitigate.codec import AvroCodec
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider, Decision
from mitigate.intake import DetectorCatalog, Intake, SourceMessage
from mitigate.limits import ShardedBreaker
from mitigate.models import (
    AssetContext,
    AvroModel,
    DeadLetter,
    DecisionRecord,
    PlanControl,
    ReviewRequest,
    Signal,
    Silence,
)
from mitigate.pipeline import DecisionStage, Outgoing, Pipeline, Processed
from mitigate.policy import ActivePolicy, PolicyIndex, load_policy_files
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology
from tests.unit.builders import (
    CONFIG_DIR,
    DETECTORS_FILE,
    NOW,
    POLICY_DIR,
    SCHEMA_DIR,
    anomaly_event,
    asset_context,
)

TOPOLOGY = Topology(prefix="unit.")
SCHEMA_OF_TOPIC: dict[str, type[AvroModel]] = {
    "unit.signals": Signal,
    "unit.plans": PlanControl,
    "unit.reviews.requests": ReviewRequest,
    "unit.decisions": DecisionRecord,
    "unit.anomalies.dead-letter": DeadLetter,
}
GARBAGE = b'{"entity": "machine-temperature-01", "severity": "high"}'
PIPELINE_VERSION = "0.1.0-unit"


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


class TwoSteps:
    """Both steps as the worker runs them: Pipeline output goes to the signals topic, which DecisionStage reads."""

    def __init__(self, pipeline: Pipeline, stage: DecisionStage, breaker: ShardedBreaker) -> None:
        self.pipeline = pipeline
        self.stage = stage
        self.breaker = breaker

    def run(self, message: SourceMessage) -> Processed:
        (sent,) = self.pipeline.process(message).messages
        assert sent.topic == "unit.signals"
        return self.stage.process(signal_message(sent), self.breaker)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SchemaRepository(SCHEMA_DIR))


@pytest.fixture(scope="module")
def automation() -> AutomationSettings:
    return AutomationSettings.load(CONFIG_DIR / "automation.yaml")


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
        assets=tables.asset,
        clock=lambda: NOW,
        pipeline_version=PIPELINE_VERSION,
    )


def decision_stage(
    codec: AvroCodec, tables: Recorder, automation: AutomationSettings, silences: list[Silence] | None = None
) -> DecisionStage:
    """A DecisionStage whose incident engine keeps its state in fresh dicts."""
    engine = IncidentEngine(
        settings=automation,
        decider=Decider(default_review_timeout=timedelta(minutes=30)),
        policies=tables.policies,
        silences=lambda: list(silences or []),
        incidents={},
        fingerprints={},
        budgets={},
        runs={},
    )
    return DecisionStage(
        topology=TOPOLOGY, codec=codec, engine=engine, clock=lambda: NOW, pipeline_version=PIPELINE_VERSION
    )


@pytest.fixture
def stage(codec: AvroCodec, tables: Recorder, automation: AutomationSettings) -> DecisionStage:
    return decision_stage(codec, tables, automation)


@pytest.fixture
def breaker(automation: AutomationSettings) -> ShardedBreaker:
    return ShardedBreaker(automation.circuit_breaker, {}, "signals:1")


@pytest.fixture
def two_steps(pipeline: Pipeline, stage: DecisionStage, breaker: ShardedBreaker) -> TwoSteps:
    return TwoSteps(pipeline, stage, breaker)


def message(value: bytes | None, headers: tuple[tuple[str, bytes | None], ...] = (), offset: int = 17) -> SourceMessage:
    return SourceMessage("unit.anomalies", 2, offset, NOW - timedelta(seconds=1), b"machine-temperature-01", value,
                         headers)


def event_message(codec: AvroCodec, headers: tuple[tuple[str, bytes | None], ...] = (), **changes: Any) -> SourceMessage:
    return message(codec.encode("AnomalyEvent", anomaly_event(**changes).to_avro()), headers)


def signal_message(sent: Outgoing, offset: int = 40) -> SourceMessage:
    """The message DecisionStage consumes after Pipeline produced `sent`."""
    return SourceMessage(sent.topic, 1, offset, NOW, sent.key, sent.value, sent.headers)


def raw_signal_message(value: bytes | None, offset: int = 40) -> SourceMessage:
    return SourceMessage("unit.signals", 1, offset, NOW, b"industrial/cooling", value, ())


def decided(outcome: Processed) -> Decision:
    assert outcome.decision is not None
    return outcome.decision


def decode_all(codec: AvroCodec, outcome: Processed) -> list[Any]:
    return [
        SCHEMA_OF_TOPIC[sent.topic].model_validate(codec.decode(sent.value, SCHEMA_OF_TOPIC[sent.topic].schema_name).record)
        for sent in outcome.messages
    ]


# The first step: a good event becomes one Signal on the signals topic


def test_signal_one_message(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert [sent.topic for sent in outcome.messages] == ["unit.signals"]


def test_signal_keyed_by_subsystem(pipeline: Pipeline, codec: AvroCodec) -> None:
    (sent,) = pipeline.process(event_message(codec, subsystem="industrial/pumps")).messages

    assert sent.key == b"industrial/pumps"


def test_signal_value_decodes(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert decode_all(codec, outcome) == [outcome.signal]


def test_signal_carries_event(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert outcome.signal is not None
    assert outcome.signal.event == anomaly_event()


def test_signal_carries_asset(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert outcome.signal is not None
    assert outcome.signal.asset == asset_context()


def test_signal_unknown_asset_empty(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec, entity="machine-temperature-99"))

    assert outcome.signal is not None
    assert outcome.signal.asset is None


def test_first_step_decides_nothing(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))

    assert outcome.decision is None
    assert outcome.rejection is None


# A good event that the shipped policy machine-temperature-high acts on. The
# decide stage sends the plan to the orchestrate stage, which sends the commands.


def test_good_event_topics_in_order(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))

    assert [sent.topic for sent in outcome.messages] == ["unit.plans", "unit.decisions"]


def test_good_event_decided_auto(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))

    assert decided(outcome).record.outcome == "auto"
    assert outcome.rejection is None


def test_good_event_values_decode(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))
    decision = decided(outcome)
    assert decision.plan is not None
    record_bytes = codec.encode("DecisionRecord", decision.record.to_avro())

    assert decode_all(codec, outcome) == [
        decision.plan.model_copy(update={"decision": record_bytes}),
        decision.record,
    ]


def test_plan_message_starts_plan(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))
    control = decode_all(codec, outcome)[0]

    assert control.kind == "start"
    assert control.plan_id == decided(outcome).record.decision_id
    assert control.incident_id == decided(outcome).record.incident_id


def test_plan_message_carries_record(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))
    control = decode_all(codec, outcome)[0]

    assert control.decision is not None
    assert DecisionRecord.model_validate(codec.decode(control.decision, "DecisionRecord").record) == (
        decided(outcome).record
    )


def test_plan_message_lists_every_step(two_steps: TwoSteps, codec: AvroCodec, tables: Recorder) -> None:
    outcome = two_steps.run(event_message(codec))
    control = decode_all(codec, outcome)[0]
    policy = tables.policy_index.get("machine-temperature-high")
    assert policy is not None

    assert [step.step_id for step in control.steps] == [step.id for step in policy.document.plan]


def test_good_event_keys(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))
    incident_id = decided(outcome).record.incident_id
    assert incident_id is not None

    # The plan goes by incident id, so that it meets its results on one partition.
    assert [sent.key for sent in outcome.messages] == [incident_id.encode(), b"machine-temperature-01"]


def test_good_event_opens_incident(two_steps: TwoSteps, codec: AvroCodec) -> None:
    record = decided(two_steps.run(event_message(codec))).record

    assert record.incident_id is not None
    assert record.incident_signals == 1


def test_commands_name_incident(two_steps: TwoSteps, codec: AvroCodec) -> None:
    decision = decided(two_steps.run(event_message(codec)))

    assert {command.incident_id for command in decision.commands} == {decision.record.incident_id}


def test_trace_header_from_producer(pipeline: Pipeline, stage: DecisionStage, breaker: ShardedBreaker,
                                    codec: AvroCodec) -> None:
    first = pipeline.process(event_message(codec, headers=(("trace-id", b"4bf92f3577b34da6"),)))
    (sent,) = first.messages
    second = stage.process(signal_message(sent), breaker)

    assert sent.headers == (("trace-id", b"4bf92f3577b34da6"),)
    assert [sent.headers for sent in second.messages] == [(("trace-id", b"4bf92f3577b34da6"),)] * 2


def test_trace_id_in_records(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec, headers=(("trace-id", b"4bf92f3577b34da6"),)))

    assert {record.trace_id for record in decode_all(codec, outcome)} == {"4bf92f3577b34da6"}


def test_derived_trace_header_shared(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec))
    trace_id = decided(outcome).record.trace_id.encode()

    assert [sent.headers for sent in outcome.messages] == [(("trace-id", trace_id),)] * 2


def test_signal_trace_header_derived(pipeline: Pipeline, codec: AvroCodec) -> None:
    outcome = pipeline.process(event_message(codec))
    (sent,) = outcome.messages

    assert outcome.signal is not None
    assert sent.headers == (("trace-id", outcome.signal.trace_id.encode()),)


def test_replay_gives_same_signal(pipeline: Pipeline, codec: AvroCodec) -> None:
    first = pipeline.process(event_message(codec))
    again = pipeline.process(event_message(codec))

    assert again.messages == first.messages


def test_replay_into_fresh_stores(pipeline: Pipeline, codec: AvroCodec, tables: Recorder,
                                  automation: AutomationSettings) -> None:
    (sent,) = pipeline.process(event_message(codec)).messages
    first = decision_stage(codec, tables, automation).process(
        signal_message(sent), ShardedBreaker(automation.circuit_breaker, {}, "signals:1")
    )
    again = decision_stage(codec, tables, automation).process(
        signal_message(sent), ShardedBreaker(automation.circuit_breaker, {}, "signals:1")
    )

    assert again.messages == first.messages


def test_redelivery_counted_as_duplicate(pipeline: Pipeline, stage: DecisionStage, breaker: ShardedBreaker,
                                         codec: AvroCodec) -> None:
    # The same Signal delivered twice to one DecisionStage (after a crash before the
    # offset commit) must not start the plan twice.
    (sent,) = pipeline.process(event_message(codec)).messages
    stage.process(signal_message(sent), breaker)
    again = stage.process(signal_message(sent), breaker)

    assert decided(again).record.reason_code == "duplicate"
    assert decided(again).commands == ()
    assert [sent.topic for sent in again.messages] == ["unit.decisions"]


def test_clock_stamps_ingest_time(two_steps: TwoSteps, codec: AvroCodec) -> None:
    record = decided(two_steps.run(event_message(codec, event_time=NOW - timedelta(minutes=2)))).record

    assert record.lineage.ingest_time == NOW


def test_event_time_stamps_decision(two_steps: TwoSteps, codec: AvroCodec) -> None:
    # The decide step runs on event time, so that a replay decides as the live run did.
    record = decided(two_steps.run(event_message(codec, event_time=NOW - timedelta(minutes=2)))).record

    assert record.decided_at == NOW - timedelta(minutes=2)


def test_lineage_names_source(two_steps: TwoSteps, codec: AvroCodec) -> None:
    lineage = decided(two_steps.run(event_message(codec))).record.lineage

    assert (lineage.source_topic, lineage.source_partition, lineage.source_offset) == ("unit.anomalies", 2, 17)
    assert lineage.pipeline_version == "0.1.0-unit"


def test_tables_asked_once(two_steps: TwoSteps, codec: AvroCodec, tables: Recorder) -> None:
    two_steps.run(event_message(codec))

    assert tables.asset_requests == ["machine-temperature-01"]


def test_first_step_skips_policies(pipeline: Pipeline, codec: AvroCodec, tables: Recorder) -> None:
    pipeline.process(event_message(codec))

    assert tables.policy_calls == 0


def test_decision_stage_skips_assets(pipeline: Pipeline, stage: DecisionStage, breaker: ShardedBreaker,
                                     codec: AvroCodec, tables: Recorder) -> None:
    (sent,) = pipeline.process(event_message(codec)).messages
    tables.asset_requests.clear()

    stage.process(signal_message(sent), breaker)

    assert tables.asset_requests == []


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
def test_outcome_topics(two_steps: TwoSteps, codec: AvroCodec, changes: dict[str, Any], topics: list[str]) -> None:
    outcome = two_steps.run(event_message(codec, **changes))

    assert [sent.topic for sent in outcome.messages] == topics


@pytest.mark.parametrize(
    ("changes", "expected"), [(case[1], case[3]) for case in OTHER_OUTCOMES], ids=[case[0] for case in OTHER_OUTCOMES]
)
def test_outcome_recorded(two_steps: TwoSteps, codec: AvroCodec, changes: dict[str, Any], expected: str) -> None:
    outcome = two_steps.run(event_message(codec, **changes))

    assert decode_all(codec, outcome)[-1].outcome == expected


def test_review_message_decodes(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec, confidence=0.6))
    review = decided(outcome).review
    assert review is not None

    assert decode_all(codec, outcome)[0] == review.model_copy(update={"decision": outcome.messages[1].value})


def test_review_carries_its_decision_record(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec, confidence=0.6))
    request = decode_all(codec, outcome)[0]
    assert isinstance(request, ReviewRequest) and request.decision is not None

    embedded = DecisionRecord.model_validate(codec.decode(request.decision, "DecisionRecord").record)
    assert embedded == decided(outcome).record


def test_review_keyed_by_incident(two_steps: TwoSteps, codec: AvroCodec) -> None:
    outcome = two_steps.run(event_message(codec, confidence=0.6))
    incident_id = decided(outcome).record.incident_id
    assert incident_id is not None

    assert [sent.key for sent in outcome.messages] == [incident_id.encode(), b"machine-temperature-01"]


def test_resolution_sends_plan_cancel(pipeline: Pipeline, stage: DecisionStage, breaker: ShardedBreaker,
                                     codec: AvroCodec) -> None:
    (firing,) = pipeline.process(event_message(codec)).messages
    started = stage.process(signal_message(firing), breaker)
    (resolved,) = pipeline.process(event_message(codec, event_id="resolution-1", status="resolved")).messages

    outcome = stage.process(signal_message(resolved, offset=41), breaker)
    control = decode_all(codec, outcome)[0]

    assert [sent.topic for sent in outcome.messages] == ["unit.plans", "unit.decisions"]
    assert control.kind == "cancel"
    assert control.plan_id == decided(started).record.decision_id


def test_silenced_only_decision(pipeline: Pipeline, codec: AvroCodec, tables: Recorder,
                                automation: AutomationSettings, breaker: ShardedBreaker) -> None:
    silence = Silence(
        silence_id="silence-1",
        matchers={"subsystem": "industrial/*"},
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
        author="operator",
        reason="planned maintenance",
        created_at=NOW - timedelta(hours=1),
    )
    stage = decision_stage(codec, tables, automation, [silence])
    (sent,) = pipeline.process(event_message(codec)).messages

    outcome = stage.process(signal_message(sent), breaker)

    assert [sent.topic for sent in outcome.messages] == ["unit.decisions"]
    assert decided(outcome).record.silence_id == "silence-1"


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
    assert outcome.signal is None
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
    assert entry.getMessage().startswith(
        "dead letter stage=intake reason=unknown-wire-format source=unit.anomalies[2]@17 trace_id="
    )


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


# Input on the signals topic that is not a Signal


def test_bad_signal_one_dead_letter(stage: DecisionStage, breaker: ShardedBreaker) -> None:
    outcome = stage.process(raw_signal_message(GARBAGE), breaker)

    assert [sent.topic for sent in outcome.messages] == ["unit.anomalies.dead-letter"]


def test_bad_signal_stage_correlate(stage: DecisionStage, breaker: ShardedBreaker, codec: AvroCodec) -> None:
    (letter,) = decode_all(codec, stage.process(raw_signal_message(GARBAGE), breaker))

    assert letter.stage == "correlate"
    assert letter.reason_code == "unknown-wire-format"


def test_bad_signal_keeps_coordinates(stage: DecisionStage, breaker: ShardedBreaker, codec: AvroCodec) -> None:
    (letter,) = decode_all(codec, stage.process(raw_signal_message(GARBAGE), breaker))

    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("unit.signals", 1, 40)
    assert letter.key == b"industrial/cooling"
    assert letter.value == GARBAGE


def test_bad_signal_no_decision(stage: DecisionStage, breaker: ShardedBreaker) -> None:
    outcome = stage.process(raw_signal_message(GARBAGE), breaker)

    assert outcome.decision is None
    assert outcome.rejection is not None


def test_anomaly_on_signals_topic(stage: DecisionStage, breaker: ShardedBreaker, codec: AvroCodec) -> None:
    value = codec.encode("AnomalyEvent", anomaly_event().to_avro())

    (letter,) = decode_all(codec, stage.process(raw_signal_message(value), breaker))

    assert letter.reason_code == "schema-mismatch"
    assert letter.reason.startswith("invalid signal: writer schema ")


def test_bad_signal_keeps_writer_schema(stage: DecisionStage, breaker: ShardedBreaker, codec: AvroCodec) -> None:
    value = codec.encode("AnomalyEvent", anomaly_event().to_avro())

    (letter,) = decode_all(codec, stage.process(raw_signal_message(value), breaker))

    assert letter.writer_schema == codec.repository.current("AnomalyEvent").identifier


def test_bad_signal_logged(stage: DecisionStage, breaker: ShardedBreaker, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mitigate.pipeline"):
        stage.process(raw_signal_message(GARBAGE), breaker)

    (entry,) = caplog.records
    assert entry.getMessage().startswith(
        "dead letter stage=correlate reason=unknown-wire-format source=unit.signals[1]@40 trace_id="
    )
