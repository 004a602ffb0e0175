"""Unit tests for mitigate.orchestration: plans advance on results and ticks, with no broker.

Each test starts a plan from a Decider decision, as the decide and orchestrate
stages do, and then feeds results, ticks and cancels at times given in seconds
after builders.NOW.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from mitigate.automation import Orchestration
from mitigate.codec import AvroCodec
from mitigate.decision import Decider, Decision, IncidentView, stable_id
from mitigate.enrichment import enrich
from mitigate.intake import Accepted, SourceMessage
from mitigate.limits import epoch_ms
from mitigate.models import ActionCommand, ActionResult, DecisionRecord, PlanControl, ReviewRequest
from mitigate.orchestration import Effects, Orchestrator, PlanBook, PlanState, backoff_ms
from mitigate.policy import PolicyIndex
from mitigate.schemas import SchemaRepository
from tests.unit.builders import NOW, SCHEMA_DIR, active_policy, anomaly_event, asset_context, policy_data

CODEC = AvroCodec(SchemaRepository(SCHEMA_DIR))
SETTINGS = Orchestration(retry_base=2.0, retry_max=30.0, result_grace=5.0, review_timeout=1800.0)
INCIDENT = IncidentView(incident_id="incident-1", signals=1, first_seen=NOW, last_seen=NOW)

# The plan of builders.policy_data(): rollback-config and open-ticket are roots,
# verify depends on rollback-config.
THREE_STEPS: list[dict[str, Any]] = policy_data()["plan"]

# One step that may be tried three times.
RETRIED = [{"id": "restart", "executor": "demo-target", "action": "restart-service", "timeout_s": 60, "retries": 2}]

# A plan that fails at restart after snapshot, open-ticket and rollback-config
# completed. Two of those have a compensation, open-ticket has none, and verify
# never starts.
SAGA: list[dict[str, Any]] = [
    {"id": "snapshot", "executor": "demo-target", "action": "snapshot-config", "timeout_s": 60,
     "compensate": {"action": "drop-snapshot", "timeout_s": 30}},
    {"id": "open-ticket", "executor": "ticket", "action": "open-ticket", "target": "{subsystem}/{entity}",
     "timeout_s": 60},
    {"id": "rollback-config", "executor": "demo-target", "action": "rollback-config", "depends_on": ["snapshot"],
     "timeout_s": 120, "compensate": {"action": "restore-config", "parameters": {"to_version": "previous"},
                                      "timeout_s": 30}},
    {"id": "restart", "executor": "demo-target", "action": "restart-service", "depends_on": ["rollback-config"],
     "timeout_s": 60, "retries": 1},
    {"id": "verify", "executor": "webhook", "action": "verify-temperature", "depends_on": ["restart"]},
]


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def decide(plan: list[dict[str, Any]]) -> Decision:
    """Decide the builders' event under a policy with `plan`, on incident-1."""
    event = anomaly_event()
    message = SourceMessage("unit.anomalies", 1, 100, NOW, event.entity.encode(), b"\xc3\x01", ())
    signal = enrich(message, Accepted(event, "fingerprint:2a11a66bf2fb32de"), asset_context(), ingest_time=NOW,
                    pipeline_version="0.1.0-unit")
    decider = Decider(default_review_timeout=timedelta(minutes=30))
    decision = decider.decide(signal, PolicyIndex([active_policy(plan=plan)]), NOW, INCIDENT)
    assert decision.record.outcome == "auto"
    return decision


def start_control(decision: Decision) -> PlanControl:
    """Return the start control as DecisionStage sends it, with the encoded DecisionRecord inside."""
    assert decision.plan is not None
    return decision.plan.model_copy(update={"decision": CODEC.encode("DecisionRecord", decision.record.to_avro())})


def result_of(command: ActionCommand, status: str, finished_at: datetime, reason: str = "") -> ActionResult:
    return ActionResult(
        command_id=command.command_id,
        idempotency_key=command.idempotency_key,
        decision_id=command.decision_id,
        incident_id=command.incident_id,
        trace_id=command.trace_id,
        executor=command.executor,
        step_id=command.step_id,
        attempt=command.attempt,
        status=status,
        reason=reason,
        finished_at=finished_at,
    )


