"""Human review on a real broker: `mitigate review` against a running worker.

Every scenario sends a low-confidence anomaly that the policy sends to review,
answers the request with the command-line tool as an operator would, and then
reads the topics: the request's published state, the decision records that
name each verdict, and the commands on the executor topics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from mitigate.models import ReviewVerdict
from tests.conftest import ROOT
from tests.integration.conftest import TEST_AUTOMATION, Deployment
from tests.integration.test_pipeline_kafka import anomaly, send_event

pytestmark = pytest.mark.kafka


def _policy(name: str, extra: str = "") -> str:
    return (f"id: {name}\nmatch:\n  subsystems: ['{name}/*']\n"
            "gates:\n  min_confidence: 0.9\n  require_approval_for: []\n  require_known_asset: false\n"
            f"{extra}"
            "plan:\n"
            "  - {id: rollback, executor: demo-target, action: rollback-config, parameters: {to_version: v1}}\n"
            "  - {id: throttle, executor: demo-target, action: set-traffic-limit, depends_on: [rollback],\n"
            "     parameters: {limit_percent: '50'}}\n")


POLICIES = "---\n".join([
    _policy("single"),
    _policy("pair", "review: {quorum: 2}\n"),
    _policy("brief", "review_timeout_s: 4\n"),
])

AUTOMATION = TEST_AUTOMATION + """\
reviews:
  escalation: {executor: ticket, action: open-ticket, parameters: {queue: reviews}}
  verdict_wait: 5s
