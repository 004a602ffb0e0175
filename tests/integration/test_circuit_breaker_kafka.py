"""The circuit breaker on a real broker: failing executor results trip automation to review-only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from mitigate.kafka import create_producer, flush_or_raise
from mitigate.models import ActionResult
from tests.integration.conftest import Deployment
from tests.integration.test_pipeline_kafka import anomaly, decision_for, send_event

pytestmark = pytest.mark.kafka

AUTOMATION = """\
circuit_breaker:
  window: 5m
  max_commands: 1000
  max_failure_rate: 0.5
  min_results: 6
  cool_down: 15m
"""


def send_results(deployment: Deployment, statuses: list[str]) -> None:
    producer = create_producer(deployment.bootstrap)
    for index, status in enumerate(statuses):
        result = ActionResult(
            command_id=str(uuid.uuid4()), idempotency_key=str(uuid.uuid4()), decision_id=str(uuid.uuid4()),
            incident_id=f"incident-{index}", trace_id=uuid.uuid4().hex, executor="demo-target", step_id="scale-out",
            status=status, reason="target unreachable" if status == "failed" else "",  # type: ignore[arg-type]
            finished_at=datetime.now(UTC),
        )
        producer.produce(deployment.topology.action_results, key=result.incident_id.encode(),
                         value=deployment.codec.encode("ActionResult", result.to_avro()))
    flush_or_raise(producer)


def test_failures_trip_breaker(deployment: Deployment) -> None:
    before = anomaly()
    send_event(deployment, before)
    assert decision_for(deployment, before["event_id"])["outcome"] == "auto"

    send_results(deployment, ["failed"] * 5 + ["succeeded", "skipped", "rejected"])

    tripped = None
    for _ in range(30):  # results reach the breaker's table asynchronously
        event = anomaly()
        send_event(deployment, event)
        tripped = decision_for(deployment, event["event_id"])
        if tripped["outcome"] != "auto":
            break
    assert tripped is not None
    assert tripped["outcome"] == "review"
    assert tripped["reason_code"] == "limit-reached"
    breaker = next(gate for gate in tripped["gates"] if gate["name"] == "circuit-breaker")
    assert breaker["passed"] is False
    assert "5 of 6 results failed" in breaker["value"]

    later = anomaly()
    send_event(deployment, later)
    still_open = decision_for(deployment, later["event_id"])
    assert still_open["outcome"] == "review"
    assert "cool-down left" in next(g for g in still_open["gates"] if g["name"] == "circuit-breaker")["value"]