class Run:
    """One plan under an Orchestrator, with every Effects it returned, in order."""

    def __init__(self, plan: list[dict[str, Any]], settings: Orchestration = SETTINGS) -> None:
        self.decision = decide(plan)
        self.orchestrator = Orchestrator(settings, CODEC)
        self.plan, started = self.orchestrator.start(start_control(self.decision), 3, NOW)
        self.effects = [started]

    def _keep(self, effects: Effects) -> Effects:
        self.effects.append(effects)
        return effects

    def command(self, step_id: str) -> ActionCommand:
        """Return the latest command sent for `step_id`, which may be a compensation such as `snapshot.compensate`."""
        return [command for command in self.commands if command.step_id == step_id][-1]

    def result(self, step_id: str, status: str, seconds: float, reason: str = "") -> Effects:
        return self.send(result_of(self.command(step_id), status, at(seconds), reason), seconds)

    def send(self, result: ActionResult, seconds: float) -> Effects:
        return self._keep(self.orchestrator.on_result(self.plan, result, at(seconds)))

    def tick(self, seconds: float) -> Effects:
        return self._keep(self.orchestrator.tick(self.plan, at(seconds)))

    def cancel(self, seconds: float, reason: str = "incident resolved by signal resolution-1") -> Effects:
        control = PlanControl(kind="cancel", incident_id=INCIDENT.incident_id, plan_id=self.plan.control.plan_id,
                              trace_id=self.plan.control.trace_id, issued_at=at(seconds), reason=reason)
        return self._keep(self.orchestrator.cancel(self.plan, control, at(seconds)))

    @property
    def commands(self) -> list[ActionCommand]:
        return [command for effects in self.effects for command in effects.commands]

    @property
    def records(self) -> list[DecisionRecord]:
        return [record for effects in self.effects for record in effects.records]

    @property
    def reviews(self) -> list[ReviewRequest]:
        return [review for effects in self.effects for review in effects.reviews]

    def statuses(self) -> dict[str, str]:
        return {step_id: run.status for step_id, run in self.plan.runs.items()}

    def retry_at(self, step_id: str) -> float:
        """Return the retry time of a step in retry-wait, in seconds after NOW."""
        retry_at_ms = self.plan.runs[step_id].retry_at_ms
        assert retry_at_ms is not None
        return (retry_at_ms - epoch_ms(NOW)) / 1000


def step_ids(effects: Effects) -> list[str]:
    return [command.step_id for command in effects.commands]


def reason_codes(records: list[DecisionRecord]) -> list[str]:
    return [record.reason_code for record in records]


def is_empty(effects: Effects) -> bool:
    return not effects.commands and not effects.records and not effects.reviews


def failed_saga() -> tuple[Run, Effects]:
    """Run SAGA until restart fails for good, and return the run and the Effects of that last failure."""
    run = Run(SAGA)
    run.result("snapshot", "succeeded", 1)
    run.result("open-ticket", "succeeded", 2)
    run.result("rollback-config", "succeeded", 3)
    run.result("restart", "failed", 4, "disk full")
    run.tick(run.retry_at("restart"))
    return run, run.result("restart", "failed", 20, "disk full")


# Start: the first commands


def test_start_sends_root_steps() -> None:
    run = Run(THREE_STEPS)

    assert step_ids(run.effects[0]) == ["rollback-config", "open-ticket"]


def test_start_step_statuses() -> None:
    run = Run(THREE_STEPS)

    assert run.statuses() == {"rollback-config": "running", "open-ticket": "running", "verify": "pending"}


def test_start_records_nothing() -> None:
    run = Run(THREE_STEPS)

    assert run.effects[0].records == []
    assert run.effects[0].reviews == []


def test_start_keeps_partition() -> None:
    assert Run(THREE_STEPS).plan.partition == 3


def test_start_command_ids_match_decider() -> None:
    run = Run(THREE_STEPS)

    assert [command.command_id for command in run.commands] == [
        command.command_id for command in run.decision.commands
    ]


def test_start_keys_match_decider() -> None:
    run = Run(THREE_STEPS)

    assert [command.idempotency_key for command in run.commands] == [
        command.idempotency_key for command in run.decision.commands
    ]


def test_start_commands_name_plan() -> None:
    run = Run(THREE_STEPS)

    assert {command.decision_id for command in run.commands} == {run.decision.record.decision_id}


def test_start_ids_in_decision_record() -> None:
    run = Run(THREE_STEPS)

    assert run.decision.record.command_ids == [command.command_id for command in run.commands]


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("incident_id", ["incident-1", "incident-1"]),
        ("event_id", [anomaly_event().event_id] * 2),
        ("attempt", [1, 1]),
        ("issued_at", [NOW, NOW]),
        ("deadline", [NOW + timedelta(seconds=120), NOW + timedelta(seconds=60)]),
        ("target", ["machine-temperature-01", "industrial/cooling/machine-temperature-01"]),
        ("policy_id", ["cooling-spike", "cooling-spike"]),
        ("compensates", [None, None]),
    ],
)
def test_start_command_field(attribute: str, expected: list[Any]) -> None:
    run = Run(THREE_STEPS)

    assert [getattr(command, attribute) for command in run.commands] == expected


