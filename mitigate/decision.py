"""Decide stage: match a signal against the policy table, apply the gates, choose the outcome.

Outcomes: auto (send the plan's commands), review (a human decides), shadow
(record what would have been sent, send nothing) and suppress (no action is
needed). Anything no policy covers goes to review, because the pipeline acts
only where a policy allows it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from mitigate.enrichment import Enriched
from mitigate.models import (
    ActionCommand,
    AnomalyEvent,
    AssetContext,
    DecisionRecord,
    GateResult,
    Outcome,
    PlanStep,
    ReviewRequest,
)
from mitigate.policy import WILDCARD, ActivePolicy, Gates, PolicyIndex, Step

# Weights of the risk score, in [0, 1]: risk = severity weight x criticality weight.
# An entity missing from the assets table counts as critical, because nothing
# shows that it is safe to touch.
SEVERITY_WEIGHT = {"low": 0.25, "medium": 0.5, "high": 0.75, "critical": 1.0}
CRITICALITY_WEIGHT = {"low": 0.25, "medium": 0.5, "high": 0.75, "critical": 1.0}


@dataclass(frozen=True, slots=True)
class Decision:
    """The record of a decision and what it sends."""

    record: DecisionRecord
    commands: tuple[ActionCommand, ...] = ()
    review: ReviewRequest | None = None


def stable_id(kind: str, *parts: str) -> str:
    """Derive an id from its inputs, so that reprocessing an event after a crash yields the same ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join(("mitigate", kind, *parts))))


def risk_score(signal: AnomalyEvent, asset: AssetContext | None) -> float:
    criticality = CRITICALITY_WEIGHT[asset.criticality] if asset is not None else 1.0
    return SEVERITY_WEIGHT[signal.severity] * criticality


def evaluate_gates(gates: Gates, signal: AnomalyEvent, asset: AssetContext | None) -> list[GateResult]:
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
    return results


def plan_steps(policy: ActivePolicy, signal: AnomalyEvent) -> list[PlanStep]:
    return [
        PlanStep(
            step_id=step.id,
            executor=step.executor,
            action=step.action,
            target=_target(step, signal),
            parameters=dict(step.parameters),
            depends_on=list(step.depends_on),
        )
        for step in policy.document.plan
    ]


def _target(step: Step, signal: AnomalyEvent) -> str:
    return step.target.format(entity=signal.entity, subsystem=signal.subsystem, fingerprint=signal.fingerprint)


