"""Plans on a real broker: dependencies, retries, compensation, timeouts and a killed worker.

A scripted executor replaces the real executor services here. It consumes the
command topics, deduplicates by command id as every executor must, and replies
to each action as its script says, so each scenario is exact and repeatable.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer

from mitigate.kafka import client_config, create_producer
from mitigate.models import ActionCommand, ActionResult
from tests.integration.conftest import TEST_AUTOMATION, Deployment
from tests.integration.test_pipeline_kafka import anomaly, decision_for, send_event

pytestmark = pytest.mark.kafka


def _policy(name: str, steps: str) -> str:
    return (f"id: {name}\nmatch:\n  subsystems: ['{name}/*']\n"
            "gates:\n  min_confidence: 0.5\n  require_approval_for: []\n  require_known_asset: false\n"
            f"plan:\n{steps}")


POLICIES = "---\n".join([
    _policy("plan-ok", """\
  - {id: rollback, executor: demo-target, action: ok-rollback}
  - {id: ticket, executor: ticket, action: ok-ticket, depends_on: [rollback]}
  - {id: throttle, executor: demo-target, action: ok-throttle, depends_on: [ticket]}
"""),
    _policy("plan-retry", """\
  - {id: flaky, executor: demo-target, action: flaky-once, retries: 2}
"""),
    _policy("plan-fail", """\
  - {id: first, executor: demo-target, action: ok-first, compensate: {action: undo-first}}
  - {id: second, executor: ticket, action: ok-second, depends_on: [first], compensate: {action: undo-second}}
  - {id: third, executor: demo-target, action: broken, depends_on: [second], retries: 1}
  - {id: fourth, executor: demo-target, action: ok-fourth, depends_on: [third]}
"""),
    _policy("plan-timeout", """\
  - {id: slow, executor: demo-target, action: silent, timeout_s: 2}
"""),
    _policy("plan-slow", """\
  - {id: first, executor: demo-target, action: slow-first}
  - {id: second, executor: demo-target, action: ok-second, depends_on: [first]}
"""),
])

AUTOMATION = TEST_AUTOMATION + """\
orchestration:
  retry_base: 1s
  retry_max: 2s
  result_grace: 1s
"""


class ScriptedExecutor:
    """Scripted executor: replies to commands by action name and runs each command id once, as an executor must."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.runs: Counter[str] = Counter()  # by idempotency key: actions actually performed
        self.commands: list[ActionCommand] = []
        self.results: dict[str, ActionResult] = {}
        self.attempts: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _status(self, command: ActionCommand) -> tuple[str, float] | None:
        """Return (status, delay in seconds) for a command, or None to send no result at all."""
        action = command.action
        self.attempts[command.idempotency_key] += 1
        if action == "silent":
            return None
        if action == "broken":
            return "failed", 0.0
        if action == "flaky-once":
            return ("failed", 0.0) if self.attempts[command.idempotency_key] == 1 else ("succeeded", 0.0)
        if action == "slow-first":
            return "succeeded", 4.0
        return "succeeded", 0.0

    def _loop(self) -> None:
        topology = self.deployment.topology
        consumer = Consumer(client_config(self.deployment.bootstrap, **{
            "group.id": f"scripted-executor-{uuid.uuid4()}", "auto.offset.reset": "earliest",
        }))
        consumer.subscribe([topology.actions("demo-target"), topology.actions("ticket")])
        producer = create_producer(self.deployment.bootstrap)
        pending: list[tuple[float, ActionResult]] = []
        while not self.stopping.is_set():
            for message in consumer.consume(50, timeout=0.2):
                if message.error() is not None or message.value() is None:
                    continue
                command = ActionCommand.model_validate(self.deployment.decode(message, "ActionCommand"))
                self.commands.append(command)
                if command.command_id in self.results:  # a redelivered command: publish its result again, do not run
                    pending.append((time.monotonic(), self.results[command.command_id]))
                    continue
                answer = self._status(command)
                if answer is None:
                    continue
                status, delay = answer
                self.runs[command.idempotency_key] += 1
                result = ActionResult(
                    command_id=command.command_id, idempotency_key=command.idempotency_key,
                    decision_id=command.decision_id, incident_id=command.incident_id, trace_id=command.trace_id,
                    executor=command.executor, step_id=command.step_id, attempt=command.attempt,
                    status=status, reason="scripted failure" if status == "failed" else "",  # type: ignore[arg-type]
                    finished_at=datetime.now(UTC),
                )
                self.results[command.command_id] = result
                pending.append((time.monotonic() + delay, result))
            now = time.monotonic()
            for due, result in [item for item in pending if item[0] <= now]:
                producer.produce(topology.action_results, key=(result.incident_id or "").encode(),
                                 value=self.deployment.codec.encode("ActionResult", result.to_avro()))
                pending.remove((due, result))
            producer.poll(0)
        producer.flush(10)
        consumer.close()

    def steps_run(self, decision_id: str) -> list[str]:
        return [command.step_id for command in self.commands
                if command.decision_id == decision_id and command.idempotency_key in self.runs]