# Dependencies


def test_dependent_waits_for_dependency() -> None:
    run = Run(THREE_STEPS)

    effects = run.result("open-ticket", "succeeded", 5)

    assert effects.commands == []
    assert run.statuses()["verify"] == "pending"


@pytest.mark.parametrize("status", ["succeeded", "skipped"])
def test_dependency_done_sends_dependent(status: str) -> None:
    run = Run(THREE_STEPS)

    effects = run.result("rollback-config", status, 5)

    assert step_ids(effects) == ["verify"]


def test_dependent_command_fields() -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", "succeeded", 5)

    command = run.command("verify")

    assert command.depends_on == ["rollback-config"]
    assert command.executor == "webhook"
    assert command.issued_at == at(5)
    assert command.deadline == at(5 + 300)
    assert command.attempt == 1
    assert command.command_id == stable_id("command", stable_id("step", run.plan.control.plan_id, "verify"), "1")


def test_dependent_waits_during_retry() -> None:
    plan = [{**THREE_STEPS[0], "retries": 1}, *THREE_STEPS[1:]]
    run = Run(plan)

    effects = run.result("rollback-config", "failed", 5, "busy")

    assert effects.commands == []
    assert run.statuses()["verify"] == "pending"


def test_intermediate_results_record_nothing() -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", "succeeded", 5)
    run.result("open-ticket", "succeeded", 6)

    assert run.records == []


def test_last_result_completes_plan() -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", "succeeded", 5)
    run.result("open-ticket", "succeeded", 6)

    effects = run.result("verify", "succeeded", 7)

    assert reason_codes(effects.records) == ["plan-completed"]
    assert effects.commands == []
    assert run.plan.state == "succeeded"


@pytest.mark.parametrize(
    ("rollback_status", "summary"),
    [
        ("succeeded", "plan completed: rollback-config succeeded, open-ticket succeeded, verify succeeded"),
        ("skipped", "plan completed: rollback-config skipped, open-ticket succeeded, verify succeeded"),
    ],
)
def test_plan_completed_reason(rollback_status: str, summary: str) -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", rollback_status, 5)
    run.result("open-ticket", "succeeded", 6)
    (record,) = run.result("verify", "succeeded", 7).records

    assert record.reason == summary
    assert record.outcome == "auto"


def test_plan_record_copies_decision() -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", "succeeded", 5)
    run.result("open-ticket", "succeeded", 6)
    (record,) = run.result("verify", "succeeded", 7).records
    decided = run.decision.record

    assert record.event_id == decided.event_id
    assert record.incident_id == decided.incident_id
    assert record.trace_id == decided.trace_id
    assert record.entity == decided.entity
    assert record.policy_id == decided.policy_id
    assert record.policy_version == decided.policy_version
    assert record.decided_at == at(7)
    assert record.gates == []
    assert record.command_ids == []
    assert record.decision_id != decided.decision_id


def test_completed_plan_ignores_tick() -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", "succeeded", 5)
    run.result("open-ticket", "succeeded", 6)
    run.result("verify", "succeeded", 7)

    assert is_empty(run.tick(3600))


# Retries


def test_failed_attempt_waits_for_retry() -> None:
    run = Run(RETRIED)
    first = run.command("restart")

    run.result("restart", "failed", 1, "connection refused")

    assert run.statuses() == {"restart": "retry-wait"}
    assert run.plan.runs["restart"].retry_at_ms == epoch_ms(at(1)) + backoff_ms(SETTINGS, first.command_id, 1)


def test_failed_attempt_sends_nothing() -> None:
    run = Run(RETRIED)

    assert run.result("restart", "failed", 1, "connection refused").commands == []


def test_failed_attempt_records_retry() -> None:
    run = Run(RETRIED)
    delay_ms = backoff_ms(SETTINGS, run.command("restart").command_id, 1)

    (record,) = run.result("restart", "failed", 1, "connection refused").records

    assert record.reason_code == "step-retry"
    assert record.outcome == "auto"
    assert record.reason.startswith("step restart attempt 1 failed: connection refused; ")
    assert record.reason.endswith(f" in {delay_ms / 1000:.1f} s")


