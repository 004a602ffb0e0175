"""Unit tests for mitigate.codec: single-object encoding, Schema Registry framing and decode errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import tomllib
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.schema import SchemaParseException

from mitigate.codec import AvroCodec, create_registry_client
from mitigate.errors import DecodeError, EncodeError
from mitigate.models import (
    ActionResult,
    Approval,
    ReviewVerdict,
    MetricsWindow,
    Percentiles,
    MaintenanceWindow,
    Signal,
    Silence,
    ActionCommand,
    AssetSnapshot,
    AvroModel,
    DeadLetter,
    DecisionRecord,
    GateResult,
    CompensationSpec,
    Header,
    Lineage,
    PlanControl,
    PlanStep,
    PlanStepSpec,
    PolicyVersion,
    ReviewRequest,
)
from mitigate.schemas import SchemaRepository, load_schema_file
from tests.unit.builders import NOW, ROOT, SCHEMA_DIR, anomaly_event, asset_context, event_fields, single_object

LINEAGE = Lineage(
    source_topic="anomalies",
    source_partition=3,
    source_offset=1_234_567_890_123,
    detector_id="robust-zscore",
    detector_version="1.2.0",
    writer_schema="fingerprint:0011223344556677",
    event_time=NOW - timedelta(seconds=2),
    ingest_time=NOW,
    clock_skew_ms=2000,
    pipeline_version="0.1.0",
)
GATES = [
    GateResult(name="min-confidence", passed=True, value="0.950", threshold=">= 0.850"),
    GateResult(name="change-freeze", passed=False, value="frozen", threshold="not frozen"),
]

# One valid record of every schema, with optional fields set where a schema has them.
SAMPLE_RECORDS: list[AvroModel] = [
    anomaly_event(),
    DeadLetter(
        dead_letter_id="5b8f3a52-9a7e-5d7c-8a43-3b1c7d2e9f10",
        failed_at=NOW,
        stage="intake",
        reason_code="undecodable",
        reason="Avro body does not match writer schema",
        source_topic="anomalies",
        source_partition=1,
        source_offset=42,
        source_timestamp=NOW - timedelta(seconds=1),
        key=b"machine-temperature-01",
        value=b"\xc3\x01\x00\xff",
        headers=[Header(key="trace-id", value=b"abc"), Header(key="empty", value=None)],
        writer_schema="fingerprint:0011223344556677",
        trace_id="abc",
        pipeline_version="0.1.0",
    ),
    asset_context(),
    PolicyVersion(
        policy_id="machine-temperature-high",
        version=3,
        author="alice",
        published_at=NOW,
        change_note="raise the confidence gate",
        content_hash="0" * 64,
        document='{"id":"machine-temperature-high"}',
        deleted=False,
    ),
    DecisionRecord(
        decision_id="d-1",
        decided_at=NOW,
        event_id="e-1",
        trace_id="t-1",
        fingerprint="machine-temperature-01:spike",
        entity="machine-temperature-01",
        subsystem="industrial/cooling",
        anomaly_type="spike",
        severity="high",
        confidence=0.95,
        signal_status="firing",
        outcome="review",
        reason_code="gate-failed",
        reason="gates failed: change-freeze frozen (needs not frozen)",
        policy_id="machine-temperature-high",
        policy_version=2,
        rule="anomaly_types=spike subsystems=industrial/* severities=high",
        risk_score=0.5625,
        gates=GATES,
        command_ids=[],
        review_id="r-1",
        lineage=LINEAGE,
        asset=AssetSnapshot(owner="plant-operations", tier="tier-1", criticality="high",
                            environment="production", change_freeze=True),
    ),
    ActionCommand(
        command_id="c-1",
        idempotency_key="k-1",
        decision_id="d-1",
        event_id="e-1",
        trace_id="t-1",
        issued_at=NOW,
        deadline=NOW + timedelta(seconds=120),
        attempt=2,
        executor="demo-target",
        action="rollback-config",
        target="machine-temperature-01",
        parameters={"to_version": "last-known-good"},
        step_id="rollback-config",
        depends_on=["drain"],
        policy_id="machine-temperature-high",
        policy_version=2,
    ),
    ReviewRequest(
        review_id="r-1",
        decision_id="d-1",
        event_id="e-1",
        trace_id="t-1",
        created_at=NOW,
        deadline=NOW + timedelta(minutes=30),
        entity="machine-temperature-01",
        subsystem="industrial/cooling",
        anomaly_type="spike",
        severity="critical",
        confidence=0.97,
        score=11.5,
        risk_score=0.75,
        reason_code="gate-failed",
        reason="gates failed: approval-severity critical (needs not in [critical])",
        policy_id="machine-temperature-high",
        policy_version=2,
        gates=GATES,
        recommended_plan=[
            PlanStep(step_id="rollback-config", executor="demo-target", action="rollback-config",
                     target="machine-temperature-01", parameters={"to_version": "last-known-good"}),
            PlanStep(step_id="verify", executor="webhook", action="verify", target="machine-temperature-01",
                     depends_on=["rollback-config"]),
        ],
        revision=2,
        status="pending",
        status_reason="modified by alice: dropped verify",
        updated_at=NOW,
        quorum=2,
        approvals=[Approval(operator="alice", approved_at=NOW, verdict_id="v-1")],
        on_expiry="close",
        risk_inputs={"severity": "critical", "severity_weight": "1.0"},
        predicted_impact=["1 command to demo-target"],
        steps=[PlanStepSpec(step_id="rollback-config", executor="demo-target", action="rollback-config",
                            target="machine-temperature-01", timeout_ms=120_000, retries=1)],
        decision=b"\xc3\x01\xfe",
    ),
    ReviewVerdict(verdict_id="v-2", review_id="r-1", incident_id="i1", revision=2, kind="modify", operator="bob",
                  issued_at=NOW, reason="keep the load as is", drop_steps=["throttle-load"],
                  parameters={"rollback-config": {"to_version": "v1", "force": ""}}, client="mitigate-review on host-1"),
    Signal(event=anomaly_event(), trace_id="0af7651916cd43dd8448eb211c80319c", lineage=LINEAGE,
           asset=asset_context(maintenance_windows=[MaintenanceWindow(start=NOW, end=NOW + timedelta(hours=2),
                                                                      reason="pump replacement")])),
    ActionResult(command_id="c1", idempotency_key="k1", decision_id="d1", incident_id="i1",
                 trace_id="0af7651916cd43dd8448eb211c80319c", executor="ticket", step_id="open-ticket",
                 status="failed", reason="queue not found", finished_at=NOW, output={"http_status": "404"}),
    Silence(silence_id="s1", matchers={"subsystem": "industrial/*", "labels.metric": "machine_temperature"},
            starts_at=NOW, ends_at=NOW + timedelta(hours=1), author="alice", reason="sensor recalibration",
            created_at=NOW),
    PlanControl(
        kind="start",
        incident_id="i1",
        plan_id="d-1",
        trace_id="t-1",
        issued_at=NOW,
        reason="all 6 gates passed",
        policy_id="machine-temperature-high",
        policy_version=2,
        steps=[
            PlanStepSpec(step_id="rollback-config", executor="demo-target", action="rollback-config",
                         target="machine-temperature-01", parameters={"to_version": "last-known-good"},
                         preconditions={"config_version": "42"}, timeout_ms=120_000, retries=2,
                         compensate=CompensationSpec(executor="demo-target", action="restore-config",
                                                     parameters={"to_version": "previous"}, timeout_ms=30_000)),
            PlanStepSpec(step_id="verify", executor="webhook", action="verify", target="machine-temperature-01",
                         depends_on=["rollback-config"], timeout_ms=60_000),
        ],
        # Not valid UTF-8, as an encoded DecisionRecord usually is not.
        decision=b"\xc3\x01\xff\x00\x80",
        signal_score=6.25,
        origin="review",
        first_seen=NOW - timedelta(minutes=3),
    ),
    MetricsWindow(
        window_start=NOW, window_end=NOW + timedelta(minutes=1), worker="host-1:4242", complete=False,
        anomalies_in=12, dead_letters={"undecodable": 1}, incidents_opened=3, decisions={"auto": 2, "review": 9},
        decisions_by_policy={"machine-temperature-high@1": 11}, review_requests=9, commands={"demo-target": 2},
        results={"succeeded": 2}, verdicts={"approve-applied": 1},
        review_wait_ms=Percentiles(count=1, p50=5000.0, p90=5000.0, p99=5000.0, max=5000.0),
        event_to_command_ms=Percentiles(count=2, p50=12.5, p90=20.0, p99=20.0, max=20.0),
        plans_completed_automated=1, mitigated_without_human=1.0, signals_confirmed=2, precision=1.0, cost=3.5,
        incidents_touched=3, cost_per_incident=3.5 / 3, cost_unit="operator minutes",
    ),
]
SAMPLE_IDS = [type(record).__name__ for record in SAMPLE_RECORDS]


@pytest.fixture(scope="module")
def repository() -> SchemaRepository:
    return SchemaRepository(SCHEMA_DIR)


@pytest.fixture
def codec(repository: SchemaRepository) -> AvroCodec:
    return AvroCodec(repository)


@pytest.fixture
def event_bytes(codec: AvroCodec) -> bytes:
    return codec.encode("AnomalyEvent", anomaly_event().to_avro())


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body


def avro_body(repository: SchemaRepository, name: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, repository.current(name).parsed, record)
    return buffer.getvalue()


# Single-object encoding


def test_sample_covers_every_schema(repository: SchemaRepository) -> None:
    assert sorted(record.schema_name for record in SAMPLE_RECORDS) == repository.names()


@pytest.mark.parametrize("model", SAMPLE_RECORDS, ids=SAMPLE_IDS)
def test_single_object_round_trip(codec: AvroCodec, model: AvroModel) -> None:
    data = codec.encode(model.schema_name, model.to_avro())

    decoded = codec.decode(data, model.schema_name)

    assert type(model).model_validate(decoded.record) == model


@pytest.mark.parametrize("model", SAMPLE_RECORDS, ids=SAMPLE_IDS)
def test_single_object_reports_writer(codec: AvroCodec, repository: SchemaRepository, model: AvroModel) -> None:
    decoded = codec.decode(codec.encode(model.schema_name, model.to_avro()), model.schema_name)

    assert decoded.writer_schema == repository.current(model.schema_name).identifier
    assert decoded.wire_format == "single-object"


@pytest.mark.parametrize("model", SAMPLE_RECORDS, ids=SAMPLE_IDS)
def test_single_object_header_bytes(codec: AvroCodec, repository: SchemaRepository, model: AvroModel) -> None:
    data = codec.encode(model.schema_name, model.to_avro())

    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == repository.current(model.schema_name).fingerprint


@pytest.mark.parametrize("model", SAMPLE_RECORDS, ids=SAMPLE_IDS)
def test_single_object_body_is_plain_avro(codec: AvroCodec, repository: SchemaRepository, model: AvroModel) -> None:
    data = codec.encode(model.schema_name, model.to_avro())

    assert data[10:] == avro_body(repository, model.schema_name, model.to_avro())


def test_decision_without_asset_round_trip(codec: AvroCodec) -> None:
    (sample,) = [record for record in SAMPLE_RECORDS if isinstance(record, DecisionRecord)]
    record = sample.model_copy(update={"asset": None, "policy_id": None, "policy_version": None})

    decoded = codec.decode(codec.encode("DecisionRecord", record.to_avro()), "DecisionRecord")

    assert DecisionRecord.model_validate(decoded.record) == record


def test_encode_rejects_wrong_record(codec: AvroCodec) -> None:
    record = event_fields(confidence="high")

    with pytest.raises(EncodeError) as caught:
        codec.encode("AnomalyEvent", record)

    assert str(caught.value).startswith("record does not fit schema AnomalyEvent: ")


def test_confluent_encode_needs_registry(codec: AvroCodec) -> None:
    with pytest.raises(EncodeError) as caught:
        codec.encode("AnomalyEvent", anomaly_event().to_avro(), wire_format="confluent")

    assert str(caught.value) == "Schema Registry framing needs a registry; set MITIGATE_SCHEMA_REGISTRY_URL"


# Decode errors


def test_empty_value_rejected(codec: AvroCodec) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"", "AnomalyEvent")

    assert caught.value.reason_code == "empty-message"
    assert str(caught.value) == "message value is empty"


def test_tombstone_rejected(codec: AvroCodec) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(None, "AnomalyEvent")

    assert caught.value.reason_code == "empty-message"


def test_unknown_first_bytes(codec: AvroCodec) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(b'{"entity": "machine-temperature-01"}', "AnomalyEvent")

    assert caught.value.reason_code == "unknown-wire-format"
    assert str(caught.value) == (
        "first bytes 7b22 are neither Avro single-object encoding (c301) nor Schema Registry framing (00)"
    )
    assert caught.value.writer_schema is None


def test_unknown_fingerprint(codec: AvroCodec, repository: SchemaRepository, event_bytes: bytes) -> None:
    data = b"\xc3\x01" + bytes.fromhex("0102030405060708") + event_bytes[10:]

    with pytest.raises(DecodeError) as caught:
        codec.decode(data, "AnomalyEvent")

    reader = repository.current("AnomalyEvent")
    assert caught.value.reason_code == "unknown-schema"
    assert caught.value.writer_schema == "fingerprint:0102030405060708"
    assert str(caught.value) == (
        f"writer schema fingerprint:0102030405060708 is not among the schemas shipped in {SCHEMA_DIR}; "
        f"the reader expects AnomalyEvent {reader.identifier}"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xc3\x01\x2a\x11", "single-object header truncated: 4 bytes, need 10"),
        (b"\xc3\x01", "single-object header truncated: 2 bytes, need 10"),
        (b"\x00\x00\x00", "Schema Registry header truncated: 3 bytes, need 5"),
        (b"\x00", "Schema Registry header truncated: 1 bytes, need 5"),
    ],
    ids=["single-object", "single-object-marker-only", "confluent", "confluent-magic-only"],
)
def test_truncated_header(codec: AvroCodec, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(data, "AnomalyEvent")

    assert caught.value.reason_code == "undecodable"
    assert str(caught.value) == message


@pytest.mark.parametrize("length", [10, 11, 30, -1], ids=["header-only", "one-byte", "thirty-bytes", "last-missing"])
def test_truncated_body(codec: AvroCodec, event_bytes: bytes, length: int) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(event_bytes[:length], "AnomalyEvent")

    error = caught.value
    assert error.reason_code == "undecodable"
    assert str(error).startswith(f"Avro body does not match writer schema {error.writer_schema}: ")


def test_truncated_body_names_writer(codec: AvroCodec, repository: SchemaRepository, event_bytes: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(event_bytes[:30], "AnomalyEvent")

    assert caught.value.writer_schema == repository.current("AnomalyEvent").identifier


@pytest.mark.parametrize("extra", [b"\x00", b"\x02garbage"], ids=["one-byte", "eight-bytes"])
def test_trailing_bytes(codec: AvroCodec, event_bytes: bytes, extra: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(event_bytes + extra, "AnomalyEvent")

    assert caught.value.reason_code == "undecodable"
    assert str(caught.value) == (
        f"{len(extra)} bytes left after the Avro body; the message is longer than the record"
    )


def test_confluent_without_registry(codec: AvroCodec, repository: SchemaRepository) -> None:
    data = confluent_frame(7, avro_body(repository, "AnomalyEvent", anomaly_event().to_avro()))

    with pytest.raises(DecodeError) as caught:
        codec.decode(data, "AnomalyEvent")

    assert caught.value.reason_code == "registry-unavailable"
    assert caught.value.writer_schema == "registry:7"
    assert str(caught.value) == (
        "message uses Schema Registry framing (schema id 7) but no registry is configured; "
        "set MITIGATE_SCHEMA_REGISTRY_URL or produce single-object encoded Avro"
    )


def test_other_record_type_mismatch(codec: AvroCodec) -> None:
    data = codec.encode("AssetContext", asset_context().to_avro())

    with pytest.raises(DecodeError) as caught:
        codec.decode(data, "AnomalyEvent")

    assert caught.value.reason_code == "schema-mismatch"


# Schema evolution


@pytest.fixture
def evolved_folder(tmp_path: Path) -> Path:
    """A copy of schemas/ with two older AnomalyEvent versions under history/.

    AnomalyEvent-1.avsc lacks `annotations` (compatible: the current version gives
    it a default). AnomalyEvent-0.avsc has `confidence` as a string, which Avro
    cannot promote to double.
    """
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, folder)
    current = json.loads((folder / "AnomalyEvent.avsc").read_text(encoding="utf-8"))
    (folder / "history").mkdir(exist_ok=True)

    without_annotations = dict(current, fields=[f for f in current["fields"] if f["name"] != "annotations"])
    (folder / "history" / "AnomalyEvent-1.avsc").write_text(json.dumps(without_annotations), encoding="utf-8")

    text_confidence = dict(
        current,
        fields=[dict(f, type="string") if f["name"] == "confidence" else f for f in current["fields"]],
    )
    (folder / "history" / "AnomalyEvent-0.avsc").write_text(json.dumps(text_confidence), encoding="utf-8")
    return folder


def older_event_fields(**changes: Any) -> dict[str, Any]:
    fields = event_fields(**changes)
    del fields["annotations"]
    return fields


def test_older_version_decodes(evolved_folder: Path) -> None:
    codec = AvroCodec(SchemaRepository(evolved_folder))
    older = load_schema_file(evolved_folder / "history" / "AnomalyEvent-1.avsc")

    decoded = codec.decode(single_object(older, older_event_fields()), "AnomalyEvent")

    assert decoded.record["annotations"] == {}
    assert decoded.record["labels"] == {"metric": "machine_temperature"}
    assert decoded.record["confidence"] == 0.95


def test_older_version_reports_writer(evolved_folder: Path) -> None:
    codec = AvroCodec(SchemaRepository(evolved_folder))
    older = load_schema_file(evolved_folder / "history" / "AnomalyEvent-1.avsc")

    decoded = codec.decode(single_object(older, older_event_fields()), "AnomalyEvent")

    assert decoded.writer_schema == older.identifier


def test_incompatible_version_mismatch(evolved_folder: Path) -> None:
    repository = SchemaRepository(evolved_folder)
    codec = AvroCodec(repository)
    older = load_schema_file(evolved_folder / "history" / "AnomalyEvent-0.avsc")
    data = single_object(older, event_fields(confidence="0.95"))

    with pytest.raises(DecodeError) as caught:
        codec.decode(data, "AnomalyEvent")

    error = caught.value
    reader = repository.current("AnomalyEvent")
    assert error.reason_code == "schema-mismatch"
    assert error.writer_schema == older.identifier
    assert str(error).startswith(f"writer schema {older.identifier} cannot be read as AnomalyEvent {reader.identifier}: ")


def test_history_unknown_without_folder(evolved_folder: Path, codec: AvroCodec) -> None:
    older = load_schema_file(evolved_folder / "history" / "AnomalyEvent-1.avsc")

    with pytest.raises(DecodeError) as caught:
        codec.decode(single_object(older, older_event_fields()), "AnomalyEvent")

    assert caught.value.reason_code == "unknown-schema"


# Schema Registry framing


class FakeRegistry:
    """Fake Schema Registry client that serves schemas by id and records each lookup."""

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.lookups: list[int] = []

    def get_schema(self, schema_id: int) -> SimpleNamespace:
        self.lookups.append(schema_id)
        return SimpleNamespace(schema_str=self.schemas[schema_id])


def test_registry_frame_decodes(repository: SchemaRepository) -> None:
    registry = FakeRegistry({12: json.dumps(repository.current("AnomalyEvent").definition)})
    codec = AvroCodec(repository, registry)
    data = confluent_frame(12, avro_body(repository, "AnomalyEvent", anomaly_event().to_avro()))

    decoded = codec.decode(data, "AnomalyEvent")

    assert decoded.record == anomaly_event().to_avro()
    assert decoded.writer_schema == "registry:12"
    assert decoded.wire_format == "confluent"


def test_registry_lookup_cached(repository: SchemaRepository) -> None:
    registry = FakeRegistry({12: json.dumps(repository.current("AnomalyEvent").definition)})
    codec = AvroCodec(repository, registry)
    data = confluent_frame(12, avro_body(repository, "AnomalyEvent", anomaly_event().to_avro()))

    codec.decode(data, "AnomalyEvent")
    codec.decode(data, "AnomalyEvent")

    assert registry.lookups == [12]


@pytest.mark.parametrize(
    "schema_text",
    ['{"type": "object", "properties": {"entity": {"type": "string"}}}', 'syntax = "proto3";'],
    ids=["json-schema", "protobuf"],
)
def test_registry_schema_not_avro(repository: SchemaRepository, schema_text: str) -> None:
    codec = AvroCodec(repository, FakeRegistry({12: schema_text}))

    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(12, b"\x00"), "AnomalyEvent")

    assert caught.value.reason_code == "unknown-schema"
    assert str(caught.value).startswith("schema id 12 is not valid Avro: ")


def test_registry_schema_field_untyped(repository: SchemaRepository) -> None:
    codec = AvroCodec(repository, FakeRegistry({12: '{"type": "record", "name": "X", "fields": [{"name": "a"}]}'}))

    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(12, b"\x00"), "AnomalyEvent")

    assert caught.value.reason_code == "unknown-schema"


@pytest.fixture
def registry() -> Any:
    return create_registry_client("mock://unit")


@pytest.mark.parametrize("model", SAMPLE_RECORDS, ids=SAMPLE_IDS)
def test_confluent_round_trip(repository: SchemaRepository, registry: Any, model: AvroModel) -> None:
    codec = AvroCodec(repository, registry)

    data = codec.encode(model.schema_name, model.to_avro(), wire_format="confluent")
    decoded = codec.decode(data, model.schema_name)

    assert type(model).model_validate(decoded.record) == model


def test_confluent_header_bytes(repository: SchemaRepository, registry: Any) -> None:
    codec = AvroCodec(repository, registry)

    data = codec.encode("AnomalyEvent", anomaly_event().to_avro(), wire_format="confluent")
    (schema_id,) = struct.unpack(">I", data[1:5])

    assert data[:1] == b"\x00"
    assert registry.get_latest_version("AnomalyEvent").schema_id == schema_id


def test_confluent_reports_writer(repository: SchemaRepository, registry: Any) -> None:
    codec = AvroCodec(repository, registry)
    data = codec.encode("AnomalyEvent", anomaly_event().to_avro(), wire_format="confluent")
    (schema_id,) = struct.unpack(">I", data[1:5])

    decoded = codec.decode(data, "AnomalyEvent")

    assert decoded.writer_schema == f"registry:{schema_id}"
    assert decoded.wire_format == "confluent"


def test_confluent_fetches_unseen_id(repository: SchemaRepository, registry: Any) -> None:
    data = AvroCodec(repository, registry).encode("AnomalyEvent", anomaly_event().to_avro(), wire_format="confluent")

    # A second codec has an empty cache, so it must ask the registry for the writer schema.
    decoded = AvroCodec(repository, registry).decode(data, "AnomalyEvent")

    assert decoded.record == anomaly_event().to_avro()


def test_confluent_unknown_id(repository: SchemaRepository, registry: Any) -> None:
    codec = AvroCodec(repository, registry)

    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(4242, b"\x00"), "AnomalyEvent")

    assert caught.value.reason_code == "unknown-schema"
    assert str(caught.value).startswith("schema id 4242 lookup failed: ")


def test_confluent_subject_override(repository: SchemaRepository, registry: Any) -> None:
    codec = AvroCodec(repository, registry)

    codec.encode("AnomalyEvent", anomaly_event().to_avro(), wire_format="confluent", subject="anomalies-value")

    assert registry.get_subjects() == ["anomalies-value"]


def test_registry_extra_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    confluent = [spec for spec in project["dependencies"] if spec.startswith("confluent-kafka")]
    extras = re.findall(r"\[([^\]]*)\]", confluent[0])

    assert any(name.strip() in {"schemaregistry", "schema-registry", "avro"}
               for group in extras for name in group.split(","))
