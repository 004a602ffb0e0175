"""Unit tests for mitigate.decision: outcomes, gates, commands, review requests and ids."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mitigate.decision import Decider, Decision, IncidentView, canary_bucket, evaluate_gates, risk_score, stable_id
from mitigate.enrichment import enrich
from mitigate.intake import Accepted, SourceMessage
from mitigate.models import (
    AnomalyEvent,
    AssetContext,
    CompensationSpec,
    GateResult,
    MaintenanceWindow,
    PlanControl,
    PlanStep,
    ReviewRequest,
    Signal,
)
from mitigate.policy import ActivePolicy, Gates, PolicyDocument, PolicyIndex
from tests.unit.builders import NOW, active_policy, anomaly_event, asset_context

DEFAULT_REVIEW_TIMEOUT = timedelta(minutes=30)
KNOWN_ASSET = asset_context()
WRITER_SCHEMA = "fingerprint:2a11a66bf2fb32de"

# active_policy() covers spikes in industrial/* of medium severity or more. Its gates need
# confidence 0.85, approval for critical, a known asset in production and no change freeze.
# Steps rollback-config and open-ticket run at once, and verify waits for rollback-config.
COOLING = PolicyIndex([active_policy(version=3)])


def enriched(event: AnomalyEvent | None = None, asset: AssetContext | None = KNOWN_ASSET) -> Signal:
    event = event if event is not None else anomaly_event()
    message = SourceMessage("anomalies", 1, 100, NOW, event.entity.encode(), b"\xc3\x01", ())
    return enrich(message, Accepted(event, WRITER_SCHEMA), asset, ingest_time=NOW, pipeline_version="0.1.0")


def decide(
    event: AnomalyEvent | None = None,
    asset: AssetContext | None = KNOWN_ASSET,
    policies: PolicyIndex = COOLING,
    now: Any = NOW,
) -> Decision:
    return Decider(default_review_timeout=DEFAULT_REVIEW_TIMEOUT).decide(enriched(event, asset), policies, now)


def review_request(*args: Any, **kwargs: Any) -> ReviewRequest:
    """Decide like decide() and return the review request, which the case must produce."""
    review = decide(*args, **kwargs).review
    assert review is not None
    return review


# (case, event changes, asset, policies, outcome, reason code)
OUTCOMES = [
    ("resolved", {"status": "resolved"}, KNOWN_ASSET, COOLING, "suppress", "signal-resolved"),
    ("resolved-without-policy", {"status": "resolved"}, KNOWN_ASSET, PolicyIndex([]), "suppress", "signal-resolved"),
    ("no-policy", {}, KNOWN_ASSET, PolicyIndex([]), "review", "no-policy"),
    ("no-policy-for-type", {"anomaly_type": "level_shift"}, KNOWN_ASSET, COOLING, "review", "no-policy"),
    ("low-confidence", {"confidence": 0.7}, KNOWN_ASSET, COOLING, "review", "gate-failed"),
    ("critical-severity", {"severity": "critical"}, KNOWN_ASSET, COOLING, "review", "gate-failed"),
    ("unknown-asset", {}, None, COOLING, "review", "gate-failed"),
    ("change-freeze", {}, asset_context(change_freeze=True), COOLING, "review", "gate-failed"),
    ("environment-not-allowed", {}, asset_context(environment="staging"), COOLING, "review", "gate-failed"),
    ("shadow-mode", {}, KNOWN_ASSET, PolicyIndex([active_policy(mode="shadow")]), "shadow", "shadow-mode"),
    ("tie", {}, KNOWN_ASSET, PolicyIndex([active_policy(), active_policy(id="cooling-spike-copy")]),
     "review", "policy-tie"),
    ("all-gates-pass", {}, KNOWN_ASSET, COOLING, "auto", "policy-matched"),
    ("unknown-asset-allowed", {}, None,
     PolicyIndex([active_policy(gates={"require_known_asset": False, "min_confidence": 0.85})]),
     "auto", "policy-matched"),
]
OUTCOME_IDS = [case[0] for case in OUTCOMES]


@pytest.mark.parametrize(
    ("changes", "asset", "policies", "outcome"), [case[1:5] for case in OUTCOMES], ids=OUTCOME_IDS
)
def test_outcome_for_case(
    changes: dict[str, Any], asset: AssetContext | None, policies: PolicyIndex, outcome: str
) -> None:
    assert decide(anomaly_event(**changes), asset, policies).record.outcome == outcome


@pytest.mark.parametrize(
    ("changes", "asset", "policies", "reason_code"),
    [case[1:4] + case[5:] for case in OUTCOMES],
    ids=OUTCOME_IDS,
)
def test_reason_code_for_case(
    changes: dict[str, Any], asset: AssetContext | None, policies: PolicyIndex, reason_code: str
) -> None:
    assert decide(anomaly_event(**changes), asset, policies).record.reason_code == reason_code


@pytest.mark.parametrize(
    ("changes", "asset", "policies", "outcome"), [case[1:5] for case in OUTCOMES], ids=OUTCOME_IDS
)
def test_review_only_for_review(
    changes: dict[str, Any], asset: AssetContext | None, policies: PolicyIndex, outcome: str
) -> None:
    decision = decide(anomaly_event(**changes), asset, policies)

    assert (decision.review is not None) == (outcome == "review")


@pytest.mark.parametrize(
    ("changes", "asset", "policies", "outcome"), [case[1:5] for case in OUTCOMES], ids=OUTCOME_IDS
)
def test_commands_only_for_auto(
    changes: dict[str, Any], asset: AssetContext | None, policies: PolicyIndex, outcome: str
) -> None:
    decision = decide(anomaly_event(**changes), asset, policies)

    assert (len(decision.commands) > 0) == (outcome == "auto")


# Gates

# (case, event changes, asset, gates that fail)
FAILED_GATES = [
    ("low-confidence", {"confidence": 0.7}, KNOWN_ASSET,
     [GateResult(name="min-confidence", passed=False, value="0.7", threshold=">= 0.85")]),
    ("critical-severity", {"severity": "critical"}, KNOWN_ASSET,
     [GateResult(name="approval-severity", passed=False, value="critical", threshold="not in [critical]")]),
    ("unknown-asset", {}, None,
     [GateResult(name="known-asset", passed=False, value="not in assets table", threshold="known"),
      GateResult(name="environment", passed=False, value="unknown", threshold="in [production]")]),
    ("change-freeze", {}, asset_context(change_freeze=True),
     [GateResult(name="change-freeze", passed=False, value="frozen", threshold="not frozen")]),
    ("environment-not-allowed", {}, asset_context(environment="staging"),
     [GateResult(name="environment", passed=False, value="staging", threshold="in [production]")]),
]
FAILED_GATE_IDS = [case[0] for case in FAILED_GATES]


@pytest.mark.parametrize(
    ("changes", "asset", "failed"), [case[1:] for case in FAILED_GATES], ids=FAILED_GATE_IDS
)
def test_failed_gates_recorded(changes: dict[str, Any], asset: AssetContext | None, failed: list[GateResult]) -> None:
    record = decide(anomaly_event(**changes), asset).record

    assert [gate for gate in record.gates if not gate.passed] == failed


@pytest.mark.parametrize(
    ("changes", "asset", "failed"), [case[1:] for case in FAILED_GATES], ids=FAILED_GATE_IDS
)
def test_failed_gates_in_reason(changes: dict[str, Any], asset: AssetContext | None, failed: list[GateResult]) -> None:
    record = decide(anomaly_event(**changes), asset).record

    assert record.reason == "gates failed: " + "; ".join(
        f"{gate.name} {gate.value} (needs {gate.threshold})" for gate in failed
    )


def test_low_confidence_reason_text() -> None:
    record = decide(anomaly_event(confidence=0.7)).record

    assert record.reason == "gates failed: min-confidence 0.7 (needs >= 0.85)"


def test_passing_gates_listed() -> None:
    record = decide().record

    assert record.gates == [
        GateResult(name="min-confidence", passed=True, value="0.95", threshold=">= 0.85"),
        GateResult(name="approval-severity", passed=True, value="high", threshold="not in [critical]"),
        GateResult(name="known-asset", passed=True, value="known", threshold="known"),
        GateResult(name="environment", passed=True, value="production", threshold="in [production]"),
        GateResult(name="change-freeze", passed=True, value="not frozen", threshold="not frozen"),
        GateResult(name="maintenance-window", passed=True, value="none in progress", threshold="none in progress"),
    ]


def test_confidence_at_threshold_passes() -> None:
    (gate, *_) = evaluate_gates(Gates(min_confidence=0.85), anomaly_event(confidence=0.85), KNOWN_ASSET)

    assert gate.passed


def test_failed_confidence_text_below_threshold() -> None:
    (gate, *_) = evaluate_gates(Gates(min_confidence=0.85), anomaly_event(confidence=0.8496), KNOWN_ASSET)

    assert not gate.passed
    assert float(gate.value) < 0.85


@pytest.mark.parametrize(
    ("gates", "names"),
    [
        (Gates(), ["min-confidence", "approval-severity", "known-asset", "change-freeze", "maintenance-window"]),
        (Gates(require_known_asset=False, respect_change_freeze=False, respect_maintenance=False),
         ["min-confidence", "approval-severity"]),
        (Gates(environments=["production", "staging"]),
         ["min-confidence", "approval-severity", "known-asset", "environment", "change-freeze", "maintenance-window"]),
        (Gates(max_criticality="high"),
         ["min-confidence", "approval-severity", "known-asset", "max-criticality", "change-freeze",
          "maintenance-window"]),
    ],
    ids=["defaults", "asset-gates-off", "environments-listed", "max-criticality-set"],
)
def test_gates_evaluated_per_policy(gates: Gates, names: list[str]) -> None:
    assert [gate.name for gate in evaluate_gates(gates, anomaly_event(), KNOWN_ASSET)] == names


def test_no_approval_severities() -> None:
    gates = evaluate_gates(Gates(require_approval_for=[]), anomaly_event(severity="critical"), KNOWN_ASSET)

    assert gates[1] == GateResult(name="approval-severity", passed=True, value="critical", threshold="not in []")


PUMP_SWAP = MaintenanceWindow(start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1), reason="pump swap")


@pytest.mark.parametrize(
    ("window", "passed"),
    [
        (PUMP_SWAP, False),
        (MaintenanceWindow(start=NOW, end=NOW + timedelta(hours=1)), False),
        (MaintenanceWindow(start=NOW - timedelta(hours=1), end=NOW), True),
        (MaintenanceWindow(start=NOW + timedelta(seconds=1), end=NOW + timedelta(hours=1)), True),
    ],
    ids=["in-window", "starts-now", "ended-now", "starts-later"],
)
def test_maintenance_window_bounds(window: MaintenanceWindow, passed: bool) -> None:
    gates = evaluate_gates(Gates(), anomaly_event(), asset_context(maintenance_windows=[window]), NOW)

    assert gates[-1].name == "maintenance-window"
    assert gates[-1].passed is passed


def test_maintenance_window_failed_text() -> None:
    record = decide(asset=asset_context(maintenance_windows=[PUMP_SWAP])).record

    assert [gate for gate in record.gates if not gate.passed] == [
        GateResult(
            name="maintenance-window",
            passed=False,
            value=f"in window {PUMP_SWAP.start.isoformat()} to {PUMP_SWAP.end.isoformat()} (pump swap)",
            threshold="none in progress",
        )
    ]


def test_maintenance_window_sends_review() -> None:
    record = decide(asset=asset_context(maintenance_windows=[PUMP_SWAP])).record

    assert record.outcome == "review"
    assert record.reason_code == "gate-failed"


def test_maintenance_gate_uses_decision_time() -> None:
    later = asset_context(maintenance_windows=[MaintenanceWindow(start=NOW + timedelta(hours=1),
                                                                 end=NOW + timedelta(hours=2))])

    assert decide(asset=later, now=NOW + timedelta(minutes=90)).record.outcome == "review"


# (case, max_criticality, asset, expected gate)
CRITICALITY_CASES = [
    ("below-limit", "high", asset_context(criticality="medium"),
     GateResult(name="max-criticality", passed=True, value="medium", threshold="<= high")),
    ("at-limit", "high", asset_context(criticality="high"),
     GateResult(name="max-criticality", passed=True, value="high", threshold="<= high")),
    ("above-limit", "medium", asset_context(criticality="high"),
     GateResult(name="max-criticality", passed=False, value="high", threshold="<= medium")),
    ("unknown-asset", "high", None,
     GateResult(name="max-criticality", passed=False, value="unknown (counts as critical)", threshold="<= high")),
]


@pytest.mark.parametrize(
    ("limit", "asset", "expected"),
    [case[1:] for case in CRITICALITY_CASES],
    ids=[case[0] for case in CRITICALITY_CASES],
)
def test_max_criticality_gate(limit: str, asset: AssetContext | None, expected: GateResult) -> None:
    gates = evaluate_gates(Gates(max_criticality=limit), anomaly_event(), asset)

    assert [gate for gate in gates if gate.name == "max-criticality"] == [expected]


def test_critical_limit_adds_no_gate() -> None:
    gates = evaluate_gates(Gates(max_criticality="critical"), anomaly_event(), KNOWN_ASSET)

    assert "max-criticality" not in [gate.name for gate in gates]


# Commands of an auto decision


def test_auto_sends_independent_steps() -> None:
    decision = decide()

    assert [command.step_id for command in decision.commands] == ["rollback-config", "open-ticket"]


def test_auto_record_lists_commands() -> None:
    decision = decide()

    assert decision.record.command_ids == [command.command_id for command in decision.commands]


def test_auto_reason_names_waiting_steps() -> None:
    assert decide().record.reason == (
        "all 6 gates passed; plan of 3 steps started, first 2 commands: demo-target/rollback-config, "
        "ticket/open-ticket; after their dependencies: verify"
    )


def test_auto_without_dependencies_reason() -> None:
    policy = active_policy(plan=[{"id": "notify", "executor": "ticket", "action": "open-ticket"}])

    assert decide(policies=PolicyIndex([policy])).record.reason == (
        "all 6 gates passed; plan of 1 step started, first 1 command: ticket/open-ticket"
    )


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("executor", ["demo-target", "ticket"]),
        ("action", ["rollback-config", "open-ticket"]),
        ("target", ["machine-temperature-01", "industrial/cooling/machine-temperature-01"]),
        ("parameters", [{"to_version": "last-known-good"}, {"queue": "plant-operations"}]),
        ("deadline", [NOW + timedelta(seconds=120), NOW + timedelta(seconds=60)]),
        ("issued_at", [NOW, NOW]),
        ("attempt", [1, 1]),
        ("depends_on", [[], []]),
        ("policy_id", ["cooling-spike", "cooling-spike"]),
        ("policy_version", [3, 3]),
        ("event_id", [anomaly_event().event_id] * 2),
    ],
)
def test_command_field(attribute: str, expected: list[Any]) -> None:
    assert [getattr(command, attribute) for command in decide().commands] == expected


def test_command_carries_decision_and_trace() -> None:
    decision = decide()

    assert {command.decision_id for command in decision.commands} == {decision.record.decision_id}
    assert {command.trace_id for command in decision.commands} == {decision.record.trace_id}


# Plan of an auto decision, which the orchestrate stage runs


@pytest.mark.parametrize(
    ("changes", "asset", "policies", "outcome"), [case[1:5] for case in OUTCOMES], ids=OUTCOME_IDS
)
def test_plan_only_for_auto(
    changes: dict[str, Any], asset: AssetContext | None, policies: PolicyIndex, outcome: str
) -> None:
    decision = decide(anomaly_event(**changes), asset, policies)

    assert (decision.plan is not None) == (outcome == "auto")


def plan_of(decision: Decision) -> PlanControl:
    assert decision.plan is not None
    return decision.plan


def test_plan_starts_under_decision_id() -> None:
    decision = decide()
    plan = plan_of(decision)

    assert plan.kind == "start"
    assert plan.plan_id == decision.record.decision_id
    assert plan.trace_id == decision.record.trace_id
    assert plan.issued_at == NOW


def test_plan_names_policy_and_score() -> None:
    plan = plan_of(decide())

    assert (plan.policy_id, plan.policy_version) == ("cooling-spike", 3)
    assert plan.signal_score == anomaly_event().score


def test_plan_leaves_record_to_stage() -> None:
    # DecisionStage puts the encoded DecisionRecord in before sending the plan.
    assert plan_of(decide()).decision is None


def test_plan_without_incident_uses_event() -> None:
    assert plan_of(decide()).incident_id == anomaly_event().event_id


def test_plan_names_incident() -> None:
    incident = IncidentView(incident_id="incident-7", signals=2, first_seen=NOW, last_seen=NOW)
    decision = Decider(default_review_timeout=DEFAULT_REVIEW_TIMEOUT).decide(enriched(), COOLING, NOW, incident)

    assert plan_of(decision).incident_id == "incident-7"


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("step_id", ["rollback-config", "open-ticket", "verify"]),
        ("executor", ["demo-target", "ticket", "webhook"]),
        ("target", ["machine-temperature-01", "industrial/cooling/machine-temperature-01", "machine-temperature-01"]),
        ("timeout_ms", [120_000, 60_000, 300_000]),
        ("retries", [0, 0, 0]),
        ("depends_on", [[], [], ["rollback-config"]]),
        ("compensate", [None, None, None]),
    ],
)
def test_plan_step_field(attribute: str, expected: list[Any]) -> None:
    assert [getattr(step, attribute) for step in plan_of(decide()).steps] == expected


def test_plan_step_compensation() -> None:
    policy = active_policy(plan=[{
        "id": "rollback-config",
        "executor": "demo-target",
        "action": "rollback-config",
        "timeout_s": 90,
        "retries": 2,
        "preconditions": {"config_version": 42},
        "compensate": {"action": "restore-config", "parameters": {"to_version": "previous"}, "timeout_s": 30.5},
    }])

    (step,) = plan_of(decide(policies=PolicyIndex([policy]))).steps

    assert step.retries == 2
    assert step.preconditions == {"config_version": "42"}
    # A compensation without an executor goes to the executor of the step it undoes.
    assert step.compensate == CompensationSpec(executor="demo-target", action="restore-config",
                                               parameters={"to_version": "previous"}, timeout_ms=30_500)


def test_shadow_sends_nothing() -> None:
    decision = decide(policies=PolicyIndex([active_policy(mode="shadow")]))

    assert decision.commands == ()
    assert decision.record.command_ids == []


def test_shadow_reason_lists_commands() -> None:
    record = decide(policies=PolicyIndex([active_policy(mode="shadow")])).record

    assert record.reason == "policy in shadow mode; would send 2 commands: demo-target/rollback-config, ticket/open-ticket"


def test_tie_reason_names_policies() -> None:
    policies = PolicyIndex([active_policy(id="cooling-spike-copy"), active_policy()])

    assert decide(policies=policies).record.reason == (
        "policies cooling-spike and cooling-spike-copy match with the same specificity; make one of them more specific"
    )


def test_no_policy_reason_text() -> None:
    assert decide(policies=PolicyIndex([])).record.reason == (
        "no policy covers anomaly_type=spike subsystem=industrial/cooling severity=high; "
        "without a policy a human decides"
    )


def test_resolved_reason_text() -> None:
    assert decide(anomaly_event(status="resolved")).record.reason == (
        "the detector reports the signal as resolved; nothing to do"
    )


# Review requests

RECOMMENDED_PLAN = [
    PlanStep(step_id="rollback-config", executor="demo-target", action="rollback-config",
             target="machine-temperature-01", parameters={"to_version": "last-known-good"}),
    PlanStep(step_id="open-ticket", executor="ticket", action="open-ticket",
             target="industrial/cooling/machine-temperature-01", parameters={"queue": "plant-operations"}),
    PlanStep(step_id="verify", executor="webhook", action="verify-temperature", target="machine-temperature-01",
             depends_on=["rollback-config"]),
]


def test_review_carries_plan() -> None:
    review = review_request(anomaly_event(confidence=0.7))

    assert review.recommended_plan == RECOMMENDED_PLAN


def test_tie_review_carries_plan() -> None:
    review = review_request(policies=PolicyIndex([active_policy(), active_policy(id="cooling-spike-copy")]))

    assert review.recommended_plan == RECOMMENDED_PLAN


def test_no_policy_review_without_plan() -> None:
    review = review_request(policies=PolicyIndex([]))

    assert review.recommended_plan == []
    assert review.policy_id is None


def test_review_deadline_from_policy() -> None:
    assert review_request(anomaly_event(confidence=0.7)).deadline == NOW + timedelta(seconds=900)


def test_review_deadline_default() -> None:
    assert review_request(policies=PolicyIndex([])).deadline == NOW + DEFAULT_REVIEW_TIMEOUT


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("event_id", anomaly_event().event_id),
        ("entity", "machine-temperature-01"),
        ("subsystem", "industrial/cooling"),
        ("anomaly_type", "spike"),
        ("severity", "high"),
        ("confidence", 0.7),
        ("score", 6.25),
        ("reason_code", "gate-failed"),
        ("policy_id", "cooling-spike"),
        ("policy_version", 3),
        ("created_at", NOW),
    ],
)
def test_review_field(attribute: str, expected: Any) -> None:
    assert getattr(review_request(anomaly_event(confidence=0.7)), attribute) == expected


def test_review_matches_record() -> None:
    decision = decide(anomaly_event(confidence=0.7))
    review = decision.review

    assert review is not None
    assert review.review_id == decision.record.review_id
    assert review.decision_id == decision.record.decision_id
    assert review.gates == decision.record.gates
    assert review.reason == decision.record.reason
    assert review.risk_score == decision.record.risk_score


# Decision record


def test_record_names_policy_rule() -> None:
    record = decide().record

    assert record.policy_id == "cooling-spike"
    assert record.policy_version == 3
    assert record.rule == "anomaly_types=spike subsystems=industrial/* severities=medium,high,critical"


def test_record_keeps_lineage() -> None:
    record = decide().record

    assert record.lineage.writer_schema == WRITER_SCHEMA
    assert record.lineage.source_offset == 100
    assert record.lineage.detector_version == "1.2.0"


def test_record_snapshots_asset() -> None:
    asset = decide(asset=asset_context(change_freeze=True)).record.asset

    assert asset is not None
    assert (asset.owner, asset.criticality, asset.environment, asset.change_freeze) == (
        "plant-operations", "high", "production", True
    )


def test_record_without_asset() -> None:
    assert decide(asset=None).record.asset is None


# Ids


def test_ids_stable_on_replay() -> None:
    first = decide()
    later = decide(now=NOW + timedelta(hours=1))

    assert later.record.decision_id == first.record.decision_id
    assert [command.command_id for command in later.commands] == [command.command_id for command in first.commands]
    assert [command.idempotency_key for command in later.commands] == [
        command.idempotency_key for command in first.commands
    ]


def test_review_id_stable_on_replay() -> None:
    event = anomaly_event(confidence=0.7)

    assert review_request(event).review_id == review_request(event, now=NOW + timedelta(minutes=5)).review_id


def test_ids_differ_between_events() -> None:
    first = decide(anomaly_event(event_id="event-1"))
    second = decide(anomaly_event(event_id="event-2"))

    assert first.record.decision_id != second.record.decision_id
    assert not {command.command_id for command in first.commands} & {command.command_id for command in second.commands}


def test_review_ids_differ_between_events() -> None:
    first = review_request(anomaly_event(event_id="event-1", confidence=0.7))
    second = review_request(anomaly_event(event_id="event-2", confidence=0.7))

    assert first.review_id != second.review_id


def test_command_ids_differ_per_step() -> None:
    commands = decide().commands

    assert len({command.command_id for command in commands}) == len(commands)


def test_stable_id_is_uuid5() -> None:
    identifier = stable_id("decision", "event-1")

    assert identifier == stable_id("decision", "event-1")
    assert identifier[14] == "5"


def test_stable_id_kind_matters() -> None:
    assert stable_id("decision", "event-1") != stable_id("review", "event-1")


# Risk score

RISK_CASES = [
    ("low", "low", 0.0625),
    ("medium", "high", 0.375),
    ("high", "high", 0.5625),
    ("high", "critical", 0.75),
    ("critical", "low", 0.25),
    ("critical", "critical", 1.0),
    ("low", None, 0.25),
    ("high", None, 0.75),
]


@pytest.mark.parametrize(
    ("severity", "criticality", "expected"),
    RISK_CASES,
    ids=[f"{severity}-{criticality or 'unknown'}" for severity, criticality, _ in RISK_CASES],
)
def test_risk_score_value(severity: str, criticality: str | None, expected: float) -> None:
    asset = asset_context(criticality=criticality) if criticality is not None else None

    assert risk_score(anomaly_event(severity=severity), asset) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("severity", "criticality", "expected"),
    RISK_CASES,
    ids=[f"{severity}-{criticality or 'unknown'}" for severity, criticality, _ in RISK_CASES],
)
def test_record_carries_risk(severity: str, criticality: str | None, expected: float) -> None:
    asset = asset_context(criticality=criticality) if criticality is not None else None

    assert decide(anomaly_event(severity=severity), asset).record.risk_score == pytest.approx(expected)


def test_shadow_failing_gates_no_review() -> None:
    shadow = ActivePolicy(
        PolicyDocument.model_validate({
            "id": "shadow-only",
            "mode": "shadow",
            "gates": {"min_confidence": 0.99},
            "plan": [{"id": "page", "executor": "webhook", "action": "notify"}],
        }),
        version=4,
    )

    decision = Decider(default_review_timeout=timedelta(minutes=30)).decide(
        enriched(anomaly_event(confidence=0.5)), PolicyIndex([shadow]), NOW
    )

    assert decision.record.outcome == "shadow"
    assert decision.review is None
    assert decision.commands == ()
    assert decision.record.reason == (
        "policy in shadow mode; would ask for review, gates failed: min-confidence 0.5 (needs >= 0.99)"
    )


# Canary mode: an incident's bucket in [0, 1) below canary_fraction is enforced, the rest is shadowed

CANARY_INCIDENT = IncidentView(incident_id="incident-canary", signals=1, first_seen=NOW, last_seen=NOW)
CANARY_BUCKET = canary_bucket(CANARY_INCIDENT.incident_id)


def decide_canary(fraction: float, incident: IncidentView | None = CANARY_INCIDENT) -> Decision:
    policies = PolicyIndex([active_policy(mode="canary", canary_fraction=fraction)])
    decider = Decider(default_review_timeout=DEFAULT_REVIEW_TIMEOUT)
    return decider.decide(enriched(), policies, NOW, incident)


def test_canary_bucket_in_range() -> None:
    assert 0.0 <= CANARY_BUCKET < 1.0


def test_canary_bucket_stable() -> None:
    assert canary_bucket("incident-canary") == CANARY_BUCKET


def test_canary_bucket_differs_by_incident() -> None:
    assert canary_bucket("incident-other") != CANARY_BUCKET


def test_canary_below_fraction_enforced() -> None:
    decision = decide_canary((CANARY_BUCKET + 1) / 2)

    assert decision.record.outcome == "auto"
    assert len(decision.commands) == 2


def test_canary_at_fraction_shadowed() -> None:
    decision = decide_canary(CANARY_BUCKET)

    assert decision.record.outcome == "shadow"
    assert decision.commands == ()


def test_canary_enforced_reason() -> None:
    fraction = (CANARY_BUCKET + 1) / 2

    assert decide_canary(fraction).record.reason == (
        f"canary: enforced for this incident (bucket {CANARY_BUCKET:.4f} < {fraction:g}); "
        "all 6 gates passed; plan of 3 steps started, first 2 commands: demo-target/rollback-config, "
        "ticket/open-ticket; after their dependencies: verify"
    )


def test_canary_shadow_reason() -> None:
    assert decide_canary(CANARY_BUCKET).record.reason == (
        f"canary: shadow for this incident (bucket {CANARY_BUCKET:.4f} >= {CANARY_BUCKET:g}); "
        "would send 2 commands: demo-target/rollback-config, ticket/open-ticket"
    )


def test_canary_without_incident_uses_event() -> None:
    event_bucket = canary_bucket(anomaly_event().event_id)

    assert decide_canary(event_bucket, incident=None).record.outcome == "shadow"
