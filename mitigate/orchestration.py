"""Orchestrate stage: run a decided plan step by step, advancing on executor results.

A step is sent once every step it depends on succeeded (or was skipped because
its precondition did not hold). A failed attempt is retried with exponential
backoff and jitter up to the step's `retries`. A missing result by the
command's deadline counts as a failure. A rejected command is not retried.
After the last failure the completed steps are compensated one at a time in
reverse order, the incident goes to review with the failure history, and
nothing further runs automatically. A cancel (the incident resolved) stops
every step not yet started.

The functions here are pure: the Faust agent stores PlanState as JSON in a
table keyed by incident id and sends the effects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from mitigate.automation import Orchestration
from mitigate.codec import AvroCodec
from mitigate.decision import predicted_impact, risk_inputs, stable_id
from mitigate.errors import DecodeError
from mitigate.limits import epoch_ms
from mitigate.models import (
    ActionCommand,
    ActionResult,
    DecisionRecord,
    Outcome,
    PlanControl,
    PlanStep,
    PlanStepSpec,
    ReviewRequest,
)

FINAL_OK = ("succeeded", "skipped")


class StepRun(BaseModel):
    """Progress of one step of a plan."""

    model_config = ConfigDict(extra="forbid")

    status: str = "pending"  # pending, running, retry-wait, succeeded, skipped, failed, cancelled
    attempt: int = 0
    command_id: str | None = None
    deadline_ms: int | None = None
    retry_at_ms: int | None = None
    finished_ms: int | None = None
    history: list[str] = Field(default_factory=list)


class Compensation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_id: str
    command_id: str | None = None
    status: str = "pending"  # pending, running, succeeded, failed
    deadline_ms: int | None = None


class PlanState(BaseModel):
    """One plan of an incident, as stored."""

    model_config = ConfigDict(extra="forbid")

    control: PlanControl
    partition: int
    state: str = "running"  # running, succeeded, failed, cancelled
    runs: dict[str, StepRun]
    compensations: list[Compensation] = Field(default_factory=list)
    updated_ms: int
    records: int = 0  # records written so far, so that each gets its own id
    contained_ms: int | None = None  # when a step of the plan first succeeded

    def step(self, step_id: str) -> PlanStepSpec:
        return next(spec for spec in self.control.steps if spec.step_id == step_id)

    def due_ms(self, grace_ms: int = 0) -> int | None:
        """Return when the plan next needs a tick (a deadline plus grace, or a retry), or None."""
        times = [run.deadline_ms + grace_ms for run in self.runs.values()
                 if run.status == "running" and run.deadline_ms and self.state == "running"]
        times += [run.retry_at_ms for run in self.runs.values()
                  if run.status == "retry-wait" and run.retry_at_ms and self.state == "running"]
        times += [item.deadline_ms + grace_ms for item in self.compensations
                  if item.status == "running" and item.deadline_ms]
        return min(times) if times else None


class PlanBook(BaseModel):
    """Every plan of one incident, by plan id, as the orchestrator's table stores it."""

    model_config = ConfigDict(extra="forbid")

    plans: dict[str, PlanState] = Field(default_factory=dict)


@dataclass
class Effects:
    """Messages for the agent to send, produced by one orchestrator call."""

    commands: list[ActionCommand] = field(default_factory=list)
    records: list[DecisionRecord] = field(default_factory=list)
    reviews: list[ReviewRequest] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.commands.extend(other.commands)
        self.records.extend(other.records)
        self.reviews.extend(other.reviews)


def backoff_ms(settings: Orchestration, command_id: str, attempt: int) -> int:
    """Exponential backoff with jitter: base x 2^(attempt-1), capped, times 1 to 1.5.

    The jitter is derived from the command id, so a replay schedules the same retry.
    """
    base = min(settings.retry_base * 2 ** (attempt - 1), settings.retry_max)
    jitter = int.from_bytes(hashlib.sha256(command_id.encode()).digest()[:2], "big") / 65535 / 2
    return int(base * (1 + jitter) * 1000)


