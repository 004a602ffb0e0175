"""`mitigate audit trace` on a real broker, against the story a running worker wrote.

One anomaly gets an automated plan, and one goes to review and is approved
with a ReviewVerdict produced to reviews.verdicts. The test acts as the
executors: it sends a succeeded result for every command to action-results,
so both plans complete. Each story is then traced by event id, incident id and command id,
and must hold the same entries in the same order. A rejected event and an
unknown id are traced too.
"""

from __future__ import annotations

import argparse
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mitigate import cli
from mitigate.audit import AuditError, add_parser
from mitigate.enrichment import TRACE_HEADER
from mitigate.models import ActionCommand, ActionResult, ReviewVerdict
from tests.integration.conftest import Deployment
from tests.integration.test_pipeline_kafka import anomaly, decision_for, send_event

pytestmark = pytest.mark.kafka

POLICIES = """\
id: audit-rollback
match:
  subsystems: ['audit/*']
gates:
  min_confidence: 0.9
  require_approval_for: []
plan:
  - {id: rollback, executor: demo-target, action: rollback-config, parameters: {to_version: v1}}
  - {id: ticket, executor: ticket, action: open-ticket, depends_on: [rollback], parameters: {queue: operations}}
"""

# After the lineage of the event and its decision: the plan's two commands, each with its result.
PLAN_KINDS = ["command", "result", "command", "result", "plan-record"]
AUTO_KINDS = ["event", "intake", "enrich", "decision", "plan", *PLAN_KINDS]
REVIEW_KINDS = ["event", "intake", "enrich", "decision", "review", "verdict", "review-record", "review",
                *PLAN_KINDS]


def audit_parser() -> argparse.ArgumentParser:
    """The `mitigate` parser with the audit subcommand only, as cli.build_parser will add it."""
    parser = argparse.ArgumentParser(prog="mitigate")
    parser.add_argument("--bootstrap-servers")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(commands)
    return parser


