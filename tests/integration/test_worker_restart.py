"""A restarted worker recovers its policy and asset tables and goes on deciding."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import Deployment
from tests.integration.test_pipeline_kafka import anomaly, decision_for, send_event

pytestmark = pytest.mark.kafka


def test_restart_recovers_tables(deployment: Deployment) -> None:
    first = anomaly(event_id=str(uuid.uuid4()))
    send_event(deployment, first)
    assert decision_for(deployment, first["event_id"])["outcome"] == "auto"

    deployment.restart()
    state = json.loads(Path(deployment.env["MITIGATE_READY_FILE"]).read_text())
    second = anomaly()
    send_event(deployment, second)

    assert state["policies"] == 2
    assert state["assets"] == 2
    decision = decision_for(deployment, second["event_id"], timeout_s=60)
    assert decision["outcome"] == "auto"
    assert decision["asset"]["owner"] == "web-team"


def test_restart_keeps_incidents(deployment: Deployment) -> None:
    first = anomaly()
    send_event(deployment, first)
    assert decision_for(deployment, first["event_id"])["outcome"] == "auto"

    deployment.restart()
    repeat = anomaly(subsystem=first["subsystem"], fingerprint=first["fingerprint"])
    send_event(deployment, repeat)

    decision = decision_for(deployment, repeat["event_id"], timeout_s=60)
    assert decision["outcome"] == "suppress"
    assert decision["reason_code"] == "duplicate"
    assert decision["incident_signals"] == 2


def test_restart_does_not_reprocess(deployment: Deployment) -> None:
    decisions = deployment.read(deployment.topology.decisions, lambda messages: len(messages) >= 2)
    event_ids = [deployment.decode(message, "DecisionRecord")["event_id"] for message in decisions]

    assert len(event_ids) == len(set(event_ids))