"""


def review_env(deployment: Deployment) -> dict[str, str]:
    return {key: value for key, value in deployment.env.items() if key != "MITIGATE_OPERATOR"}


def review(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mitigate.cli", "review", *args], env=review_env(deployment),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def request_for(deployment: Deployment, policy: str, **changes: Any) -> dict[str, Any]:
    """Send an anomaly that `policy` sends to review; return its first published request."""
    event = anomaly(subsystem=f"{policy}/{uuid.uuid4().hex[:8]}", confidence=0.6, **changes)
    send_event(deployment, event)
    return deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                               lambda record: record["event_id"] == event["event_id"])


def state_of(deployment: Deployment, review_id: str, status: str, timeout_s: float = 30.0) -> dict[str, Any]:
    return deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                               lambda record: record["review_id"] == review_id and record["status"] == status,
                               timeout_s)


def commands_of(deployment: Deployment, plan_id: str, count: int, executor: str = "demo-target") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough(messages: list[Any]) -> bool:
        found[:] = [record for record in (deployment.decode(message, "ActionCommand") for message in messages)
                    if record["decision_id"] == plan_id]
        return len(found) >= count

    deployment.read(deployment.topology.actions(executor), enough)
    return found


def incident_commands(deployment: Deployment, incident_id: str) -> list[dict[str, Any]]:
    messages = deployment.read_all(deployment.topology.actions("demo-target"))
    return [record for record in (deployment.decode(message, "ActionCommand") for message in messages)
            if record["incident_id"] == incident_id]


def records_of(deployment: Deployment, review_id: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough(messages: list[Any]) -> bool:
        found[:] = [record for record in (deployment.decode(message, "DecisionRecord") for message in messages)
                    if record["review_id"] == review_id and record["reason_code"] != "gate-failed"]
        return len(found) >= count

    deployment.read(deployment.topology.decisions, enough)
    return found


def test_request_lists_and_shows(deployment: Deployment) -> None:
    request = request_for(deployment, "single")

    listed = review(deployment, "list", "--json", "--subsystem", request["subsystem"])
    shown = review(deployment, "show", request["review_id"][:8])

    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert (entry["review_id"], entry["status"], entry["quorum"]) == (request["review_id"], "pending", 1)
    assert [step["step_id"] for step in entry["steps"]] == ["rollback", "throttle"]
    assert shown.returncode == 0, shown.stderr
    assert "Why       gate-failed: gates failed: min-confidence 0.6 (needs >= 0.9)" in shown.stdout
    assert "  1. rollback: demo-target/rollback-config on web-01  to_version=v1" in shown.stdout


def test_approve_runs_plan(deployment: Deployment) -> None:
    request = request_for(deployment, "single")

    answer = review(deployment, "approve", request["review_id"], "--operator", "bob", "--reason", "seen on console")

    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("review-approved: approved by bob (quorum 1): seen on console; plan ")
    (record,) = records_of(deployment, request["review_id"], 1)
    assert (record["outcome"], record["operators"]) == ("auto", ["bob"])
    (command,) = commands_of(deployment, record["plan_id"], 1)
    assert (command["step_id"], command["incident_id"]) == ("rollback", request["incident_id"])
    assert command["command_id"] in record["command_ids"]
    assert state_of(deployment, request["review_id"], "approved")["approvals"][0]["operator"] == "bob"


def test_modify_runs_changed_plan(deployment: Deployment) -> None:
    request = request_for(deployment, "single")

    answer = review(deployment, "modify", request["review_id"], "--operator", "carol",
                    "--set", "rollback.to_version=v0", "--drop", "throttle")

    assert answer.returncode == 0, answer.stderr
    assert "review-modified: modified by carol" in answer.stdout
    state = state_of(deployment, request["review_id"], "modified")
    assert state["revision"] == 2
    assert [step["step_id"] for step in state["steps"]] == ["rollback"]
    (record,) = records_of(deployment, request["review_id"], 1)
    (command,) = commands_of(deployment, record["plan_id"], 1)
    assert command["parameters"] == {"to_version": "v0"}


def test_modify_invalid_change_refused(deployment: Deployment) -> None:
    request = request_for(deployment, "single")

    answer = review(deployment, "modify", request["review_id"], "--operator", "carol", "--drop", "rollback")

    assert answer.returncode == 1
    assert "step 'throttle' depends on 'rollback'; drop 'throttle' as well, or keep 'rollback'" in answer.stderr


def test_veto_closes_without_action(deployment: Deployment) -> None:
    request = request_for(deployment, "single")

    answer = review(deployment, "veto", request["review_id"], "--operator", "dave", "--reason", "sensor test")

    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("review-vetoed: vetoed by dave: sensor test; the incident closes without action")
    assert state_of(deployment, request["review_id"], "vetoed")["status_reason"].startswith("vetoed by dave")
    assert incident_commands(deployment, request["incident_id"]) == []


def test_quorum_of_two(deployment: Deployment) -> None:
    request = request_for(deployment, "pair")

    first = review(deployment, "approve", request["review_id"], "--operator", "bob")
    again = review(deployment, "approve", request["review_id"], "--operator", "bob")
    second = review(deployment, "approve", request["review_id"], "--operator", "carol")

    assert first.returncode == 0, first.stderr
    assert first.stdout == "review-approval-recorded: approval 1 of 2 from bob; waiting for 1 more operator\n"
    assert again.returncode == 1
    assert "bob approved revision 1 already; the quorum of 2 needs distinct operators" in again.stderr
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("review-approved: approved by bob, carol (quorum 2)")
    records = records_of(deployment, request["review_id"], 3)
    started = next(record for record in records if record["reason_code"] == "review-approved")
    assert len(commands_of(deployment, started["plan_id"], 1)) == 1


def test_operator_without_right(deployment: Deployment) -> None:
    request = request_for(deployment, "single", severity="critical")

    refused = review(deployment, "approve", request["review_id"], "--operator", "bob")
    listed = review(deployment, "list", "--json", "--subsystem", request["subsystem"])
    allowed = review(deployment, "approve", request["review_id"], "--operator", "alice")

    assert refused.returncode == 1
    assert ("operator bob may not approve this request: role responder lacks severity critical "
            "(allows low, medium, high); operators who may: alice; the request stays pending") in refused.stderr
    assert json.loads(listed.stdout)[0]["status"] == "pending"
    assert allowed.returncode == 0, allowed.stderr
    rejected = next(record for record in records_of(deployment, request["review_id"], 2)
                    if record["reason_code"] == "verdict-rejected")
    assert rejected["operators"] == ["bob"]


def test_expired_request(deployment: Deployment) -> None:
    request = request_for(deployment, "brief")

    expired = state_of(deployment, request["review_id"], "expired", timeout_s=30)
    late = review(deployment, "approve", request["review_id"], "--operator", "bob")

    assert expired["status_reason"].startswith("no verdict by the deadline")
    (record,) = [record for record in records_of(deployment, request["review_id"], 2)
                 if record["reason_code"] == "review-expired"]
    (escalation,) = commands_of(deployment, record["plan_id"], 1, executor="ticket")
    assert (escalation["action"], escalation["parameters"]["queue"]) == ("open-ticket", "reviews")
    assert late.returncode == 1
    assert f"review {request['review_id']} is expired at " in late.stderr
    assert incident_commands(deployment, request["incident_id"]) == []


def test_two_operators_at_once(deployment: Deployment) -> None:
    # Both verdicts answer revision 1 and reach the pipeline together: the first is
    # applied, the second rejected with the reason.
    request = request_for(deployment, "single")
    verdicts = [
        ReviewVerdict(verdict_id=str(uuid.uuid4()), review_id=request["review_id"],
                      incident_id=request["incident_id"], revision=1, kind=kind, operator=operator,
                      issued_at=datetime.now(UTC), reason=reason)
        for kind, operator, reason in (("approve", "bob", ""), ("veto", "carol", "too risky"))
    ]
    for verdict in verdicts:
        deployment.produce(deployment.topology.review_verdicts, deployment.codec.encode("ReviewVerdict", verdict.to_avro()),
                           key=request["incident_id"].encode())

    records = {record["verdict_id"]: record for record in records_of(deployment, request["review_id"], 2)}
    first, second = records[verdicts[0].verdict_id], records[verdicts[1].verdict_id]

    assert first["reason_code"] == "review-approved"
    assert second["reason_code"] == "verdict-rejected"
    assert second["reason"].startswith(f"veto by carol rejected: review {request['review_id']} is approved at ")
    assert second["reason"].endswith("it takes no more verdicts")


def test_resolution_closes_request(deployment: Deployment) -> None:
    event = anomaly(subsystem=f"single/{uuid.uuid4().hex[:8]}", confidence=0.6)
    send_event(deployment, event)
    request = deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                                  lambda record: record["event_id"] == event["event_id"])

    send_event(deployment, {**event, "event_id": str(uuid.uuid4()), "status": "resolved",
                            "event_time": datetime.now(UTC)})

    closed = state_of(deployment, request["review_id"], "closed")
    assert closed["status_reason"].startswith("closed without action: incident resolved by signal")


def test_watch_prints_new_request(deployment: Deployment) -> None:
    watcher = subprocess.Popen([sys.executable, "-m", "mitigate.cli", "review", "watch", "--json", "--new-only",
                                "--subsystem", "single/watched-*", "--max", "1", "--for", "60s"],
                               env=review_env(deployment), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    time.sleep(4)  # the watcher starts at the end of the topic
    event = anomaly(subsystem=f"single/watched-{uuid.uuid4().hex[:6]}", confidence=0.6)
    send_event(deployment, event)

    out, err = watcher.communicate(timeout=90)

    assert watcher.returncode == 0, err
    printed = json.loads(out)
    assert (printed["event_id"], printed["status"]) == (event["event_id"], "pending")


def test_pending_approval_survives_restart(deployment: Deployment) -> None:
    request = request_for(deployment, "pair")
    first = review(deployment, "approve", request["review_id"], "--operator", "bob")
    assert first.returncode == 0, first.stderr

    deployment.restart()
    second = review(deployment, "approve", request["review_id"], "--operator", "alice")

    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("review-approved: approved by bob, alice (quorum 2)")