def test_retry_reason_counts_retries() -> None:
    run = Run(RETRIED)
    delay_ms = backoff_ms(SETTINGS, run.command("restart").command_id, 1)

    (record,) = run.result("restart", "failed", 1, "connection refused").records

    assert record.reason == (
        f"step restart attempt 1 failed: connection refused; retry 1 of 2 in {delay_ms / 1000:.1f} s"
    )


def test_tick_before_retry_sends_nothing() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "connection refused")

    effects = run.tick(run.retry_at("restart") - 0.001)

    assert is_empty(effects)
    assert run.statuses() == {"restart": "retry-wait"}


def test_tick_at_retry_sends_attempt() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "connection refused")

    effects = run.tick(run.retry_at("restart"))

    assert step_ids(effects) == ["restart"]
    assert effects.records == []
    assert run.statuses() == {"restart": "running"}


def test_retry_command_fields() -> None:
    run = Run(RETRIED)
    first = run.command("restart")
    run.result("restart", "failed", 1, "connection refused")
    retry_at = run.retry_at("restart")
    run.tick(retry_at)

    second = run.command("restart")

    assert second.attempt == 2
    assert second.command_id != first.command_id
    assert second.command_id == stable_id("command", first.idempotency_key, "2")
    assert second.idempotency_key == first.idempotency_key
    assert second.issued_at == at(retry_at)
    assert second.deadline == at(retry_at + 60)


def test_retry_success_completes_plan() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "connection refused")
    run.tick(run.retry_at("restart"))

    effects = run.result("restart", "succeeded", 10)

    assert reason_codes(effects.records) == ["plan-completed"]
    assert run.plan.runs["restart"].history == ["attempt 1 failed: connection refused", "attempt 2 succeeded"]


def test_retry_record_ids_differ() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "connection refused")
    run.tick(run.retry_at("restart"))
    run.result("restart", "failed", 10, "connection refused")

    (first, second) = run.records

    assert first.decision_id != second.decision_id


# (case, result status, the step is retried)
RETRY_CASES = [
    ("failed", "failed", True),
    ("timed-out-by-executor", "timed_out", True),
    ("rejected", "rejected", False),
]


@pytest.mark.parametrize(
    ("status", "retried"), [case[1:] for case in RETRY_CASES], ids=[case[0] for case in RETRY_CASES]
)
def test_result_status_retried(status: str, retried: bool) -> None:
    run = Run(RETRIED)

    run.result("restart", status, 1, "no")

    assert (run.statuses()["restart"] == "retry-wait") is retried


def test_rejected_fails_plan_at_once() -> None:
    run = Run(RETRIED)

    effects = run.result("restart", "rejected", 1, "not allowed on this target")

    assert reason_codes(effects.records) == ["plan-failed"]
    assert run.plan.state == "failed"
    assert run.plan.runs["restart"].history == ["attempt 1 rejected: not allowed on this target"]


def test_failure_without_reason_text() -> None:
    run = Run(RETRIED)

    run.result("restart", "failed", 1)

    assert run.plan.runs["restart"].history == ["attempt 1 failed: no reason given"]


# A step that always fails: review and compensation


def test_failure_fails_plan() -> None:
    run, _ = failed_saga()

    assert run.plan.state == "failed"


def test_failure_step_statuses() -> None:
    run, _ = failed_saga()

    assert run.statuses() == {
        "snapshot": "succeeded",
        "open-ticket": "succeeded",
        "rollback-config": "succeeded",
        "restart": "failed",
        "verify": "cancelled",
    }


def test_failure_sends_one_compensation() -> None:
    _, effects = failed_saga()

    # rollback-config completed last, so it is undone first.
    assert step_ids(effects) == ["rollback-config.compensate"]


def test_compensation_command_fields() -> None:
    run, effects = failed_saga()
    (command,) = effects.commands

    assert command.compensates == "rollback-config"
    assert command.executor == "demo-target"
    assert command.action == "restore-config"
    assert command.parameters == {"to_version": "previous"}
    assert command.target == "machine-temperature-01"
    assert command.deadline == at(20 + 30)
    assert command.attempt == 1
    assert command.idempotency_key == stable_id("compensate", run.plan.control.plan_id, "rollback-config")


def test_compensation_waits_for_result() -> None:
    run, _ = failed_saga()

    assert is_empty(run.tick(21))


def test_next_compensation_after_result() -> None:
    run, _ = failed_saga()

    effects = run.result("rollback-config.compensate", "succeeded", 25)

    assert step_ids(effects) == ["snapshot.compensate"]
    assert effects.records == []