@pytest.fixture
def deployment_env(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """Point the in-process CLI at the deployment's broker and topics."""
    monkeypatch.setenv("MITIGATE_BOOTSTRAP_SERVERS", deployment.bootstrap)
    monkeypatch.setenv("MITIGATE_TOPIC_PREFIX", deployment.topology.prefix)
    monkeypatch.delenv("MITIGATE_SCHEMA_REGISTRY_URL", raising=False)
    return deployment


def trace(identifier: str) -> list[dict[str, Any]]:
    """Run `mitigate audit trace ID --json`; return its entries."""
    args = audit_parser().parse_args(["audit", "trace", identifier, "--json"])
    out, err = io.StringIO(), io.StringIO()
    assert args.handler(args, out, err) == 0
    assert err.getvalue() == ""
    entries: list[dict[str, Any]] = json.loads(out.getvalue())
    return entries


def kinds(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["kind"] for entry in entries]


def answer_plan(deployment: Deployment, plan_id: str) -> list[ActionCommand]:
    """Act as the executors: send a result for each of the plan's two commands in turn, then wait for plan-completed."""
    commands = []
    for executor, output in (("demo-target", {"config_version": "v1"}), ("ticket", {"ticket": "OPS-1"})):
        record = deployment.wait_for(deployment.topology.actions(executor), "ActionCommand",
                                     lambda found: found["decision_id"] == plan_id)
        command = ActionCommand.model_validate(record)
        result = ActionResult(
            command_id=command.command_id, idempotency_key=command.idempotency_key,
            decision_id=command.decision_id, incident_id=command.incident_id, trace_id=command.trace_id,
            executor=command.executor, step_id=command.step_id, attempt=command.attempt, status="succeeded",
            finished_at=datetime.now(UTC), output=output,
        )
        deployment.produce(deployment.topology.action_results,
                           deployment.codec.encode("ActionResult", result.to_avro()),
                           key=(command.incident_id or "").encode(), headers=[(TRACE_HEADER, command.trace_id.encode())])
        commands.append(command)
    deployment.wait_for(deployment.topology.decisions, "DecisionRecord",
                        lambda found: found["plan_id"] == plan_id and found["reason_code"] == "plan-completed")
    return commands


def test_auto_plan_story(deployment_env: Deployment) -> None:
    deployment = deployment_env
    trace_id = f"audit-auto-{uuid.uuid4().hex[:8]}"
    event = anomaly(subsystem=f"audit/{uuid.uuid4().hex[:8]}", confidence=0.95)
    send_event(deployment, event, trace_id=trace_id)
    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "auto", decision["reason"]
    commands = answer_plan(deployment, decision["plan_id"])

    by_event = trace(event["event_id"])
    by_incident = trace(decision["incident_id"])
    by_command = trace(commands[1].command_id)

    assert kinds(by_event) == AUTO_KINDS
    assert by_incident == by_event
    assert by_command == by_event
    assert trace(trace_id) == by_event

    event_entry, intake, enrich, decided, plan, first, first_result, second, second_result, completed = by_event
    lineage = event_entry["data"]["lineage"]
    assert lineage["source_topic"] == deployment.topology.anomalies
    assert (lineage["detector_id"], lineage["detector_version"]) == ("robust-zscore", "1.0.0")
    assert lineage["writer_schema"].startswith("fingerprint:")
    assert intake["data"]["accepted"] is True
    assert enrich["data"]["asset"]["owner"] == "web-team"
    assert (decided["data"]["outcome"], decided["data"]["policy_id"], decided["data"]["policy_version"]) == (
        "auto", "audit-rollback", 1)
    assert "gate min-confidence: 0.95 against >= 0.9: passed" in decided["details"]
    assert plan["summary"] == f"plan {decision['plan_id']} started: 2 steps of policy audit-rollback v1"
    assert (first["data"]["executor"], first["data"]["action"], first["data"]["target"]) == (
        "demo-target", "rollback-config", "web-01")
    assert first["data"]["parameters"] == {"to_version": "v1"}
    assert first_result["data"]["output"] == {"config_version": "v1"}
    assert (second["data"]["step_id"], second["data"]["attempt"]) == ("ticket", 1)
    assert second_result["summary"] == "result succeeded from ticket, step ticket, attempt 1"
    assert completed["data"]["reason_code"] == "plan-completed"
    # The worker writes the plan a moment before the decision in one step, and the story lists the decision first.
    times = [datetime.fromisoformat(entry["time"]) for entry in by_event]
    assert times[3] >= times[0]
    assert abs(times[4] - times[3]) < timedelta(seconds=1)
    assert times[4:] == sorted(times[4:])


def test_review_story(deployment_env: Deployment) -> None:
    deployment = deployment_env
    event = anomaly(subsystem=f"audit/{uuid.uuid4().hex[:8]}", confidence=0.6)
    send_event(deployment, event)
    request = deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                                  lambda found: found["event_id"] == event["event_id"])
    verdict = ReviewVerdict(verdict_id=str(uuid.uuid4()), review_id=request["review_id"],
                            incident_id=request["incident_id"], revision=1, kind="approve", operator="alice",
                            issued_at=datetime.now(UTC), reason="the load is real")
    deployment.produce(deployment.topology.review_verdicts, deployment.codec.encode("ReviewVerdict", verdict.to_avro()),
                       key=request["incident_id"].encode(), headers=[(TRACE_HEADER, request["trace_id"].encode())])
    approved = deployment.wait_for(deployment.topology.decisions, "DecisionRecord",
                                   lambda found: found["verdict_id"] == verdict.verdict_id)
    assert approved["reason_code"] == "review-approved", approved["reason"]
    commands = answer_plan(deployment, approved["plan_id"])

    by_event = trace(event["event_id"])
    by_incident = trace(request["incident_id"])
    by_command = trace(commands[0].command_id)

    assert kinds(by_event) == REVIEW_KINDS
    assert by_incident == by_event
    assert by_command == by_event
    assert trace(request["review_id"]) == by_event

    decided, requested, answered, outcome, state = by_event[3:8]
    assert (decided["data"]["outcome"], decided["data"]["reason_code"]) == ("review", "gate-failed")
    assert "gate min-confidence: 0.6 against >= 0.9: FAILED" in decided["details"]
    assert requested["summary"].startswith(f"review {request['review_id']} requested (gate-failed): ")
    assert answered["summary"] == (f"verdict approve by alice on review {request['review_id']} revision 1: "
                                   "the load is real")
    assert (outcome["data"]["reason_code"], outcome["data"]["operators"]) == ("review-approved", ["alice"])
    assert state["data"]["status"] == "approved"
    assert by_event[8]["data"]["command_id"] == commands[0].command_id


def test_rejected_event_story(deployment_env: Deployment) -> None:
    deployment = deployment_env
    trace_id = f"audit-rejected-{uuid.uuid4().hex[:8]}"
    event = anomaly(subsystem=f"audit/{uuid.uuid4().hex[:8]}", event_time=datetime.now(UTC) + timedelta(days=1))
    send_event(deployment, event, trace_id=trace_id)
    deployment.wait_for(deployment.topology.dead_letters, "DeadLetter", lambda found: found["trace_id"] == trace_id)

    by_event = trace(event["event_id"])

    assert kinds(by_event) == ["dead-letter"]
    (letter,) = by_event
    assert letter["summary"].startswith("rejected at intake (event-time-future): event_time ")
    assert letter["data"]["rejected_event"]["event_id"] == event["event_id"]
    assert letter["data"]["source_topic"] == deployment.topology.anomalies
    assert trace(trace_id) == by_event


def test_unknown_id_exit_1(deployment_env: Deployment, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(uuid.uuid4())
    monkeypatch.setattr(cli, "build_parser", audit_parser)

    code = cli.main(["audit", "trace", missing])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"mitigate: error: no message mentions {missing} in "
                          f"{deployment_env.topology.dead_letters}, {deployment_env.topology.decisions}, ")
    assert err.endswith("; check the id, or whether the topics' retention has dropped it\n")


def test_unknown_id_raises(deployment_env: Deployment) -> None:
    args = audit_parser().parse_args(["audit", "trace", "no-such-id"])

    with pytest.raises(AuditError, match="no message mentions no-such-id in "):
        args.handler(args, io.StringIO(), io.StringIO())
