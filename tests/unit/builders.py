"""Valid sample records and policies for the unit tests, each changed per test by keyword arguments."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastavro import schemaless_writer

from mitigate.models import AnomalyEvent, AssetContext, Silence
from mitigate.policy import ActivePolicy, PolicyDocument
from mitigate.schemas import SchemaVersion

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
CONFIG_DIR = ROOT / "config"
POLICY_DIR = CONFIG_DIR / "policies"
DETECTORS_FILE = CONFIG_DIR / "detectors.yaml"

# Whole milliseconds, because Avro timestamp-millis drops anything finer.
NOW = datetime(2026, 3, 2, 10, 30, 15, 250000, tzinfo=UTC)


def event_fields(**changes: Any) -> dict[str, Any]:
    """Fields of an AnomalyEvent that the shipped policy machine-temperature-high covers."""
    fields: dict[str, Any] = {
        "event_id": "4d7f3c1e-0b7a-4c55-9a57-2f1d8c6b9e01",
        "detector_id": "robust-zscore",
        "detector_version": "1.2.0",
        "event_time": NOW,
        "entity": "machine-temperature-01",
        "subsystem": "industrial/cooling",
        "anomaly_type": "spike",
        "severity": "high",
        "confidence": 0.95,
        "score": 6.25,
        "status": "firing",
        "fingerprint": "machine-temperature-01:spike",
        "labels": {"metric": "machine_temperature"},
        "annotations": {"summary": "temperature 6.25 robust z above the window median"},
    }
    fields.update(changes)
    return fields


def anomaly_event(**changes: Any) -> AnomalyEvent:
    return AnomalyEvent.model_validate(event_fields(**changes))


def asset_context(**changes: Any) -> AssetContext:
    """The asset of machine-temperature-01 as config/assets.yaml describes it."""
    fields: dict[str, Any] = {
        "entity": "machine-temperature-01",
        "owner": "plant-operations",
        "tier": "tier-1",
        "criticality": "high",
        "environment": "production",
        "change_freeze": False,
        "labels": {"site": "plant-north"},
        "updated_at": NOW,
    }
    fields.update(changes)
    return AssetContext.model_validate(fields)


def policy_data(**changes: Any) -> dict[str, Any]:
    """A policy document as YAML would load it, with three steps of which one depends on another."""
    data: dict[str, Any] = {
        "id": "cooling-spike",
        "description": "Contain cooling spikes.",
        "mode": "enforce",
        "match": {
            "anomaly_types": ["spike"],
            "subsystems": ["industrial/*"],
            "severities": ["medium", "high", "critical"],
        },
        "gates": {
            "min_confidence": 0.85,
            "require_approval_for": ["critical"],
            "environments": ["production"],
            "require_known_asset": True,
            "respect_change_freeze": True,
        },
        "review_timeout_s": 900,
        "plan": [
            {
                "id": "rollback-config",
                "executor": "demo-target",
                "action": "rollback-config",
                "parameters": {"to_version": "last-known-good"},
                "timeout_s": 120,
            },
            {
                "id": "open-ticket",
                "executor": "ticket",
                "action": "open-ticket",
                "target": "{subsystem}/{entity}",
                "parameters": {"queue": "plant-operations"},
                "timeout_s": 60,
            },
            {
                "id": "verify",
                "executor": "webhook",
                "action": "verify-temperature",
                "depends_on": ["rollback-config"],
            },
        ],
    }
    data.update(changes)
    return data


def active_policy(version: int = 1, **changes: Any) -> ActivePolicy:
    return ActivePolicy(PolicyDocument.model_validate(policy_data(**changes)), version)


def single_object(schema: SchemaVersion, record: dict[str, Any]) -> bytes:
    """Encode `record` in Avro single-object encoding with fastavro alone, skipping the models' checks."""
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01")  # the marker of the Avro specification, written here without the codec
    buffer.write(schema.fingerprint)
    schemaless_writer(buffer, schema.parsed, record)
    return buffer.getvalue()


def silence_record(**changes: Any) -> Silence:
    """Return a Silence in force at NOW that mutes industrial subsystems, changed by keyword arguments."""
    fields: dict[str, Any] = {
        "silence_id": "silence-1",
        "matchers": {"subsystem": "industrial/*"},
        "starts_at": NOW - timedelta(hours=1),
        "ends_at": NOW + timedelta(hours=1),
        "author": "operator",
        "reason": "pump maintenance",
        "created_at": NOW - timedelta(hours=1),
    }
    fields.update(changes)
    return Silence.model_validate(fields)