def test_compensation_skips_step_without_one() -> None:
    run, _ = failed_saga()
    run.result("rollback-config.compensate", "succeeded", 25)
    run.result("snapshot.compensate", "succeeded", 26)

    assert [command.compensates for command in run.commands if command.compensates] == [
        "rollback-config", "snapshot"
    ]


def test_compensation_finished_record() -> None:
    run, _ = failed_saga()
    run.result("rollback-config.compensate", "succeeded", 25)

    (record,) = run.result("snapshot.compensate", "succeeded", 26).records

    assert record.reason_code == "plan-compensated"
    assert record.outcome == "review"
    assert record.reason == "compensation finished: rollback-config succeeded, snapshot succeeded"


def test_failure_records_in_order() -> None:
    run, _ = failed_saga()
    run.result("rollback-config.compensate", "succeeded", 25)
    run.result("snapshot.compensate", "succeeded", 26)

    assert reason_codes(run.records) == ["step-retry", "plan-failed", "plan-compensated"]


def test_plan_failed_record() -> None:
    _, effects = failed_saga()
    (record,) = effects.records
    (review,) = effects.reviews

    assert record.reason_code == "plan-failed"
    assert record.outcome == "review"
    assert record.cancelled_steps == ["verify"]
    assert record.review_id == review.review_id


def test_failure_review_request() -> None:
    run, effects = failed_saga()
    (review,) = effects.reviews

    assert review.reason_code == "plan-failed"
    assert review.review_id == stable_id("plan-review", run.plan.control.plan_id)
    assert review.decision_id == run.plan.control.plan_id
    assert review.incident_id == "incident-1"
    assert review.deadline == at(20 + 1800)
    assert review.score == anomaly_event().score
    assert [step.step_id for step in review.recommended_plan] == [
        "snapshot", "open-ticket", "rollback-config", "restart", "verify"
    ]


def test_failure_reason_lists_history() -> None:
    _, effects = failed_saga()
    (review,) = effects.reviews

    assert review.reason == (
        "plan failed at step restart; compensating rollback-config, snapshot in reverse order; "
        "cancelled: verify; a human decides what happens next. History: "
        "snapshot: attempt 1 succeeded; open-ticket: attempt 1 succeeded; rollback-config: attempt 1 succeeded; "
        "restart: attempt 1 failed: disk full / attempt 2 failed: disk full; verify: cancelled"
    )


def test_failure_record_reason_as_review() -> None:
    _, effects = failed_saga()
    (record,) = effects.records
    (review,) = effects.reviews

    assert record.reason == review.reason


def test_failure_with_nothing_to_undo() -> None:
    run = Run(RETRIED)

    effects = run.result("restart", "rejected", 1, "not allowed on this target")

    assert effects.commands == []
    assert effects.reviews[0].reason.startswith("plan failed at step restart; nothing to compensate; "
                                                "cancelled: none; ")


def test_failure_cancels_waiting_retry() -> None:
    plan = [
        {"id": "drain", "executor": "demo-target", "action": "drain", "timeout_s": 60, "retries": 3},
        {"id": "restart", "executor": "demo-target", "action": "restart-service", "timeout_s": 60},
    ]
    run = Run(plan)
    run.result("drain", "failed", 1, "busy")

    run.result("restart", "failed", 2, "disk full")

    assert run.statuses() == {"drain": "cancelled", "restart": "failed"}
    assert is_empty(run.tick(3600))


def test_failed_compensation_record() -> None:
    run, _ = failed_saga()

    effects = run.result("rollback-config.compensate", "failed", 25, "no previous version")

    assert reason_codes(effects.records) == ["compensation-failed"]
    assert effects.records[0].reason == (
        "compensation of step rollback-config failed: no previous version; the target may be left changed"
    )
    assert step_ids(effects) == ["snapshot.compensate"]


# Deadlines


# (case, tick time in seconds after NOW for a step started at NOW with timeout 60 s, step status after the tick)
DEADLINE_CASES = [
    ("before-deadline", 59.0, "running"),
    ("at-deadline", 60.0, "running"),
    ("within-grace", 64.999, "running"),
    ("at-grace-end", 65.0, "running"),
    ("after-grace", 65.001, "retry-wait"),
]


@pytest.mark.parametrize(
    ("seconds", "status"), [case[1:] for case in DEADLINE_CASES], ids=[case[0] for case in DEADLINE_CASES]
)
def test_tick_deadline_status(seconds: float, status: str) -> None:
    run = Run(RETRIED)

    run.tick(seconds)

    assert run.statuses() == {"restart": status}