class Decider:
    """Builds the Decision for an enriched signal."""

    def __init__(self, *, default_review_timeout: timedelta) -> None:
        self.default_review_timeout = default_review_timeout

    def decide(self, enriched: Enriched, policies: PolicyIndex, now: datetime) -> Decision:
        signal = enriched.accepted.event
        decision_id = stable_id("decision", signal.event_id)
        risk = risk_score(signal, enriched.asset)

        if signal.status == "resolved":
            record = self._record(enriched, decision_id, now, "suppress", "signal-resolved",
                                  "the detector reports the signal as resolved; nothing to do", risk)
            return Decision(record)

        match = policies.match(signal)
        if match is None:
            reason = (
                f"no policy covers anomaly_type={signal.anomaly_type} subsystem={signal.subsystem} "
                f"severity={signal.severity}; without a policy a human decides"
            )
            return self._to_review(enriched, decision_id, now, "no-policy", reason, risk, None, [], [])

        policy = match.policy
        steps = plan_steps(policy, signal)
        if match.tied_with:
            reason = (
                f"policies {policy.policy_id} and {', '.join(match.tied_with)} match with the same specificity; "
                "make one of them more specific"
            )
            return self._to_review(enriched, decision_id, now, "policy-tie", reason, risk, policy, [], steps)

        gates = evaluate_gates(policy.document.gates, signal, enriched.asset)
        failed = [gate for gate in gates if not gate.passed]
        gate_failures = "gates failed: " + "; ".join(
            f"{gate.name} {gate.value} (needs {gate.threshold})" for gate in failed
        )
        commands = self._commands(enriched, decision_id, policy, now)
        summary = ", ".join(f"{command.executor}/{command.action}" for command in commands)

        if policy.document.mode == "shadow":
            # A shadow policy creates no work for anyone, reviewers included.
            would = f"would ask for review, {gate_failures}" if failed else (
                f"would send {len(commands)} commands: {summary}"
            )
            record = self._record(enriched, decision_id, now, "shadow", "shadow-mode",
                                  f"policy in shadow mode; {would}", risk, policy, gates)
            return Decision(record)

        if failed:
            return self._to_review(enriched, decision_id, now, "gate-failed", gate_failures, risk, policy, gates, steps)

        reason = f"all {len(gates)} gates passed; sent {len(commands)} commands: {summary}"
        waiting = [step.id for step in policy.document.plan if step.depends_on]
        if waiting:
            # TODO: steps with dependencies wait for the orchestrate stage, which
            # sends them once the steps they depend on report results. Until that
            # stage exists they are listed here and never sent.
            reason += f"; steps waiting for results: {', '.join(waiting)}"
        record = self._record(enriched, decision_id, now, "auto", "policy-matched", reason, risk, policy, gates,
                              command_ids=[command.command_id for command in commands])
        return Decision(record, tuple(commands))

    def _commands(
        self, enriched: Enriched, decision_id: str, policy: ActivePolicy, now: datetime
    ) -> list[ActionCommand]:
        signal = enriched.accepted.event
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
                    event_id=signal.event_id,
                    trace_id=enriched.trace_id,
                    issued_at=now,
                    deadline=now + timedelta(seconds=step.timeout_s),
                    attempt=1,
                    executor=step.executor,
                    action=step.action,
                    target=_target(step, signal),
                    parameters=dict(step.parameters),
                    step_id=step.id,
                    depends_on=list(step.depends_on),
                    policy_id=policy.policy_id,
                    policy_version=policy.version,
                )
            )
        return commands

    def _to_review(
        self,
        enriched: Enriched,
        decision_id: str,
        now: datetime,
        reason_code: str,
        reason: str,
        risk: float,
        policy: ActivePolicy | None,
        gates: list[GateResult],
        steps: list[PlanStep],
    ) -> Decision:
        signal = enriched.accepted.event
        review_id = stable_id("review", decision_id)
        timeout = (
            timedelta(seconds=policy.document.review_timeout_s) if policy is not None else self.default_review_timeout
        )
        review = ReviewRequest(
            review_id=review_id,
            decision_id=decision_id,
            event_id=signal.event_id,
            trace_id=enriched.trace_id,
            created_at=now,
            deadline=now + timeout,
            entity=signal.entity,
            subsystem=signal.subsystem,
            anomaly_type=signal.anomaly_type,
            severity=signal.severity,
            confidence=signal.confidence,
            score=signal.score,
            risk_score=risk,
            reason_code=reason_code,
            reason=reason,
            policy_id=policy.policy_id if policy is not None else None,
            policy_version=policy.version if policy is not None else None,
            gates=gates,
            recommended_plan=steps,
        )
        record = self._record(enriched, decision_id, now, "review", reason_code, reason, risk, policy, gates,
                              review_id=review_id)
        return Decision(record, review=review)

    @staticmethod
    def _record(
        enriched: Enriched,
        decision_id: str,
        now: datetime,
        outcome: Outcome,
        reason_code: str,
        reason: str,
        risk: float,
        policy: ActivePolicy | None = None,
        gates: list[GateResult] | None = None,
        *,
        command_ids: list[str] | None = None,
        review_id: str | None = None,
    ) -> DecisionRecord:
        signal = enriched.accepted.event
        return DecisionRecord(
            decision_id=decision_id,
            decided_at=now,
            event_id=signal.event_id,
            trace_id=enriched.trace_id,
            fingerprint=signal.fingerprint,
            entity=signal.entity,
            subsystem=signal.subsystem,
            anomaly_type=signal.anomaly_type,
            severity=signal.severity,
            confidence=signal.confidence,
            signal_status=signal.status,
            outcome=outcome,
            reason_code=reason_code,
            reason=reason,
            policy_id=policy.policy_id if policy is not None else None,
            policy_version=policy.version if policy is not None else None,
            rule=policy.document.match.describe() if policy is not None else None,
            risk_score=risk,
            gates=gates or [],
            command_ids=command_ids or [],
            review_id=review_id,
            lineage=enriched.lineage,
            asset=enriched.asset_snapshot,
        )
