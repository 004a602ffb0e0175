"""The pipeline end to end on a real Kafka broker: what arrives on every output topic."""

from __future__ import annotations

import io
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from mitigate.codec import SINGLE_OBJECT_MARKER
from tests.integration.conftest import Deployment, run_mitigate

pytestmark = pytest.mark.kafka


def anomaly(**changes: Any) -> dict[str, Any]:
    """Return an AnomalyEvent record that opens an incident of its own.

    The pipeline correlates signals of one subsystem and anomaly type into one
    incident, so each call gets its own subsystem and fingerprint.
    """
    unique = uuid.uuid4().hex[:8]
    record: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "detector_id": "robust-zscore",
        "detector_version": "1.0.0",
        "event_time": datetime.now(UTC),
        "entity": "web-01",
        "subsystem": f"compute/web-{unique}",
        "anomaly_type": "saturation",
        "severity": "high",
        "confidence": 0.95,
        "score": 9.1,
        "status": "firing",
        "fingerprint": f"web-01-cpu-{unique}",
        "labels": {"metric": "cpu_usage"},
        "annotations": {},
    }
    record.update(changes)
    return record


def send_event(deployment: Deployment, record: dict[str, Any], trace_id: str | None = None) -> None:
    value = deployment.codec.encode("AnomalyEvent", record)
    headers = [("trace-id", trace_id.encode())] if trace_id else []
    deployment.produce(deployment.topology.anomalies, value, key=record["entity"].encode(), headers=headers)


def decision_for(deployment: Deployment, event_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    return deployment.wait_for(deployment.topology.decisions, "DecisionRecord",
                               lambda record: record["event_id"] == event_id, timeout_s)


def dead_letter_for(deployment: Deployment, value: bytes) -> dict[str, Any]:
    return deployment.wait_for(deployment.topology.dead_letters, "DeadLetter",
                               lambda record: record["value"] == value)


def test_covered_event_sends_commands(deployment: Deployment) -> None:
    event = anomaly()
    send_event(deployment, event, trace_id="trace-covered-1")

    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "auto"
    assert decision["reason_code"] == "policy-matched"
    assert decision["policy_id"] == "test-cpu-saturation"
    assert decision["policy_version"] == 1
    assert decision["trace_id"] == "trace-covered-1"
    assert len(decision["command_ids"]) == 2
    assert {gate["name"] for gate in decision["gates"]} >= {"min-confidence", "approval-severity", "known-asset"}
    assert all(gate["passed"] for gate in decision["gates"])
    assert decision["asset"]["owner"] == "web-team"
    assert decision["lineage"]["source_topic"] == deployment.topology.anomalies
    assert decision["lineage"]["detector_id"] == "robust-zscore"

    command = deployment.wait_for(deployment.topology.actions("demo-target"), "ActionCommand",
                                  lambda record: record["decision_id"] == decision["decision_id"])
    assert command["action"] == "scale-out"
    assert command["target"] == "web-01"
    assert command["parameters"] == {"replicas": "2"}
    assert command["policy_version"] == 1
    assert command["command_id"] in decision["command_ids"]
    ticket = deployment.wait_for(deployment.topology.actions("ticket"), "ActionCommand",
                                 lambda record: record["decision_id"] == decision["decision_id"])
    assert ticket["action"] == "open-ticket"


def test_low_confidence_goes_to_review(deployment: Deployment) -> None:
    event = anomaly(confidence=0.55)
    send_event(deployment, event)

    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "review"
    assert decision["reason_code"] == "gate-failed"
    assert "min-confidence 0.55 (needs >= 0.8)" in decision["reason"]
    assert decision["command_ids"] == []

    review = deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                                 lambda record: record["event_id"] == event["event_id"])
    assert review["review_id"] == decision["review_id"]
    assert [step["step_id"] for step in review["recommended_plan"]] == ["scale-out", "open-ticket"]
    assert review["deadline"] > review["created_at"]


def test_uncovered_event_goes_to_review(deployment: Deployment) -> None:
    event = anomaly(subsystem=f"storage/ceph-{uuid.uuid4().hex[:8]}", anomaly_type="latency")
    send_event(deployment, event)

    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "review"
    assert decision["reason_code"] == "no-policy"
    assert decision["policy_id"] is None
    review = deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                                 lambda record: record["event_id"] == event["event_id"])
    assert review["recommended_plan"] == []


def test_change_freeze_blocks_automation(deployment: Deployment) -> None:
    event = anomaly(entity="web-frozen")
    send_event(deployment, event)

    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "review"
    assert "change-freeze frozen" in decision["reason"]


def test_shadow_policy_sends_nothing(deployment: Deployment) -> None:
    event = anomaly(severity="medium", confidence=0.7)
    send_event(deployment, event)

    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "shadow"
    assert decision["policy_id"] == "test-cpu-shadow"
    assert decision["command_ids"] == []
    assert "would send 1 command: ticket/open-ticket" in decision["reason"]


def test_resolved_signal_is_suppressed(deployment: Deployment) -> None:
    event = anomaly(status="resolved")
    send_event(deployment, event)

    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "suppress"
    assert decision["reason_code"] == "signal-resolved"


