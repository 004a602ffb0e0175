"""Unit tests for mitigate.models: the pydantic models mirror the Avro schemas and check meaning."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mitigate.models import (
    RECORD_MODELS,
    AnomalyEvent,
    AssetSnapshot,
    AvroModel,
    DeadLetter,
    DecisionRecord,
    GateResult,
    Header,
    Lineage,
    PlanStep,
    ReviewRequest,
)
from tests.unit.builders import SCHEMA_DIR, anomaly_event, event_fields


def schema_definition(name: str) -> dict[str, Any]:
    definition: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    return definition


def avro_field_names(record: dict[str, Any]) -> list[str]:
    return [field["name"] for field in record["fields"]]


def nested_record(record: dict[str, Any], field_name: str) -> dict[str, Any]:
    """The record schema inside a field, looking through unions and arrays."""
    (field,) = [field for field in record["fields"] if field["name"] == field_name]
    field_type: Any = field["type"]
    if isinstance(field_type, list):
        (field_type,) = [branch for branch in field_type if branch != "null"]
    if field_type["type"] == "array":
        field_type = field_type["items"]
    assert field_type["type"] == "record"
    nested: dict[str, Any] = field_type
    return nested


# (outer schema, field that contains the nested record, model of the nested record)
NESTED_RECORDS = [
    ("DeadLetter", "headers", Header),
    ("DecisionRecord", "gates", GateResult),
    ("DecisionRecord", "lineage", Lineage),
    ("DecisionRecord", "asset", AssetSnapshot),
    ("ReviewRequest", "gates", GateResult),
    ("ReviewRequest", "recommended_plan", PlanStep),
]


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda model: model.__name__)
def test_model_fields_match_schema(model: type[AvroModel]) -> None:
    definition = schema_definition(model.schema_name)

    assert list(model.model_fields) == avro_field_names(definition)


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda model: model.__name__)
def test_model_named_like_schema(model: type[AvroModel]) -> None:
    assert model.schema_name == model.__name__


@pytest.mark.parametrize(
    ("schema_name", "field_name", "model"),
    NESTED_RECORDS,
    ids=[f"{schema}.{field}" for schema, field, _ in NESTED_RECORDS],
)
def test_nested_fields_match_schema(schema_name: str, field_name: str, model: type[BaseModel]) -> None:
    record = nested_record(schema_definition(schema_name), field_name)

    assert list(model.model_fields) == avro_field_names(record)


@pytest.mark.parametrize(
    ("schema_name", "field_name", "model"),
    NESTED_RECORDS,
    ids=[f"{schema}.{field}" for schema, field, _ in NESTED_RECORDS],
)
def test_nested_record_named_like_model(schema_name: str, field_name: str, model: type[BaseModel]) -> None:
    assert nested_record(schema_definition(schema_name), field_name)["name"] == model.__name__


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda model: model.__name__)
def test_optional_fields_match_defaults(model: type[AvroModel]) -> None:
    """A field the model may omit must have an Avro default, so that older writers stay readable."""
    definition = schema_definition(model.schema_name)
    with_default = [field["name"] for field in definition["fields"] if "default" in field]
    optional = [name for name, field in model.model_fields.items() if not field.is_required()]

    assert optional == with_default


def test_to_avro_keeps_schema_order() -> None:
    record = anomaly_event().to_avro()

    assert list(record) == avro_field_names(schema_definition("AnomalyEvent"))


def test_labels_default_empty() -> None:
    fields = event_fields()
    del fields["labels"]
    del fields["annotations"]

    event = AnomalyEvent.model_validate(fields)

    assert event.labels == {}
    assert event.annotations == {}


def test_event_is_frozen() -> None:
    event = anomaly_event()

    with pytest.raises(ValidationError):
        event.severity = "low"  # type: ignore[misc]


# (case, changed fields, field the error names, message pydantic gives)
INVALID_EVENTS = [
    ("confidence-above-one", {"confidence": 1.5}, "confidence", "Input should be less than or equal to 1"),
    ("confidence-negative", {"confidence": -0.01}, "confidence", "Input should be greater than or equal to 0"),
    ("confidence-nan", {"confidence": math.nan}, "confidence", "Input should be less than or equal to 1"),
    ("score-nan", {"score": math.nan}, "score", "Value error, must be a finite number"),
    ("score-infinite", {"score": math.inf}, "score", "Value error, must be a finite number"),
    ("naive-event-time", {"event_time": datetime(2026, 3, 2, 10, 30)}, "event_time", "Input should have timezone info"),
    ("empty-entity", {"entity": ""}, "entity", "String should have at least 1 character"),
    ("unknown-severity", {"severity": "urgent"}, "severity",
     "Input should be 'low', 'medium', 'high' or 'critical'"),
    ("unknown-status", {"status": "open"}, "status", "Input should be 'firing' or 'resolved'"),
    ("extra-field", {"region": "eu"}, "region", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("changes", "field_name", "message"),
    [case[1:] for case in INVALID_EVENTS],
    ids=[case[0] for case in INVALID_EVENTS],
)
def test_invalid_event_rejected(changes: dict[str, Any], field_name: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AnomalyEvent.model_validate(event_fields(**changes))

    (error,) = caught.value.errors()
    assert error["loc"] == (field_name,)
    assert error["msg"] == message


@pytest.mark.parametrize("confidence", [0.0, 1.0])
def test_confidence_bounds_inclusive(confidence: float) -> None:
    assert anomaly_event(confidence=confidence).confidence == confidence


@pytest.mark.parametrize("risk", [-0.1, 1.1])
def test_risk_score_out_of_range(risk: float) -> None:
    with pytest.raises(ValidationError) as caught:
        ReviewRequest.model_validate(
            {
                "review_id": "r", "decision_id": "d", "event_id": "e", "trace_id": "t",
                "created_at": "2026-03-02T10:30:00Z", "deadline": "2026-03-02T11:00:00Z",
                "entity": "x", "subsystem": "s", "anomaly_type": "spike", "severity": "high",
                "confidence": 0.9, "score": 5.0, "risk_score": risk, "reason_code": "no-policy", "reason": "",
            }
        )

    assert caught.value.errors()[0]["loc"] == ("risk_score",)


def test_dead_letter_keeps_raw_bytes() -> None:
    letter = DeadLetter.model_validate(
        {
            "dead_letter_id": "d", "failed_at": "2026-03-02T10:30:00Z", "stage": "intake",
            "reason_code": "undecodable", "reason": "", "source_topic": "anomalies", "source_partition": 0,
            "source_offset": 1, "key": b"\xff\x00", "value": b"\xc3\x01\x80",
            "headers": [{"key": "trace-id", "value": b"\xfe"}], "pipeline_version": "0.1.0",
        }
    )
    record = letter.to_avro()

    assert record["key"] == b"\xff\x00"
    assert record["value"] == b"\xc3\x01\x80"
    assert record["headers"] == [{"key": "trace-id", "value": b"\xfe"}]


def test_decision_record_asset_optional() -> None:
    assert DecisionRecord.model_fields["asset"].default is None
