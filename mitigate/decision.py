"""Decide stage: match a signal against the policy table, apply the gates, choose the outcome.

Outcomes: auto (send the plan's commands), review (a human decides), shadow
(record what would have been sent, send nothing) and suppress (no action is
needed). Anything no policy covers goes to review, because the pipeline acts
only where a policy allows it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mitigate.enrichment import asset_snapshot
from mitigate.models import (
    ActionCommand,
    AnomalyEvent,
    AssetContext,
    AssetSnapshot,
    DecisionRecord,
    GateResult,
    CompensationSpec,
    Outcome,
    PlanControl,
    PlanStep,
    PlanStepSpec,
    ReviewRequest,
    Signal,
)
from mitigate.policy import WILDCARD, ActivePolicy, Gates, PolicyIndex, Step, format_duration

# Weights of the risk score, in [0, 1]: risk = severity weight x criticality weight.
# An entity missing from the assets table counts as critical, because nothing
# shows that it is safe to touch.
SEVERITY_WEIGHT = {"low": 0.25, "medium": 0.5, "high": 0.75, "critical": 1.0}
CRITICALITY_WEIGHT = {"low": 0.25, "medium": 0.5, "high": 0.75, "critical": 1.0}


@dataclass(frozen=True, slots=True)
class Decision:
    """The record of a decision and what it sends."""

    record: DecisionRecord
    commands: tuple[ActionCommand, ...] = ()  # the first commands of the plan, which the orchestrator sends
    review: ReviewRequest | None = None
    plan: PlanControl | None = None  # start or cancel of the incident's plan
    opened_incident: bool = False  # the signal opened a new incident


@dataclass(frozen=True, slots=True)
class IncidentView:
    """Summary of the incident a signal belongs to, as the decide stage uses it."""

    incident_id: str
    signals: int
    first_seen: datetime
    last_seen: datetime
    trigger: str = "new incident"  # or "severity rose", "repeat after the repeat interval"


class Limiter(Protocol):
    """Blast-radius limits (budgets, run caps, circuit breaker) consulted before acting."""

    def gates(self, policy: ActivePolicy, signal: Signal, steps: list[PlanStep], now: datetime) -> list[GateResult]:
        ...

    def spend(self, policy: ActivePolicy, signal: Signal, steps: list[PlanStep], now: datetime) -> None:
        ...


def stable_id(kind: str, *parts: str) -> str:
    """Derive an id from its inputs, so that reprocessing an event after a crash yields the same ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join(("mitigate", kind, *parts))))