def test_malformed_bytes_become_dead_letter(deployment: Deployment) -> None:
    value = b'{"entity": "web-01", "note": "json, not avro"} ' + uuid.uuid4().bytes
    headers = [("origin", b"integration-test")]
    deployment.produce(deployment.topology.anomalies, value, key=b"web-01", headers=headers)

    letter = dead_letter_for(deployment, value)
    assert letter["reason_code"] == "unknown-wire-format"
    assert letter["stage"] == "intake"
    assert letter["key"] == b"web-01"
    assert letter["headers"] == [{"key": "origin", "value": b"integration-test"}]
    assert letter["source_topic"] == deployment.topology.anomalies
    assert 0 <= letter["source_partition"] < deployment.topology.partitions
    assert letter["source_offset"] >= 0


def test_future_event_becomes_dead_letter(deployment: Deployment) -> None:
    event = anomaly(event_time=datetime.now(UTC) + timedelta(days=2))
    value = deployment.codec.encode("AnomalyEvent", event)
    deployment.produce(deployment.topology.anomalies, value, key=b"web-01")

    letter = dead_letter_for(deployment, value)
    assert letter["reason_code"] == "event-time-future"
    assert "ahead of the pipeline clock" in letter["reason"]
    assert letter["writer_schema"].startswith("fingerprint:")


def test_out_of_range_field_becomes_dead_letter(deployment: Deployment) -> None:
    # The model refuses confidence 1.5, so the bytes are written with fastavro directly.
    schema = deployment.codec.repository.current("AnomalyEvent")
    buffer = io.BytesIO()
    buffer.write(SINGLE_OBJECT_MARKER + schema.fingerprint)
    schemaless_writer(buffer, schema.parsed, anomaly(confidence=1.5))
    value = buffer.getvalue()
    deployment.produce(deployment.topology.anomalies, value, key=b"web-01")

    letter = dead_letter_for(deployment, value)
    assert letter["reason_code"] == "invalid-field"
    assert "confidence" in letter["reason"]


def test_registry_framing_without_registry_is_dead_letter(deployment: Deployment) -> None:
    value = b"\x00\x00\x00\x00\x07" + uuid.uuid4().bytes
    deployment.produce(deployment.topology.anomalies, value, key=b"web-01")

    letter = dead_letter_for(deployment, value)
    assert letter["reason_code"] == "registry-unavailable"
    assert letter["writer_schema"] == "registry:7"


def test_worker_survives_bad_input(deployment: Deployment) -> None:
    bad_values = [b"", b"\xc3\x01", b"\xc3\x01" + b"\xff" * 8, uuid.uuid4().bytes * 3]
    for value in bad_values:
        deployment.produce(deployment.topology.anomalies, value, key=b"web-01")
    deployment.produce(deployment.topology.anomalies, None, key=b"web-01")
    good = anomaly()
    send_event(deployment, good)

    decision = decision_for(deployment, good["event_id"])
    assert decision["outcome"] == "auto"
    assert deployment.alive()
    letters = deployment.read(deployment.topology.dead_letters, lambda messages: len(messages) >= len(bad_values) + 1)
    codes = {deployment.decode(message, "DeadLetter")["reason_code"] for message in letters}
    assert {"empty-message", "undecodable", "unknown-schema"} <= codes


def test_policy_update_takes_effect(deployment: Deployment, tmp_path: Path) -> None:
    policy = tmp_path / "storage.yaml"
    policy.write_text(
        "id: test-storage-latency\nmatch:\n  anomaly_types: [latency]\n  subsystems: [storage/*]\n"
        "gates:\n  min_confidence: 0.5\n  require_known_asset: false\n  require_approval_for: []\n"
        "plan:\n  - id: page\n    executor: webhook\n    action: notify\n"
    )
    env = {**os.environ, "MITIGATE_BOOTSTRAP_SERVERS": deployment.bootstrap,
           "MITIGATE_TOPIC_PREFIX": deployment.topology.prefix}
    output = run_mitigate("policy", "publish", str(policy), "--author", "integration-test", env=env)
    assert "published  test-storage-latency v1" in output

    # The worker applies the policy once its reference reader has read it; an event
    # that arrives before that goes to review, the conservative default.
    for _ in range(20):
        event = anomaly(entity="db-09", subsystem=f"storage/ceph-{uuid.uuid4().hex[:8]}", anomaly_type="latency")
        send_event(deployment, event)
        decision = decision_for(deployment, event["event_id"])
        if decision["outcome"] == "auto":
            break
    assert decision["policy_id"] == "test-storage-latency"
    assert decision["outcome"] == "auto"


def test_report_accounts_for_every_anomaly(deployment: Deployment) -> None:
    env = {**os.environ, "MITIGATE_BOOTSTRAP_SERVERS": deployment.bootstrap,
           "MITIGATE_TOPIC_PREFIX": deployment.topology.prefix}
    output = run_mitigate("report", "--timeout", "60", env=env)

    assert "check: each anomaly has one decision or dead letter: ok" in output
    assert "check: commands named by decisions are on the action topics: ok" in output
    assert "check: one review request per review decision or failed plan: ok" in output