def test_timeout_history_text() -> None:
    run = Run(RETRIED)

    run.tick(65.001)

    assert run.plan.runs["restart"].history == [
        "attempt 1 timed_out: no result by the command's deadline; is the demo-target executor running?"
    ]


def test_timeout_records_retry() -> None:
    run = Run(RETRIED)

    (record,) = run.tick(65.001).records

    assert record.reason_code == "step-retry"
    assert record.reason.startswith("step restart attempt 1 timed_out: no result by the command's deadline; ")


def test_timeout_without_retries_fails_plan() -> None:
    run = Run([{**RETRIED[0], "retries": 0}])

    effects = run.tick(65.001)

    assert reason_codes(effects.records) == ["plan-failed"]
    assert run.statuses() == {"restart": "failed"}


def test_timed_out_attempt_result_ignored() -> None:
    run = Run(RETRIED)
    first = run.command("restart")
    run.tick(65.001)

    effects = run.send(result_of(first, "succeeded", at(66)), 66)

    assert is_empty(effects)
    assert run.statuses() == {"restart": "retry-wait"}


def test_due_time_of_running_steps() -> None:
    run = Run(THREE_STEPS)

    # open-ticket has the earlier deadline, 60 s against 120 s.
    assert run.plan.due_ms() == epoch_ms(at(60))


def test_due_time_of_retry() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "busy")

    assert run.plan.due_ms() == run.plan.runs["restart"].retry_at_ms


def test_due_time_of_compensation() -> None:
    run, _ = failed_saga()

    assert run.plan.due_ms() == epoch_ms(at(20 + 30))


def test_due_time_when_done() -> None:
    run = Run(RETRIED)
    run.result("restart", "succeeded", 1)

    assert run.plan.due_ms() is None


# Compensation that times out


def test_compensation_timeout_waits_grace() -> None:
    run, _ = failed_saga()

    assert is_empty(run.tick(20 + 30 + 5))


def test_compensation_timeout_moves_on() -> None:
    run, _ = failed_saga()

    effects = run.tick(20 + 30 + 5.001)

    assert reason_codes(effects.records) == ["compensation-failed"]
    assert step_ids(effects) == ["snapshot.compensate"]


def test_compensation_timeout_reason() -> None:
    run, _ = failed_saga()

    (record,) = run.tick(20 + 30 + 5.001).records

    assert record.reason == (
        "compensation of step rollback-config timed_out: no result by the command's deadline; "
        "the target may be left changed"
    )


def test_compensation_timeout_summary() -> None:
    run, _ = failed_saga()
    run.tick(20 + 30 + 5.001)

    (record,) = run.result("snapshot.compensate", "succeeded", 60).records

    assert record.reason == "compensation finished: rollback-config failed, snapshot succeeded"


def test_late_compensation_result_ignored() -> None:
    run, _ = failed_saga()
    run.tick(20 + 30 + 5.001)

    effects = run.result("rollback-config.compensate", "succeeded", 57)

    assert is_empty(effects)
    assert [item.status for item in run.plan.compensations] == ["failed", "running"]


# Cancel


def test_cancel_records_cancelled_steps() -> None:
    run = Run(THREE_STEPS)

    (record,) = run.cancel(10).records

    assert record.reason_code == "plan-cancelled"
    assert record.outcome == "suppress"
    assert record.cancelled_steps == ["verify"]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("incident resolved by signal resolution-1",
         "plan cancelled: incident resolved by signal resolution-1; cancelled steps not yet started: verify; "
         "steps already running finish on their own: rollback-config, open-ticket"),
        ("",
         "plan cancelled: the incident resolved; cancelled steps not yet started: verify; "
         "steps already running finish on their own: rollback-config, open-ticket"),
    ],
    ids=["with-reason", "without-reason"],
)
def test_cancel_reason_text(reason: str, expected: str) -> None:
    run = Run(THREE_STEPS)

    (record,) = run.cancel(10, reason).records

    assert record.reason == expected


def test_cancel_with_nothing_running() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "busy")

    (record,) = run.cancel(2).records

    assert record.reason == (
        "plan cancelled: incident resolved by signal resolution-1; cancelled steps not yet started: restart"
    )


def test_cancel_keeps_running_steps() -> None:
    run = Run(THREE_STEPS)

    run.cancel(10)

    assert run.statuses() == {"rollback-config": "running", "open-ticket": "running", "verify": "cancelled"}
    assert run.plan.state == "cancelled"