@pytest.fixture(scope="module")
def executor(deployment: Deployment) -> Iterator[ScriptedExecutor]:
    scripted = ScriptedExecutor(deployment)
    scripted.thread.start()
    yield scripted
    scripted.stopping.set()
    scripted.thread.join(timeout=30)


def start_plan(deployment: Deployment, policy: str) -> dict[str, Any]:
    event = anomaly(subsystem=f"{policy}/{uuid.uuid4().hex[:8]}")
    send_event(deployment, event)
    decision = decision_for(deployment, event["event_id"])
    assert decision["outcome"] == "auto", decision["reason"]
    return decision


def test_three_steps_run_in_order(deployment: Deployment, executor: ScriptedExecutor) -> None:
    decision = start_plan(deployment, "plan-ok")

    records = wait_plan(deployment, decision, {"plan-completed"})

    assert executor.steps_run(decision["decision_id"]) == ["rollback", "ticket", "throttle"]
    assert records[-1]["outcome"] == "auto"
    assert "rollback succeeded, ticket succeeded, throttle succeeded" in records[-1]["reason"]


def test_failed_step_retried(deployment: Deployment, executor: ScriptedExecutor) -> None:
    decision = start_plan(deployment, "plan-retry")

    records = wait_plan(deployment, decision, {"plan-completed"})

    commands = [c for c in executor.commands if c.decision_id == decision["decision_id"]]
    assert [c.attempt for c in commands] == [1, 2]
    assert len({c.command_id for c in commands}) == 2
    assert len({c.idempotency_key for c in commands}) == 1
    assert [r["reason_code"] for r in records] == ["step-retry", "plan-completed"]


def test_failure_compensates_and_escalates(deployment: Deployment, executor: ScriptedExecutor) -> None:
    decision = start_plan(deployment, "plan-fail")

    records = wait_plan(deployment, decision, {"plan-compensated"})

    commands = [c for c in executor.commands if c.decision_id == decision["decision_id"]]
    assert [c.step_id for c in commands] == ["first", "second", "third", "third", "second.compensate",
                                             "first.compensate"]
    assert [c.compensates for c in commands[-2:]] == ["second", "first"]
    codes = [r["reason_code"] for r in records]
    assert codes == ["step-retry", "plan-failed", "plan-compensated"]
    failed = records[1]
    assert failed["outcome"] == "review"
    assert failed["cancelled_steps"] == ["fourth"]
    assert "third: attempt 1 failed: scripted failure / attempt 2 failed: scripted failure" in failed["reason"]
    review = deployment.wait_for(deployment.topology.review_requests, "ReviewRequest",
                                 lambda request: request["review_id"] == failed["review_id"])
    assert review["reason_code"] == "plan-failed"
    assert [step["step_id"] for step in review["recommended_plan"]] == ["first", "second", "third", "fourth"]


def test_missing_result_times_out(deployment: Deployment, executor: ScriptedExecutor) -> None:
    decision = start_plan(deployment, "plan-timeout")

    records = wait_plan(deployment, decision, {"plan-failed"})

    assert "attempt 1 timed_out: no result by the command's deadline" in records[-1]["reason"]


def test_killed_worker_resumes_plan(deployment: Deployment, executor: ScriptedExecutor) -> None:
    decision = start_plan(deployment, "plan-slow")
    deadline = time.monotonic() + 30
    while not executor.steps_run(decision["decision_id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert executor.steps_run(decision["decision_id"]) == ["first"]

    os.kill(deployment.process.pid, signal.SIGKILL)
    deployment.process.wait(timeout=30)
    deployment.start()

    wait_plan(deployment, decision, {"plan-completed"}, timeout_s=120)
    # The signal may be delivered again after the kill. It may then be recorded again,
    # but only as the same decision: same id, same outcome, never a second verdict.
    records = deployment.read_all(deployment.topology.decisions)
    for_event = [record for record in (deployment.decode(message, "DecisionRecord") for message in records)
                 if record["event_id"] == decision["event_id"]
                 and not record["reason_code"].startswith(("plan-", "step-", "compensation-"))]
    assert {record["decision_id"] for record in for_event} == {decision["decision_id"]}
    assert {record["outcome"] for record in for_event} == {"auto"}
    assert executor.runs[_key(executor, decision, "first")] == 1
    assert executor.runs[_key(executor, decision, "second")] == 1


def _key(executor: ScriptedExecutor, decision: dict[str, Any], step_id: str) -> str:
    return next(c.idempotency_key for c in executor.commands
                if c.decision_id == decision["decision_id"] and c.step_id == step_id)


def wait_plan(deployment: Deployment, decision: dict[str, Any], final: set[str],
              timeout_s: float = 60) -> list[dict[str, Any]]:
    """Return the plan's progress records (in order) once one with a reason code in `final` arrived."""
    found: list[dict[str, Any]] = []

    def finished(messages: list[Any]) -> bool:
        found.clear()
        for message in messages:
            record = deployment.decode(message, "DecisionRecord")
            if record["incident_id"] == decision["incident_id"] and record["decision_id"] != decision["decision_id"] \
                    and record["reason_code"].startswith(("plan-", "step-", "compensation-")):
                found.append(record)
        return any(record["reason_code"] in final for record in found)

    deployment.read(deployment.topology.decisions, finished, timeout_s)
    return found