def canary_bucket(incident_id: str) -> float:
    """Map an incident id to [0, 1) deterministically, so every worker and replay agrees."""
    digest = hashlib.sha256(incident_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def risk_score(signal: AnomalyEvent, asset: AssetContext | None) -> float:
    criticality = CRITICALITY_WEIGHT[asset.criticality] if asset is not None else 1.0
    return SEVERITY_WEIGHT[signal.severity] * criticality


def evaluate_gates(
    gates: Gates, signal: AnomalyEvent, asset: AssetContext | None, now: datetime | None = None
) -> list[GateResult]:
    """Evaluate every gate of the policy, with its observed value and its threshold."""
    results = [
        GateResult(
            name="min-confidence",
            passed=signal.confidence >= gates.min_confidence,
            # repr, not a rounded format: 0.8496 must not read as 0.850 against 0.85.
            value=repr(signal.confidence),
            threshold=f">= {gates.min_confidence!r}",
        ),
        GateResult(
            name="approval-severity",
            passed=signal.severity not in gates.require_approval_for,
            value=signal.severity,
            threshold=f"not in [{', '.join(gates.require_approval_for)}]",
        ),
    ]
    if gates.require_known_asset:
        results.append(
            GateResult(
                name="known-asset",
                passed=asset is not None,
                value="known" if asset is not None else "not in assets table",
                threshold="known",
            )
        )
    if gates.max_criticality != "critical":
        criticality = asset.criticality if asset is not None else "critical"
        results.append(
            GateResult(
                name="max-criticality",
                passed=CRITICALITY_WEIGHT[criticality] <= CRITICALITY_WEIGHT[gates.max_criticality],
                value=criticality if asset is not None else "unknown (counts as critical)",
                threshold=f"<= {gates.max_criticality}",
            )
        )
    if gates.environments != [WILDCARD]:
        environment = asset.environment if asset is not None else "unknown"
        results.append(
            GateResult(
                name="environment",
                passed=environment in gates.environments,
                value=environment,
                threshold=f"in [{', '.join(gates.environments)}]",
            )
        )
    if gates.respect_change_freeze:
        frozen = asset is not None and asset.change_freeze
        results.append(
            GateResult(
                name="change-freeze",
                passed=not frozen,
                value="frozen" if frozen else "not frozen",
                threshold="not frozen",
            )
        )
    if gates.respect_maintenance:
        window = asset.maintenance_at(now or signal.event_time) if asset is not None else None
        value = "none in progress"
        if window is not None:
            value = f"in window {window.start.isoformat()} to {window.end.isoformat()}"
            if window.reason:
                value += f" ({window.reason})"
        results.append(
            GateResult(name="maintenance-window", passed=window is None, value=value, threshold="none in progress")
        )
    return results


def plan_steps(policy: ActivePolicy, signal: AnomalyEvent) -> list[PlanStep]:
    return [
        PlanStep(
            step_id=step.id,
            executor=step.executor,
            action=step.action,
            target=step_target(step, signal),
            parameters=dict(step.parameters),
            depends_on=list(step.depends_on),
        )
        for step in policy.document.plan
    ]


def step_target(step: Step, signal: AnomalyEvent) -> str:
    return step.target.format(entity=signal.entity, subsystem=signal.subsystem, fingerprint=signal.fingerprint)


def step_specs(policy: ActivePolicy, signal: AnomalyEvent) -> list[PlanStepSpec]:
    """Describe the policy's plan for the orchestrator: every step with its timeout, retries and compensation."""
    steps = []
    for step in policy.document.plan:
        compensation = None
        if step.compensate is not None:
            compensation = CompensationSpec(
                executor=step.compensate.executor or step.executor,
                action=step.compensate.action,
                parameters=dict(step.compensate.parameters),
                timeout_ms=int(step.compensate.timeout_s * 1000),
            )
        steps.append(PlanStepSpec(
            step_id=step.id, executor=step.executor, action=step.action, target=step_target(step, signal),
            parameters=dict(step.parameters), preconditions=dict(step.preconditions),
            depends_on=list(step.depends_on), timeout_ms=int(step.timeout_s * 1000), retries=step.retries,
            compensate=compensation,
        ))
    return steps


def plan_control(
    policy: ActivePolicy, signal: Signal, decision_id: str, incident_id: str, now: datetime,
    first_seen: datetime | None = None,
) -> PlanControl:
    return PlanControl(
        kind="start", incident_id=incident_id, plan_id=decision_id, trace_id=signal.trace_id, issued_at=now,
        policy_id=policy.policy_id, policy_version=policy.version, steps=step_specs(policy, signal.event),
        signal_score=signal.event.score, first_seen=first_seen or signal.event.event_time,
    )


def risk_inputs(rated: AnomalyEvent | DecisionRecord, asset: AssetContext | AssetSnapshot | None) -> dict[str, str]:
    """Describe the inputs of risk_score for a signal or for the record of its decision, so a reviewer sees why."""
    inputs = {
        "severity": rated.severity,
        "severity_weight": repr(SEVERITY_WEIGHT[rated.severity]),
        "criticality": asset.criticality if asset is not None else "unknown (not in the assets table, counts as critical)",
        "criticality_weight": repr(CRITICALITY_WEIGHT[asset.criticality] if asset is not None else 1.0),
        "formula": "severity_weight x criticality_weight",
        "confidence": repr(rated.confidence),
    }
    if asset is not None:
        inputs["environment"] = asset.environment
        inputs["change_freeze"] = "true" if asset.change_freeze else "false"
    return inputs


def predicted_impact(steps: list[PlanStepSpec], asset: AssetContext | AssetSnapshot | None) -> list[str]:
    """Describe what running the plan would touch, one readable line each."""
    if not steps:
        return ["no plan: nothing runs on approval; the incident is handled by hand"]
    executors = sorted({step.executor for step in steps})
    lines = [f"{_count(len(steps), 'command')} to {', '.join(executors)}: "
             + ", ".join(f"{step.executor}/{step.action} on {step.target}" for step in steps)]
    targets = sorted({step.target for step in steps})
    if asset is not None:
        frozen = ", change freeze" if asset.change_freeze else ""
        lines.append(f"targets {', '.join(targets)}; asset criticality {asset.criticality}, environment "
                     f"{asset.environment}, owner {asset.owner}{frozen}")
    else:
        lines.append(f"targets {', '.join(targets)}; the asset is not in the assets table")
    undo = [step.step_id for step in steps if step.compensate is not None]
    lines.append(f"{len(undo)} of {_count(len(steps), 'step')} undone automatically if a later step fails"
                 + (f": {', '.join(undo)}" if undo else ""))
    longest_ms = sum(step.timeout_ms * (step.retries + 1) for step in steps)
    lines.append(f"runs for at most {format_duration(round(longest_ms / 1000))} "
                 "(every step's timeout times its attempts, one after another)")
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _failures(gates: list[GateResult]) -> str:
    return "; ".join(f"{gate.name} {gate.value} (needs {gate.threshold})" for gate in gates if not gate.passed)


class Decider:
    """Builds the Decision for a signal."""

    def __init__(
        self, *, default_review_timeout: timedelta, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.default_review_timeout = default_review_timeout
        # Review deadlines are for people, so they count from the later of the
        # event time and this clock: a replayed old event still gets its full time.
        self.clock = clock

    def decide(
        self,
        signal: Signal,
        policies: PolicyIndex,
        now: datetime,
        incident: IncidentView | None = None,
        limiter: Limiter | None = None,
    ) -> Decision:
        event = signal.event
        decision_id = stable_id("decision", event.event_id)
        risk = risk_score(event, signal.asset)
        build = RecordBuilder(signal, decision_id, now, risk, incident)

        if event.status == "resolved":
            return Decision(build("suppress", "signal-resolved", "the detector reports the signal as resolved; "
                                  "nothing to do"))

        match = policies.match(event)
        if match is None:
            reason = (
                f"no policy covers anomaly_type={event.anomaly_type} subsystem={event.subsystem} "
                f"severity={event.severity}; without a policy a human decides"
            )
            return self.review(build, "no-policy", reason, None, [], [])

        policy = match.policy
        steps = plan_steps(policy, event)
        if match.tied_with:
            reason = (
                f"policies {policy.policy_id} and {', '.join(match.tied_with)} match with the same specificity; "
                "make one of them more specific"
            )
            return self.review(build, "policy-tie", reason, policy, [], steps)

        commands = self._commands(signal, decision_id, policy, now, incident)
        gates = evaluate_gates(policy.document.gates, event, signal.asset, now)
        # Limits count every step of the plan, not only the first commands: all of them will act.
        limit_gates = limiter.gates(policy, signal, steps, now) if limiter is not None else []
        mode, mode_note = self._mode(policy, incident.incident_id if incident else event.event_id)
        summary = ", ".join(f"{command.executor}/{command.action}" for command in commands)

        if mode == "shadow":
            # A shadow decision creates no work for anyone, reviewers included.
            failed = _failures(gates + limit_gates)
            would = f"would ask for review, gates failed: {failed}" if failed else (
                f"would send {_count(len(commands), 'command')}: {summary}"
            )
            return Decision(build("shadow", "shadow-mode", f"{mode_note}; {would}", policy, gates + limit_gates))

        if _failures(gates):
            return self.review(build, "gate-failed", "gates failed: " + _failures(gates),
                                   policy, gates + limit_gates, steps)
        if _failures(limit_gates):
            return self.review(build, "limit-reached", "automation limits reached: " + _failures(limit_gates),
                                   policy, gates + limit_gates, steps)

        if limiter is not None:
            limiter.spend(policy, signal, steps, now)
        checks = f"all {_count(len(gates), 'gate')}" + (f" and {_count(len(limit_gates), 'limit')}" if limit_gates else "")
        reason = (f"{checks} passed; plan of {_count(len(steps), 'step')} "
                  f"started, first {_count(len(commands), 'command')}: {summary}")
        if mode_note:
            reason = f"{mode_note}; {reason}"
        waiting = [step.id for step in policy.document.plan if step.depends_on]
        if waiting:
            reason += f"; after their dependencies: {', '.join(waiting)}"
        record = build("auto", "policy-matched", reason, policy, gates + limit_gates,
                       command_ids=[command.command_id for command in commands], plan_id=decision_id)
        plan = plan_control(policy, signal, decision_id, incident.incident_id if incident else event.event_id, now,
                            incident.first_seen if incident else None)
        return Decision(record, tuple(commands), plan=plan)

    @staticmethod
    def _mode(policy: ActivePolicy, incident_id: str) -> tuple[str, str]:
        document = policy.document
        if document.mode != "canary":
            return document.mode, "policy in shadow mode" if document.mode == "shadow" else ""
        assert document.canary_fraction is not None  # the policy model requires it for canary
        bucket = canary_bucket(incident_id)
        if bucket < document.canary_fraction:
            return "enforce", f"canary: enforced for this incident (bucket {bucket:.4f} < {document.canary_fraction:g})"
        return "shadow", f"canary: shadow for this incident (bucket {bucket:.4f} >= {document.canary_fraction:g})"

    def _commands(
        self, signal: Signal, decision_id: str, policy: ActivePolicy, now: datetime, incident: IncidentView | None
    ) -> list[ActionCommand]:
        event = signal.event
        commands = []
        for step in policy.document.plan:
            if step.depends_on:
                continue
            idempotency_key = stable_id("step", decision_id, step.id)
            commands.append(
                ActionCommand(
                    command_id=stable_id("command", idempotency_key, "1"),
                    idempotency_key=idempotency_key,
                    decision_id=decision_id,
                    event_id=event.event_id,
                    incident_id=incident.incident_id if incident else None,
                    trace_id=signal.trace_id,
                    issued_at=now,
                    deadline=now + timedelta(seconds=step.timeout_s),
                    attempt=1,
                    executor=step.executor,
                    action=step.action,
                    target=step_target(step, event),
                    parameters=dict(step.parameters),
                    step_id=step.id,
                    depends_on=list(step.depends_on),
                    policy_id=policy.policy_id,
                    policy_version=policy.version,
                    preconditions=dict(step.preconditions),
                )
            )
        return commands

    def review(
        self,
        build: RecordBuilder,
        reason_code: str,
        reason: str,
        policy: ActivePolicy | None,
        gates: list[GateResult],
        steps: list[PlanStep],
    ) -> Decision:
        """Hand the signal to a human: a review request with the plan as the recommendation."""
        event = build.signal.event
        incident = build.incident
        review_id = stable_id("review", build.decision_id)
        timeout = (
            timedelta(seconds=policy.document.review_timeout_s) if policy is not None else self.default_review_timeout
        )
        start = max(build.now, self.clock()) if self.clock is not None else build.now
        specs = step_specs(policy, event) if policy is not None and steps else []
        review = ReviewRequest(
            review_id=review_id,
            decision_id=build.decision_id,
            event_id=event.event_id,
            trace_id=build.signal.trace_id,
            created_at=build.now,
            deadline=start + timeout,
            incident_id=incident.incident_id if incident else None,
            entity=event.entity,
            subsystem=event.subsystem,
            anomaly_type=event.anomaly_type,
            severity=event.severity,
            confidence=event.confidence,
            score=event.score,
            risk_score=build.risk,
            reason_code=reason_code,
            reason=reason,
            policy_id=policy.policy_id if policy is not None else None,
            policy_version=policy.version if policy is not None else None,
            gates=gates,
            recommended_plan=steps,
            signal_count=incident.signals if incident else 1,
            first_seen=incident.first_seen if incident else event.event_time,
            last_seen=incident.last_seen if incident else event.event_time,
            updated_at=build.now,
            quorum=policy.document.review.quorum if policy is not None else 1,
            on_expiry=policy.document.review.on_expiry if policy is not None else "escalate",
            risk_inputs=risk_inputs(event, build.signal.asset),
            predicted_impact=predicted_impact(specs, build.signal.asset),
            steps=specs,
        )
        record = build("review", reason_code, reason, policy, gates, review_id=review_id)
        return Decision(record, review=review)


@dataclass(frozen=True, slots=True)
class RecordBuilder:
    """Builds DecisionRecords for one signal; the arguments that differ per outcome are passed per call."""

    signal: Signal
    decision_id: str
    now: datetime
    risk: float
    incident: IncidentView | None = None

    def __call__(
        self,
        outcome: Outcome,
        reason_code: str,
        reason: str,
        policy: ActivePolicy | None = None,
        gates: list[GateResult] | None = None,
        *,
        command_ids: list[str] | None = None,
        review_id: str | None = None,
        cancelled_steps: list[str] | None = None,
        silence_id: str | None = None,
        plan_id: str | None = None,
    ) -> DecisionRecord:
        event = self.signal.event
        return DecisionRecord(
            decision_id=self.decision_id,
            decided_at=self.now,
            event_id=event.event_id,
            trace_id=self.signal.trace_id,
            incident_id=self.incident.incident_id if self.incident else None,
            fingerprint=event.fingerprint,
            entity=event.entity,
            subsystem=event.subsystem,
            anomaly_type=event.anomaly_type,
            severity=event.severity,
            confidence=event.confidence,
            signal_status=event.status,
            outcome=outcome,
            reason_code=reason_code,
            reason=reason,
            policy_id=policy.policy_id if policy is not None else None,
            policy_version=policy.version if policy is not None else None,
            rule=policy.document.match.describe() if policy is not None else None,
            risk_score=self.risk,
            gates=gates or [],
            command_ids=command_ids or [],
            review_id=review_id,
            lineage=self.signal.lineage,
            asset=asset_snapshot(self.signal.asset),
            incident_signals=self.incident.signals if self.incident else 1,
            cancelled_steps=cancelled_steps or [],
            silence_id=silence_id,
            plan_id=plan_id,
        )