def test_cancel_sends_no_commands() -> None:
    assert Run(THREE_STEPS).cancel(10).commands == []


def test_result_after_cancel_sends_nothing() -> None:
    run = Run(THREE_STEPS)
    run.cancel(10)

    effects = run.result("rollback-config", "succeeded", 11)

    assert is_empty(effects)
    assert run.statuses()["rollback-config"] == "succeeded"
    assert run.statuses()["verify"] == "cancelled"


def test_cancel_stops_retry() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "busy")
    retry_at = run.retry_at("restart")
    run.cancel(2)

    assert is_empty(run.tick(retry_at))
    assert run.statuses() == {"restart": "cancelled"}


def test_cancel_twice_changes_nothing() -> None:
    run = Run(THREE_STEPS)
    run.cancel(10)

    assert is_empty(run.cancel(11))


def test_cancel_after_completion() -> None:
    run = Run(RETRIED)
    run.result("restart", "succeeded", 1)

    assert is_empty(run.cancel(2))
    assert run.plan.state == "succeeded"


def test_cancel_after_failure() -> None:
    run, _ = failed_saga()

    assert is_empty(run.cancel(21))
    assert run.plan.state == "failed"


# Late, duplicate and unknown results


def test_late_attempt_result_changes_nothing() -> None:
    run = Run(RETRIED)
    first = run.command("restart")
    run.result("restart", "failed", 1, "busy")
    run.tick(run.retry_at("restart"))
    before = run.plan.model_dump()

    effects = run.send(result_of(first, "succeeded", at(9)), 9)

    assert is_empty(effects)
    assert run.plan.model_dump() == before


def test_duplicate_result_changes_nothing() -> None:
    run = Run(THREE_STEPS)
    run.result("rollback-config", "succeeded", 5)
    before = run.plan.model_dump()

    effects = run.send(result_of(run.decision.commands[0], "succeeded", at(5)), 6)

    assert is_empty(effects)
    assert run.plan.model_dump() == before


def test_duplicate_failure_changes_nothing() -> None:
    run = Run(RETRIED)
    run.result("restart", "failed", 1, "busy")
    before = run.plan.model_dump()

    effects = run.result("restart", "failed", 2, "busy")

    assert is_empty(effects)
    assert run.plan.model_dump() == before


def test_unknown_command_changes_nothing() -> None:
    run = Run(THREE_STEPS)
    before = run.plan.model_dump()
    stray = run.command("rollback-config").model_copy(update={"command_id": "not-sent-by-this-plan"})

    effects = run.send(result_of(stray, "failed", at(5)), 5)

    assert is_empty(effects)
    assert run.plan.model_dump() == before


def test_duplicate_compensation_result() -> None:
    run, _ = failed_saga()
    run.result("rollback-config.compensate", "succeeded", 25)
    before = run.plan.model_dump()

    effects = run.send(result_of(run.command("rollback-config.compensate"), "succeeded", at(25)), 26)

    assert is_empty(effects)
    assert run.plan.model_dump() == before


# Edge cases: simultaneous timeouts, results after the plan stopped, ties and record ids.


def test_simultaneous_timeouts_fail_once() -> None:
    plan = [
        {"id": "drain", "executor": "demo-target", "action": "drain", "timeout_s": 60},
        {"id": "open-ticket", "executor": "ticket", "action": "open-ticket", "timeout_s": 60},
    ]
    run = Run(plan)

    effects = run.tick(65.001)

    assert len(effects.reviews) == 1


def test_failure_after_plan_failed() -> None:
    plan = [
        {"id": "drain", "executor": "demo-target", "action": "drain", "timeout_s": 60},
        {"id": "open-ticket", "executor": "ticket", "action": "open-ticket", "timeout_s": 60},
    ]
    run = Run(plan)
    run.result("drain", "failed", 1, "busy")

    effects = run.result("open-ticket", "failed", 2, "queue not found")

    assert effects.reviews == []


def test_failure_after_cancel_no_retry() -> None:
    run = Run(RETRIED)
    run.cancel(1)

    effects = run.result("restart", "failed", 2, "busy")

    assert reason_codes(effects.records) == []


def test_late_success_is_compensated() -> None:
    plan = [
        {"id": "rollback-config", "executor": "demo-target", "action": "rollback-config", "timeout_s": 60,
         "compensate": {"action": "restore-config"}},
        {"id": "restart", "executor": "demo-target", "action": "restart-service", "timeout_s": 60},
    ]
    run = Run(plan)
    run.result("restart", "failed", 1, "disk full")

    effects = run.result("rollback-config", "succeeded", 2)

    assert step_ids(effects) == ["rollback-config.compensate"]


