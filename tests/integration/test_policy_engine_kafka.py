"""The policy engine on a real broker: storms, flapping, canary, silences and policy governance."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.decision import canary_bucket
from mitigate.report import about_event
from tests.integration.conftest import TEST_AUTOMATION, Deployment, run_mitigate
from tests.integration.test_pipeline_kafka import anomaly, decision_for

pytestmark = pytest.mark.kafka

POLICIES = """\
id: storm-auto
match:
  anomaly_types: ["storm-*"]
  subsystems: ["storm/*"]
gates:
  min_confidence: 0.5
  require_approval_for: []
  require_known_asset: false
plan:
  - id: scale-out
    executor: demo-target
    action: scale-out
  - id: open-ticket
    executor: ticket
    action: open-ticket
---
id: canary-half
mode: canary
canary_fraction: 0.5
match:
  subsystems: ["canary/*"]
gates:
  min_confidence: 0.5
  require_approval_for: []
  require_known_asset: false
plan:
  - id: restart
    executor: demo-target
    action: restart
---
id: flap-auto
match:
  subsystems: ["flap/*"]
gates:
  min_confidence: 0.5
  require_approval_for: []
  require_known_asset: false
plan:
  - id: restart
    executor: demo-target
    action: restart
"""

ASSETS = """\
assets:
  - entity: web-01
    owner: web-team
    tier: tier-1
    criticality: high
    environment: production
"""

# The canary test needs room for every enforced incident; the storm test needs the default budget.
AUTOMATION = TEST_AUTOMATION.replace("  max_commands: 10\n", "  max_commands: 10\n  subsystems: {'canary/*': 1000}\n")

STORM_SIZE = 10_000
STORM_TYPES = 50


def produce_events(deployment: Deployment, records: list[dict[str, Any]]) -> None:
    from mitigate.kafka import create_producer, flush_or_raise

    producer = create_producer(deployment.bootstrap)
    for record in records:
        value = deployment.codec.encode("AnomalyEvent", record)
        producer.produce(deployment.topology.anomalies, key=record["entity"].encode(), value=value)
        producer.poll(0)
    flush_or_raise(producer, timeout_s=120)


def decisions_where(deployment: Deployment, predicate: Any, count: int, timeout_s: float) -> list[dict[str, Any]]:
    """Read the decisions topic until `count` records satisfy `predicate`; return those records."""
    matching: list[dict[str, Any]] = []
    seen = 0

    def enough(messages: list[Any]) -> bool:
        nonlocal seen
        for message in messages[seen:]:
            record = deployment.decode(message, "DecisionRecord")
            if predicate(record):
                matching.append(record)
        seen = len(messages)
        return len(matching) >= count

    deployment.read(deployment.topology.decisions, enough, timeout_s)
    return matching


def is_plan_progress(record: dict[str, Any]) -> bool:
    """Tell the orchestrate agent's records (plan progress, reviews) from decisions about events."""
    return not about_event(record["reason_code"])


def mitigate_env(deployment: Deployment) -> dict[str, str]:
    return {**os.environ, "MITIGATE_BOOTSTRAP_SERVERS": deployment.bootstrap,
            "MITIGATE_TOPIC_PREFIX": deployment.topology.prefix}


def test_storm_stays_within_budget(deployment: Deployment) -> None:
    subsystem = f"storm/{uuid.uuid4().hex[:8]}"
    records = [
        anomaly(subsystem=subsystem, anomaly_type=f"storm-{index % STORM_TYPES}",
                fingerprint=f"{subsystem}-{index % 2000}", entity=f"node-{index % 500}")
        for index in range(STORM_SIZE)
    ]
    started = time.monotonic()
    produce_events(deployment, records)
    produced_in = time.monotonic() - started

    decisions = decisions_where(deployment, lambda record: record["subsystem"] == subsystem
                                and not is_plan_progress(record), STORM_SIZE, 600)
    outcomes = Counter(record["outcome"] for record in decisions)
    incidents = {record["incident_id"] for record in decisions}
    commands = sum(len(record["command_ids"]) for record in decisions)
    limited = [record for record in decisions if record["reason_code"] == "limit-reached"]

    assert produced_in < 60
    assert len(decisions) == STORM_SIZE
    assert len(incidents) == STORM_TYPES
    assert commands <= 10
    assert outcomes["auto"] == 5
    assert outcomes["review"] == STORM_TYPES - 5
    assert outcomes["suppress"] == STORM_SIZE - STORM_TYPES
    assert len(limited) == STORM_TYPES - 5
    assert "subsystem-budget" in limited[0]["reason"]


def test_flapping_signal_stops_acting(deployment: Deployment) -> None:
    subsystem = f"flap/{uuid.uuid4().hex[:8]}"
    fingerprint = f"{subsystem}-fp"
    start = datetime.now(UTC)
    records = []
    for index in range(5):
        for status in ("firing", "resolved"):
            moment = start + timedelta(seconds=2 * index + (status == "resolved"))
            records.append(anomaly(subsystem=subsystem, fingerprint=fingerprint, status=status, event_time=moment))
    produce_events(deployment, records)

    # The orchestrator's records of the two plans carry the same signal fields; count decisions of events only.
    decisions = decisions_where(deployment, lambda record: record["subsystem"] == subsystem
                                and not is_plan_progress(record), len(records), 60)
    firing = [record for record in decisions if record["signal_status"] == "firing"]

    assert [record["outcome"] for record in firing] == ["auto", "auto", "review", "suppress", "suppress"]
    assert firing[2]["reason_code"] == "flapping"
    assert [record["reason_code"] for record in firing[3:]] == ["flapping", "flapping"]