class Orchestrator:
    """Turns plan controls and action results into commands, decision records and review requests."""

    def __init__(self, settings: Orchestration, codec: AvroCodec) -> None:
        self.settings = settings
        self.codec = codec

    # Controls

    def start(self, control: PlanControl, partition: int, now: datetime) -> tuple[PlanState, Effects]:
        plan = PlanState(
            control=control,
            partition=partition,
            runs={spec.step_id: StepRun() for spec in control.steps},
            updated_ms=epoch_ms(now),
        )
        return plan, self._advance(plan, now)

    def cancel(self, plan: PlanState, control: PlanControl, now: datetime) -> Effects:
        if plan.state != "running":
            return Effects()
        cancelled = [step_id for step_id, run in plan.runs.items() if run.status in ("pending", "retry-wait")]
        for step_id in cancelled:
            plan.runs[step_id].status = "cancelled"
        plan.state = "cancelled"
        plan.updated_ms = epoch_ms(now)
        in_flight = [step_id for step_id, run in plan.runs.items() if run.status == "running"]
        reason = f"plan cancelled: {control.reason or 'the incident resolved'}"
        reason += f"; cancelled steps not yet started: {', '.join(cancelled) or 'none'}"
        if in_flight:
            reason += f"; steps already running finish on their own: {', '.join(in_flight)}"
        effects = Effects()
        effects.records.append(self._record(plan, now, "suppress", "plan-cancelled", reason, cancelled=cancelled))
        return effects

    def tick(self, plan: PlanState, now: datetime) -> Effects:
        """Act on deadlines that passed and retries that are due."""
        now_ms = epoch_ms(now)
        grace_ms = int(self.settings.result_grace * 1000)
        effects = Effects()
        if plan.state == "running":
            for step_id, run in list(plan.runs.items()):
                if plan.state != "running":
                    break  # a timeout just failed the plan; the other steps are handled by that
                if run.status == "running" and run.deadline_ms is not None and now_ms > run.deadline_ms + grace_ms:
                    executor = plan.step(step_id).executor
                    effects.extend(self._attempt_failed(
                        plan, step_id, "timed_out",
                        f"no result by the command's deadline; is the {executor} executor running?", now))
                elif run.status == "retry-wait" and run.retry_at_ms is not None and now_ms >= run.retry_at_ms:
                    effects.commands.append(self._dispatch(plan, step_id, now))
        for item in plan.compensations:
            if item.status == "running" and item.deadline_ms is not None and now_ms > item.deadline_ms + grace_ms:
                timed_out = ActionResult(
                    command_id=item.command_id or "", idempotency_key="-", decision_id=plan.control.plan_id,
                    trace_id=plan.control.trace_id, executor="-", step_id=item.step_id, status="timed_out",
                    reason="no result by the command's deadline", finished_at=now,
                )
                effects.extend(self._compensation_result(plan, item, timed_out, now))
        return effects

    # Results

    def on_result(self, plan: PlanState, result: ActionResult, now: datetime) -> Effects:
        for compensation in plan.compensations:
            if compensation.command_id == result.command_id:
                return self._compensation_result(plan, compensation, result, now)
        step_id = next((step for step, run in plan.runs.items() if run.command_id == result.command_id), None)
        if step_id is None or plan.runs[step_id].status != "running":
            return Effects()  # a late result of an earlier attempt, or a duplicate; nothing changes

        run = plan.runs[step_id]
        if plan.state != "running":
            return self._late_result(plan, step_id, result, now)
        if result.status in FINAL_OK:
            run.status = result.status
            run.finished_ms = epoch_ms(now)
            run.history.append(f"attempt {run.attempt} {result.status}" + (f": {result.reason}" if result.reason else ""))
            plan.updated_ms = epoch_ms(now)
            return self._advance(plan, now)
        return self._attempt_failed(plan, step_id, result.status, result.reason or "no reason given", now)

    def _late_result(self, plan: PlanState, step_id: str, result: ActionResult, now: datetime) -> Effects:
        """Record the result of a step that was still running when its plan failed or was cancelled.

        Nothing is retried or sent on. A step that succeeded after its plan
        failed is undone too: it is queued to be compensated first, because it
        finished last.
        """
        run = plan.runs[step_id]
        run.status = result.status if result.status in FINAL_OK else "failed"
        run.finished_ms = epoch_ms(now)
        run.history.append(f"attempt {run.attempt} {result.status} after the plan stopped"
                           + (f": {result.reason}" if result.reason else ""))
        plan.updated_ms = epoch_ms(now)
        if plan.state != "failed" or result.status != "succeeded" or plan.step(step_id).compensate is None:
            return Effects()
        done = [item for item in plan.compensations if item.status != "pending"]
        waiting = [item for item in plan.compensations if item.status == "pending"]
        plan.compensations = [*done, Compensation(step_id=step_id), *waiting]
        if any(item.status == "running" for item in plan.compensations):
            return Effects()
        return self._next_compensation(plan, now)

    # Internals

    def _advance(self, plan: PlanState, now: datetime) -> Effects:
        effects = Effects()
        if plan.state != "running":
            return effects
        for spec in plan.control.steps:
            run = plan.runs[spec.step_id]
            if run.status != "pending":
                continue
            if all(plan.runs[dependency].status in FINAL_OK for dependency in spec.depends_on):
                effects.commands.append(self._dispatch(plan, spec.step_id, now))
        if all(run.status in FINAL_OK for run in plan.runs.values()):
            plan.state = "succeeded"
            summary = ", ".join(f"{step_id} {run.status}" for step_id, run in plan.runs.items())
            effects.records.append(self._record(plan, now, "auto", "plan-completed", f"plan completed: {summary}"))
        return effects

    def _dispatch(self, plan: PlanState, step_id: str, now: datetime) -> ActionCommand:
        spec = plan.step(step_id)
        run = plan.runs[step_id]
        run.attempt += 1
        idempotency_key = stable_id("step", plan.control.plan_id, step_id)
        command_id = stable_id("command", idempotency_key, str(run.attempt))
        deadline = now + timedelta(milliseconds=spec.timeout_ms)
        run.status, run.command_id, run.retry_at_ms = "running", command_id, None
        run.deadline_ms = epoch_ms(deadline)
        plan.updated_ms = epoch_ms(now)
        return self._command(plan, command_id, idempotency_key, spec.executor, spec.action, spec.target,
                             spec.parameters, spec.preconditions, list(spec.depends_on), step_id, run.attempt,
                             now, deadline)

    def _command(
        self, plan: PlanState, command_id: str, idempotency_key: str, executor: str, action: str, target: str,
        parameters: dict[str, str], preconditions: dict[str, str], depends_on: list[str], step_id: str,
        attempt: int, now: datetime, deadline: datetime, compensates: str | None = None,
    ) -> ActionCommand:
        control = plan.control
        return ActionCommand(
            command_id=command_id,
            idempotency_key=idempotency_key,
            decision_id=control.plan_id,
            event_id=self._template(plan).event_id if control.decision else control.plan_id,
            incident_id=control.incident_id,
            trace_id=control.trace_id,
            issued_at=now,
            deadline=deadline,
            attempt=attempt,
            executor=executor,
            action=action,
            target=target,
            parameters=dict(parameters),
            step_id=step_id,
            depends_on=depends_on,
            policy_id=control.policy_id or "unknown",
            policy_version=control.policy_version or 0,
            preconditions=dict(preconditions),
            compensates=compensates,
        )

    def _attempt_failed(self, plan: PlanState, step_id: str, status: str, reason: str, now: datetime) -> Effects:
        spec = plan.step(step_id)
        run = plan.runs[step_id]
        run.history.append(f"attempt {run.attempt} {status}: {reason}")
        plan.updated_ms = epoch_ms(now)
        effects = Effects()
        if status != "rejected" and run.attempt <= spec.retries:
            delay = backoff_ms(self.settings, run.command_id or step_id, run.attempt)
            run.status, run.retry_at_ms = "retry-wait", epoch_ms(now) + delay
            effects.records.append(self._record(
                plan, now, "auto", "step-retry",
                f"step {step_id} attempt {run.attempt} {status}: {reason}; retry {run.attempt} of "
                f"{spec.retries} in {delay / 1000:.1f} s",
            ))
            return effects

        run.status = "failed"
        run.finished_ms = epoch_ms(now)
        return self._fail_plan(plan, step_id, now)

    def _fail_plan(self, plan: PlanState, failed_step: str, now: datetime) -> Effects:
        plan.state = "failed"
        cancelled = [step_id for step_id, run in plan.runs.items() if run.status in ("pending", "retry-wait")]
        for step_id in cancelled:
            plan.runs[step_id].status = "cancelled"
        order = {spec.step_id: index for index, spec in enumerate(plan.control.steps)}
        # Latest finished first. A tie in the same millisecond falls back to reversed plan
        # order, so a step is never undone before a step that depends on it.
        done = sorted(
            (step_id for step_id, run in plan.runs.items() if run.status == "succeeded"
             and plan.step(step_id).compensate is not None),
            key=lambda step_id: (plan.runs[step_id].finished_ms or 0, order[step_id]),
            reverse=True,
        )
        plan.compensations = [Compensation(step_id=step_id) for step_id in done]

        history = "; ".join(f"{step_id}: {' / '.join(run.history) or run.status}" for step_id, run in plan.runs.items())
        undo = f"compensating {', '.join(done)} in reverse order" if done else "nothing to compensate"
        reason = (
            f"plan failed at step {failed_step}; {undo}; cancelled: {', '.join(cancelled) or 'none'}; "
            f"a human decides what happens next. History: {history}"
        )
        effects = Effects()
        review_id = stable_id("plan-review", plan.control.plan_id)
        effects.reviews.append(self._review(plan, review_id, reason, now))
        effects.records.append(self._record(plan, now, "review", "plan-failed", reason, cancelled=cancelled,
                                            review_id=review_id))
        effects.extend(self._next_compensation(plan, now))
        return effects

    def _next_compensation(self, plan: PlanState, now: datetime) -> Effects:
        effects = Effects()
        pending = next((item for item in plan.compensations if item.status == "pending"), None)
        if pending is None:
            return effects
        spec = plan.step(pending.step_id)
        compensation = spec.compensate
        assert compensation is not None  # only steps with a compensation are queued
        idempotency_key = stable_id("compensate", plan.control.plan_id, pending.step_id)
        command_id = stable_id("command", idempotency_key, "1")
        deadline = now + timedelta(milliseconds=compensation.timeout_ms)
        pending.command_id, pending.status, pending.deadline_ms = command_id, "running", epoch_ms(deadline)
        effects.commands.append(self._command(
            plan, command_id, idempotency_key, compensation.executor, compensation.action, spec.target,
            compensation.parameters, {}, [], f"{pending.step_id}.compensate", 1, now, deadline,
            compensates=pending.step_id,
        ))
        return effects

    def _compensation_result(
        self, plan: PlanState, compensation: Compensation, result: ActionResult, now: datetime
    ) -> Effects:
        if compensation.status != "running":
            return Effects()
        compensation.status = "succeeded" if result.status in FINAL_OK else "failed"
        plan.updated_ms = epoch_ms(now)
        effects = Effects()
        if compensation.status == "failed":
            effects.records.append(self._record(
                plan, now, "review", "compensation-failed",
                f"compensation of step {compensation.step_id} {result.status}: {result.reason or 'no reason given'}; "
                "the target may be left changed",
            ))
        effects.extend(self._next_compensation(plan, now))
        if all(item.status in ("succeeded", "failed") for item in plan.compensations):
            summary = ", ".join(f"{item.step_id} {item.status}" for item in plan.compensations)
            effects.records.append(self._record(plan, now, "review", "plan-compensated",
                                                f"compensation finished: {summary}"))
        return effects

    def _template(self, plan: PlanState) -> DecisionRecord:
        if plan.control.decision is None:
            raise DecodeError("undecodable", "plan has no decision record")
        return DecisionRecord.model_validate(self.codec.decode(plan.control.decision, "DecisionRecord").record)

    def _record(
        self, plan: PlanState, now: datetime, outcome: Outcome, reason_code: str, reason: str,
        *, cancelled: list[str] | None = None, review_id: str | None = None,
    ) -> DecisionRecord:
        template = self._template(plan)
        plan.records += 1
        return template.model_copy(update={
            "decision_id": stable_id("plan-record", plan.control.plan_id, str(plan.records)),
            "decided_at": now,
            "outcome": outcome,
            "reason_code": reason_code,
            "reason": reason,
            "gates": [],
            "command_ids": [],
            "review_id": review_id,
            "cancelled_steps": cancelled or [],
            "silence_id": None,
            "plan_id": plan.control.plan_id,
        })

    def _review(self, plan: PlanState, review_id: str, reason: str, now: datetime) -> ReviewRequest:
        template = self._template(plan)
        steps = [
            PlanStep(step_id=spec.step_id, executor=spec.executor, action=spec.action, target=spec.target,
                     parameters=dict(spec.parameters), depends_on=list(spec.depends_on))
            for spec in plan.control.steps
        ]
        return ReviewRequest(
            review_id=review_id,
            decision_id=plan.control.plan_id,
            event_id=template.event_id,
            trace_id=plan.control.trace_id,
            created_at=now,
            deadline=now + timedelta(seconds=self.settings.review_timeout),
            incident_id=plan.control.incident_id,
            entity=template.entity,
            subsystem=template.subsystem,
            anomaly_type=template.anomaly_type,
            severity=template.severity,
            confidence=template.confidence,
            score=plan.control.signal_score,
            risk_score=template.risk_score,
            reason_code="plan-failed",
            reason=reason,
            policy_id=plan.control.policy_id,
            policy_version=plan.control.policy_version,
            recommended_plan=steps,
            signal_count=template.incident_signals,
            updated_at=now,
            first_seen=plan.control.first_seen,
            last_seen=template.decided_at,
            risk_inputs=risk_inputs(template, template.asset),
            predicted_impact=["approving runs the whole plan again from its first step", *predicted_impact(
                list(plan.control.steps), template.asset)],
            steps=list(plan.control.steps),
            decision=plan.control.decision,
        )