def test_same_millisecond_reverse_order() -> None:
    run = Run(SAGA)
    run.result("snapshot", "succeeded", 1)
    run.result("open-ticket", "succeeded", 1)
    run.result("rollback-config", "succeeded", 1)
    run.result("restart", "rejected", 1, "not allowed on this target")

    assert step_ids(run.effects[-1]) == ["rollback-config.compensate"]


def test_compensation_failure_ids_differ() -> None:
    run, _ = failed_saga()
    run.result("rollback-config.compensate", "failed", 25, "no previous version")
    run.result("snapshot.compensate", "failed", 26, "snapshot gone")

    first, second = [record for record in run.records if record.reason_code == "compensation-failed"]

    assert first.decision_id != second.decision_id


# Backoff


# (attempt, lowest and highest delay in ms for retry_base 2 s and retry_max 30 s)
BACKOFF_CASES = [
    (1, 2_000, 3_000),
    (2, 4_000, 6_000),
    (3, 8_000, 12_000),
    (4, 16_000, 24_000),
    (5, 30_000, 45_000),
    (10, 30_000, 45_000),
]


@pytest.mark.parametrize(("attempt", "low", "high"), BACKOFF_CASES)
def test_backoff_range(attempt: int, low: int, high: int) -> None:
    delays = [backoff_ms(SETTINGS, f"command-{index}", attempt) for index in range(200)]

    assert min(delays) >= low
    assert max(delays) <= high


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_backoff_doubles_per_attempt(attempt: int) -> None:
    # The jitter depends on the command id alone, so the same id shows the doubling.
    first = backoff_ms(SETTINGS, "command-1", attempt)

    assert abs(backoff_ms(SETTINGS, "command-1", attempt + 1) - 2 * first) <= 1


def test_backoff_capped() -> None:
    assert backoff_ms(SETTINGS, "command-1", 6) == backoff_ms(SETTINGS, "command-1", 20)


def test_backoff_deterministic() -> None:
    assert backoff_ms(SETTINGS, "command-1", 2) == backoff_ms(SETTINGS, "command-1", 2)


def test_backoff_jitter_varies() -> None:
    delays = {backoff_ms(SETTINGS, f"command-{index}", 1) for index in range(50)}

    assert len(delays) > 40


@pytest.mark.parametrize("command_id", ["command-1", "command-2", stable_id("command", "key", "1")])
def test_backoff_jitter_fraction(command_id: str) -> None:
    jitter = backoff_ms(SETTINGS, command_id, 1) / 2_000 - 1

    assert 0.0 <= jitter <= 0.5


# Stored state


def test_plan_book_round_trip() -> None:
    run, _ = failed_saga()

    stored = PlanBook(plans={run.plan.control.plan_id: run.plan}).model_dump_json()

    assert PlanBook.model_validate_json(stored).plans == {run.plan.control.plan_id: run.plan}


def test_plan_book_keeps_decision_bytes() -> None:
    run, _ = failed_saga()
    stored = PlanBook(plans={"plan": run.plan}).model_dump_json()

    loaded = PlanBook.model_validate_json(stored).plans["plan"]

    assert loaded.control.decision == start_control(run.decision).decision
    assert loaded.control.decision is not None
    assert DecisionRecord.model_validate(CODEC.decode(loaded.control.decision, "DecisionRecord").record) == (
        run.decision.record
    )


def test_plan_book_keeps_invalid_utf8() -> None:
    run = Run(RETRIED)
    blob = b"\xc3\x01\xff\x00\x80"
    plan = run.plan.model_copy(update={"control": run.plan.control.model_copy(update={"decision": blob})})

    loaded = PlanBook.model_validate_json(PlanBook(plans={"plan": plan}).model_dump_json()).plans["plan"]

    assert loaded.control.decision == blob


def test_loaded_plan_continues_alike() -> None:
    run, _ = failed_saga()
    loaded = PlanState.model_validate_json(run.plan.model_dump_json())
    result = result_of(run.command("rollback-config.compensate"), "succeeded", at(25))

    from_loaded = run.orchestrator.on_result(loaded, result, at(25))
    from_memory = run.orchestrator.on_result(run.plan, result, at(25))

    assert from_loaded == from_memory
    assert loaded == run.plan


def test_empty_plan_book_round_trip() -> None:
    assert PlanBook.model_validate_json(PlanBook().model_dump_json()) == PlanBook()