def test_canary_splits_deterministically(deployment: Deployment) -> None:
    subsystem = f"canary/{uuid.uuid4().hex[:8]}"
    records = [anomaly(subsystem=subsystem, anomaly_type=f"type-{index}") for index in range(40)]
    produce_events(deployment, records)

    decisions = decisions_where(deployment, lambda record: record["subsystem"] == subsystem
                                and not is_plan_progress(record), len(records), 60)
    outcomes = Counter(record["outcome"] for record in decisions)

    assert outcomes["auto"] > 0
    assert outcomes["shadow"] > 0
    for record in decisions:
        expected = "auto" if canary_bucket(record["incident_id"]) < 0.5 else "shadow"
        assert record["outcome"] == expected, record["reason"]
    shadowed = [record for record in decisions if record["outcome"] == "shadow"]
    assert shadowed[0]["command_ids"] == []
    assert "canary: shadow for this incident" in shadowed[0]["reason"]


def test_silence_mutes_then_expires(deployment: Deployment) -> None:
    subsystem = f"compute/silenced-{uuid.uuid4().hex[:8]}"
    output = run_mitigate("silence", "add", f"subsystem={subsystem}", "--duration", "1h",
                          "--reason", "load test", "--author", "integration-test", env=mitigate_env(deployment))
    silence_id = output.split()[1]

    muted = None
    for _ in range(20):  # the worker applies the silence once its reference reader has read it
        event = anomaly(subsystem=subsystem, anomaly_type=f"saturation-{uuid.uuid4().hex[:4]}")
        produce_events(deployment, [event])
        muted = decision_for(deployment, event["event_id"])
        if muted["reason_code"] == "silenced":
            break
    assert muted is not None
    assert muted["outcome"] == "suppress"
    assert muted["reason_code"] == "silenced"
    assert muted["silence_id"] == silence_id

    listing = run_mitigate("silence", "list", env=mitigate_env(deployment))
    assert silence_id in listing
    assert "load test" in listing
    run_mitigate("silence", "expire", silence_id, "--author", "integration-test", env=mitigate_env(deployment))
    for _ in range(20):
        event = anomaly(subsystem=subsystem, anomaly_type=f"other-{uuid.uuid4().hex[:4]}")
        produce_events(deployment, [event])
        after = decision_for(deployment, event["event_id"])
        if after["reason_code"] != "silenced":
            break
    assert after["reason_code"] == "no-policy"


def test_publish_rollback_and_restart(deployment: Deployment, tmp_path: Path) -> None:
    subsystem = f"governed/{uuid.uuid4().hex[:8]}"
    policy = tmp_path / "governed.yaml"
    document = (
        "id: governed\nmatch:\n  subsystems: ['governed/*']\n"
        "gates:\n  min_confidence: {confidence}\n  require_approval_for: []\n  require_known_asset: false\n"
        "plan:\n  - id: restart\n    executor: demo-target\n    action: restart\n"
    )
    env = mitigate_env(deployment)

    def decide() -> dict[str, Any]:
        event = anomaly(subsystem=subsystem, anomaly_type=f"t-{uuid.uuid4().hex[:6]}", confidence=0.95)
        produce_events(deployment, [event])
        return decision_for(deployment, event["event_id"], timeout_s=60)

    def wait_for_version(version: int) -> dict[str, Any]:
        for _ in range(30):
            decision = decide()
            if decision["policy_version"] == version:
                return decision
        pytest.fail(f"the worker never used version {version} of the policy")

    policy.write_text(document.format(confidence=0.9))
    assert "published  governed v1" in run_mitigate("policy", "publish", str(policy), env=env)
    assert wait_for_version(1)["outcome"] == "auto"

    policy.write_text(document.format(confidence=0.99))
    assert "published  governed v2" in run_mitigate("policy", "publish", str(policy), env=env)
    second = wait_for_version(2)
    assert second["outcome"] == "review"
    assert second["reason_code"] == "gate-failed"

    diff = run_mitigate("policy", "diff", "governed", "1", "2", env=env)
    assert "-  min_confidence: 0.9" in diff
    assert "+  min_confidence: 0.99" in diff
    assert "published  governed v3 (content of v1)" in run_mitigate(
        "policy", "rollback", "governed", "--to", "1", "--author", "integration-test", env=env)
    assert wait_for_version(3)["outcome"] == "auto"
    history = run_mitigate("policy", "history", "governed", env=env)
    assert "rollback to version 1" in history

    deployment.restart()
    after_restart = decide()
    assert after_restart["policy_version"] == 3
    assert after_restart["outcome"] == "auto"
