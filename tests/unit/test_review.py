"""Unit tests for mitigate.review: verdicts, quorum, rights, expiry and incident changes, with no broker.

Each test opens a review request built by the Decider (a signal whose
confidence fails the policy's gate) in an IncidentBook, then feeds verdicts,
ticks and controls at times given in seconds after builders.NOW.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from mitigate.automation import Escalation, Orchestration, Reviews
from mitigate.codec import AvroCodec
from mitigate.decision import Decider, IncidentView
from mitigate.enrichment import enrich
from mitigate.intake import Accepted, SourceMessage
from mitigate.models import DecisionRecord, PlanControl, ReviewRequest, ReviewVerdict
from mitigate.operators import OperatorDirectory
from mitigate.orchestration import Effects, Orchestrator
from mitigate.policy import PolicyIndex
from mitigate.review import ChangeError, IncidentBook, ReviewDesk, apply_changes
from mitigate.schemas import SchemaRepository
from tests.unit.builders import NOW, SCHEMA_DIR, active_policy, anomaly_event, asset_context

CODEC = AvroCodec(SchemaRepository(SCHEMA_DIR))
INCIDENT = IncidentView(incident_id="incident-1", signals=3, first_seen=NOW, last_seen=NOW)
OPERATORS = OperatorDirectory.model_validate({
    "roles": {
        "responder": {"verdicts": ["approve", "modify", "veto"], "severities": ["low", "medium", "high"],
                      "executors": ["demo-target", "ticket", "webhook"]},
        "lead": {"verdicts": ["approve", "modify", "veto"]},
        "observer": {"verdicts": ["veto"]},
        "no-webhook": {"verdicts": ["approve", "modify"], "executors": ["demo-target", "ticket"]},
    },
    "operators": {
        "alice": {"roles": ["lead"]},
        "bob": {"roles": ["responder"]},
        "carol": {"roles": ["responder"]},
        "dave": {"roles": ["observer"]},
        "erin": {"roles": ["no-webhook"]},
    },
})
_ids = itertools.count(1)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def request(*, quorum: int = 1, on_expiry: str = "escalate", severity: str = "high") -> ReviewRequest:
    """A review request for the builders' event with low confidence, as DecisionStage sends it."""
    event = anomaly_event(confidence=0.6, severity=severity)
    message = SourceMessage("unit.anomalies", 1, 100, NOW, event.entity.encode(), b"\xc3\x01", ())
    signal = enrich(message, Accepted(event, "fingerprint:2a11a66bf2fb32de"), asset_context(), ingest_time=NOW,
                    pipeline_version="0.1.0-unit")
    policy = active_policy(review={"quorum": quorum, "on_expiry": on_expiry})
    decision = Decider(default_review_timeout=timedelta(minutes=30)).decide(
        signal, PolicyIndex([policy]), NOW, INCIDENT)
    assert decision.review is not None
    return decision.review.model_copy(
        update={"decision": CODEC.encode("DecisionRecord", decision.record.to_avro())})


def verdict(review: ReviewRequest, kind: str, operator: str, *, revision: int | None = None, **changes: Any,
            ) -> ReviewVerdict:
    fields: dict[str, Any] = {
        "verdict_id": f"verdict-{next(_ids)}", "review_id": review.review_id, "incident_id": review.incident_id,
        "revision": revision or review.revision, "kind": kind, "operator": operator, "issued_at": NOW,
        "reason": "checked the dashboards" if kind == "veto" else "",
    }
    fields.update(changes)
    return ReviewVerdict.model_validate(fields)


class Desk:
    """A ReviewDesk over one incident's book, with the request opened at NOW."""

    def __init__(self, *, escalation: Escalation | None = Escalation(), **request_options: Any) -> None:
        self.orchestrator = Orchestrator(Orchestration(), CODEC)
        self.desk = ReviewDesk(Reviews(escalation=escalation, verdict_wait=60.0), OPERATORS, self.orchestrator,
                               CODEC)
        self.book = IncidentBook()
        self.request = request(**request_options)
        self.desk.open(self.book, self.request, 2, NOW)

    def answer(self, kind: str, operator: str, seconds: float = 10, **changes: Any) -> Effects:
        return self.desk.on_verdict(self.book, verdict(self.current, kind, operator, **changes), 2, at(seconds))

    @property
    def current(self) -> ReviewRequest:
        return self.book.reviews[self.request.review_id].request


def only_record(effects: Effects) -> DecisionRecord:
    (record,) = effects.records
    return record


# Approve


def test_approve_starts_plan() -> None:
    desk = Desk()
    effects = desk.answer("approve", "bob")

    assert [command.step_id for command in effects.commands] == ["rollback-config", "open-ticket"]
    assert desk.current.status == "approved"


def test_approve_record() -> None:
    desk = Desk()
    effects = desk.answer("approve", "bob", reason="confirmed on the console")
    record = effects.records[0]

    assert (record.outcome, record.reason_code, record.operators) == ("auto", "review-approved", ["bob"])
    assert record.verdict_id is not None and record.review_id == desk.request.review_id
    assert record.command_ids == [command.command_id for command in effects.commands]
    assert "confirmed on the console" in record.reason


def test_approved_plan_kept_in_book() -> None:
    desk = Desk()
    record = desk.answer("approve", "bob").records[0]

    assert record.plan_id in desk.book.plans
    assert desk.book.plans[record.plan_id].control.steps == desk.request.steps


def test_approve_publishes_new_state() -> None:
    desk = Desk()
    (published,) = desk.answer("approve", "bob").reviews

    assert (published.status, published.revision) == ("approved", 1)
    assert [approval.operator for approval in published.approvals] == ["bob"]


def test_approved_commands_carry_plan_and_incident() -> None:
    desk = Desk()
    effects = desk.answer("approve", "bob")
    record = effects.records[0]

    assert {(command.decision_id, command.incident_id) for command in effects.commands} == {
        (record.plan_id, "incident-1")}


def test_second_verdict_after_approval_rejected() -> None:
    desk = Desk()
    desk.answer("approve", "bob")
    record = only_record(desk.answer("veto", "carol", 20))

    assert (record.outcome, record.reason_code, record.operators) == ("review", "verdict-rejected", ["carol"])
    assert record.reason.startswith(f"veto by carol rejected: review {desk.request.review_id} is approved at ")
    assert "it takes no more verdicts" in record.reason


def test_second_verdict_changes_nothing() -> None:
    desk = Desk()
    desk.answer("approve", "bob")
    effects = desk.answer("approve", "carol", 20)

    assert (effects.commands, effects.reviews) == ([], [])
    assert desk.current.status == "approved"


# Quorum


def test_quorum_first_approval_waits() -> None:
    desk = Desk(quorum=2)
    effects = desk.answer("approve", "bob")
    record = only_record(effects)

    assert effects.commands == []
    assert (record.outcome, record.reason_code) == ("review", "review-approval-recorded")
    assert record.reason == "approval 1 of 2 from bob; waiting for 1 more operator"
    assert desk.current.status == "pending"


def test_quorum_second_operator_starts_plan() -> None:
    desk = Desk(quorum=2)
    desk.answer("approve", "bob")
    effects = desk.answer("approve", "carol", 20)

    assert effects.records[0].operators == ["bob", "carol"]
    assert effects.records[0].reason_code == "review-approved"
    assert len(effects.commands) == 2


def test_quorum_same_operator_twice_rejected() -> None:
    desk = Desk(quorum=2)
    desk.answer("approve", "bob")
    record = only_record(desk.answer("approve", "bob", 20))

    assert record.reason_code == "verdict-rejected"
    assert "bob approved revision 1 already; the quorum of 2 needs distinct operators" in record.reason


def test_quorum_veto_ends_it() -> None:
    desk = Desk(quorum=2)
    desk.answer("approve", "bob")
    effects = desk.answer("veto", "carol", 20)

    assert effects.commands == []
    assert desk.current.status == "vetoed"


# Modify


def test_modify_runs_changed_plan() -> None:
    desk = Desk()
    effects = desk.answer("modify", "bob", drop_steps=["verify"],
                          parameters={"rollback-config": {"to_version": "v1"}})

    assert [command.step_id for command in effects.commands] == ["rollback-config", "open-ticket"]
    assert effects.commands[0].parameters == {"to_version": "v1"}
    assert desk.current.status == "modified"


def test_modify_record() -> None:
    desk = Desk()
    record = desk.answer("modify", "bob", drop_steps=["verify"]).records[0]

    assert (record.outcome, record.reason_code) == ("auto", "review-modified")
    assert "as changed by the modify by bob (dropped verify)" in record.reason


def test_modify_bumps_revision() -> None:
    desk = Desk()
    desk.answer("modify", "bob", parameters={"open-ticket": {"queue": "night-shift"}})

    assert desk.current.revision == 2
    assert [step.parameters for step in desk.current.recommended_plan][1] == {"queue": "night-shift"}


def test_modify_under_quorum_resets_approvals() -> None:
    desk = Desk(quorum=2)
    desk.answer("approve", "bob")
    desk.answer("modify", "carol", 20, drop_steps=["verify"])

    assert desk.current.revision == 2
    assert [approval.operator for approval in desk.current.approvals] == ["carol"]


def test_quorum_after_modify_stays_modified() -> None:
    desk = Desk(quorum=2)
    desk.answer("modify", "carol", drop_steps=["verify"])
    record = desk.answer("approve", "bob", 20).records[0]

    assert (record.reason_code, desk.current.status) == ("review-modified", "modified")
    assert "as changed by the modify by carol (dropped verify)" in record.reason


def test_revision_from_future_rejected() -> None:
    desk = Desk()
    record = only_record(desk.answer("approve", "bob", revision=2))

    assert "revision 2 does not exist; the request is at revision 1" in record.reason


@pytest.mark.parametrize(("old", "new"), [("50", "abc"), ("50", "1.5"), ("0.5", "half"), ("true", "yes")])
def test_modify_keeps_value_kind(old: str, new: str) -> None:
    steps = [step.model_copy(update={"parameters": {"limit": old}}) if step.step_id == "open-ticket" else step
             for step in request().steps]

    with pytest.raises(ChangeError, match=f"invalid value '{new}' for open-ticket.limit: the policy sets it to"):
        apply_changes(steps, [], {"open-ticket": {"limit": new}})


def test_modify_unknown_parameter_rejected() -> None:
    with pytest.raises(ChangeError, match="step 'open-ticket' has no parameter 'queu' \\(did you mean 'queue'\\?\\)"):
        apply_changes(list(request().steps), [], {"open-ticket": {"queu": "night-shift"}})


def test_modify_step_setting_is_not_a_parameter() -> None:
    with pytest.raises(ChangeError, match="has no parameter 'retries'.*step settings stay as the policy sets them"):
        apply_changes(list(request().steps), [], {"open-ticket": {"retries": "3"}})


def test_approval_of_old_revision_rejected() -> None:
    desk = Desk(quorum=2)
    desk.answer("modify", "carol", drop_steps=["verify"])
    record = only_record(desk.answer("approve", "bob", 20, revision=1))

    assert record.reason_code == "verdict-rejected"
    assert "answers revision 1, but the request is at revision 2 since the modify by carol (dropped verify)" \
        in record.reason


def test_modify_rejected_leaves_request() -> None:
    desk = Desk()
    record = only_record(desk.answer("modify", "bob", drop_steps=["rollback-config"]))

    assert record.reason_code == "verdict-rejected"
    assert "step 'verify' depends on 'rollback-config'" in record.reason
    assert (desk.current.status, desk.current.revision) == ("pending", 1)


@pytest.mark.parametrize(("drop", "parameters", "message"), [
    (["restart"], {}, "step 'restart' is not in the plan; its steps are: rollback-config, open-ticket, verify"),
    ([], {}, "the verdict changes nothing"),
    (["rollback-config", "open-ticket", "verify"], {}, "dropping every step leaves nothing to run"),
    (["verify"], {"verify": {"a": "b"}}, "step 'verify' is dropped, so its parameters cannot be changed"),
    ([], {"open-ticket": {"priority": ""}}, "step 'open-ticket' has no parameter 'priority' to remove"),
    ([], {"open-ticket": {"queue": "plant-operations"}}, "the changes leave the plan as it is"),
], ids=["unknown-step", "no-change", "all-dropped", "dropped-and-changed", "remove-missing", "same-plan"])
def test_apply_changes_errors(drop: list[str], parameters: dict[str, dict[str, str]], message: str) -> None:
    with pytest.raises(ChangeError, match=message):
        apply_changes(list(request().steps), drop, parameters)


def test_apply_changes_removes_parameter() -> None:
    steps = apply_changes(list(request().steps), [], {"open-ticket": {"queue": ""}})

    assert steps[1].parameters == {}


def test_approve_with_changes_rejected() -> None:
    desk = Desk()
    record = only_record(desk.answer("approve", "bob", drop_steps=["verify"]))

    assert "a approve verdict cannot change the plan; use modify" in record.reason


# Veto


def test_veto_closes_without_action() -> None:
    desk = Desk()
    effects = desk.answer("veto", "dave", reason="false positive: sensor recalibration")
    record = only_record(effects)

    assert effects.commands == []
    assert (record.outcome, record.reason_code, record.operators) == ("suppress", "review-vetoed", ["dave"])
    assert record.reason.startswith("vetoed by dave: false positive: sensor recalibration; the incident closes")


def test_veto_needs_reason() -> None:
    desk = Desk()
    record = only_record(desk.answer("veto", "bob", reason="  "))

    assert record.reason == "veto by bob rejected: a veto needs a reason; the request stays pending"


def test_veto_blocks_later_plan() -> None:
    desk = Desk()
    desk.answer("veto", "bob")
    control = PlanControl(kind="start", incident_id="incident-1", plan_id="later-plan", trace_id="t", issued_at=at(60),
                          decision=desk.request.decision)
    record = only_record(desk.desk.reject_vetoed_plan(desk.book, control, at(60)))

    assert (record.outcome, record.reason_code) == ("suppress", "incident-vetoed")
    assert record.reason.startswith("plan later-plan not started: bob vetoed the incident at ")


def test_veto_cancels_running_plan() -> None:
    desk = Desk()
    later = request()
    plan, _ = desk.orchestrator.start(
        PlanControl(kind="start", incident_id="incident-1", plan_id="running-plan", trace_id="t", issued_at=NOW,
                    steps=later.steps, decision=later.decision), 2, NOW)
    desk.book.plans["running-plan"] = plan
    effects = desk.answer("veto", "bob")

    assert plan.state == "cancelled"
    assert "running plans cancelled: running-plan" in effects.records[-1].reason


def test_approval_of_later_request_lifts_veto() -> None:
    desk = Desk()
    desk.answer("veto", "bob")
    later = request(severity="medium").model_copy(update={"review_id": "review-2"})
    desk.desk.open(desk.book, later, 2, at(30))
    desk.desk.on_verdict(desk.book, verdict(later, "approve", "carol"), 2, at(40))

    assert desk.book.veto is None


# Rights


def test_no_right_for_severity() -> None:
    desk = Desk(severity="critical")
    record = only_record(desk.answer("approve", "bob"))

    assert record.reason == (
        "approve by bob rejected: operator bob may not approve this request: role responder lacks severity "
        "critical (allows low, medium, high); operators who may: alice; the request stays pending")
    assert desk.current.status == "pending"


def test_no_right_for_verdict_kind() -> None:
    desk = Desk()
    record = only_record(desk.answer("approve", "dave"))

    assert "role observer lacks verdict approve (allows veto)" in record.reason


def test_unknown_operator() -> None:
    desk = Desk()
    record = only_record(desk.answer("approve", "mallory"))

    assert "operator 'mallory' is not listed in the operators file" in record.reason


def test_no_right_for_executor() -> None:
    desk = Desk()
    record = only_record(desk.answer("approve", "erin"))

    assert "role no-webhook lacks executor webhook (allows demo-target, ticket)" in record.reason


def test_rights_checked_on_modified_plan() -> None:
    # Without the webhook step, the plan is within erin's executors.
    desk = Desk()
    effects = desk.answer("modify", "erin", drop_steps=["verify"])

    assert effects.records[0].reason_code == "review-modified"


def test_rejected_verdict_then_valid_one() -> None:
    desk = Desk(severity="critical")
    desk.answer("approve", "bob")
    effects = desk.answer("approve", "alice", 20)

    assert effects.records[0].reason_code == "review-approved"


# Expiry


def test_expiry_escalates() -> None:
    desk = Desk()
    effects = desk.desk.expire(desk.book, desk.request.deadline)

    assert [(command.executor, command.action) for command in effects.commands] == [("ticket", "open-ticket")]
    assert effects.commands[0].parameters["title"] == f"Review {desk.request.review_id} expired without a verdict"
    assert (effects.records[0].outcome, effects.records[0].reason_code) == ("review", "review-expired")
    assert desk.current.status == "expired"


def test_expiry_without_escalation_executor() -> None:
    desk = Desk(escalation=None)
    effects = desk.desk.expire(desk.book, desk.request.deadline)

    assert effects.commands == []
    assert "escalated by this record" in only_record(effects).reason


def test_expiry_close() -> None:
    desk = Desk(on_expiry="close")
    effects = desk.desk.expire(desk.book, desk.request.deadline)

    assert effects.commands == []
    assert only_record(effects).outcome == "suppress"


def test_before_deadline_nothing_expires() -> None:
    desk = Desk()
    effects = desk.desk.expire(desk.book, desk.request.deadline - timedelta(milliseconds=1))

    assert effects.records == []
    assert desk.current.status == "pending"


def test_verdict_after_deadline_rejected() -> None:
    desk = Desk()
    late = (desk.request.deadline - NOW).total_seconds() + 1
    effects = desk.answer("approve", "bob", late)

    assert [record.reason_code for record in effects.records] == ["review-expired", "verdict-rejected"]
    assert f"expired at {desk.request.deadline.isoformat()}, before this verdict arrived" in effects.records[1].reason
    assert [command.action for command in effects.commands] == ["open-ticket"]  # the escalation only


def test_verdict_on_expired_request_rejected() -> None:
    desk = Desk()
    desk.desk.expire(desk.book, desk.request.deadline)
    record = only_record(desk.answer("approve", "bob", 1))

    assert f"review {desk.request.review_id} is expired at " in record.reason


def test_due_is_deadline() -> None:
    desk = Desk()

    assert ReviewDesk.due_ms(desk.book, 60_000) == int(desk.request.deadline.timestamp() * 1000)


# Incident changes and ordering


def test_incident_resolved_closes_request() -> None:
    desk = Desk()
    control = PlanControl(kind="cancel", incident_id="incident-1", plan_id="-", trace_id="t", issued_at=at(5),
                          reason="incident resolved by signal e-9")
    record = only_record(desk.desk.incident_resolved(desk.book, control, at(5)))

    assert (record.reason_code, desk.current.status) == ("review-closed", "closed")
    assert record.reason == "closed without action: incident resolved by signal e-9 before a verdict"


def test_plan_started_supersedes_request() -> None:
    desk = Desk()
    control = PlanControl(kind="start", incident_id="incident-1", plan_id="auto-plan", trace_id="t", issued_at=at(5))
    record = only_record(desk.desk.plan_started(desk.book, control, at(5)))

    assert (record.reason_code, desk.current.status) == ("review-superseded", "superseded")


def test_request_after_resolution_closes_on_arrival() -> None:
    desk = Desk()
    control = PlanControl(kind="cancel", incident_id="incident-1", plan_id="-", trace_id="t", issued_at=at(5),
                          reason="incident resolved by signal e-9")
    desk.desk.incident_resolved(desk.book, control, at(5))
    late = request().model_copy(update={"review_id": "review-2"})

    (published,) = desk.desk.open(desk.book, late, 2, at(6)).reviews

    assert (published.status, published.status_reason) == (
        "closed", "closed without action: incident resolved by signal e-9 before a verdict")


def test_request_older_than_auto_plan_superseded_on_arrival() -> None:
    desk = Desk()
    control = PlanControl(kind="start", incident_id="incident-1", plan_id="auto-plan", trace_id="t", issued_at=at(5))
    desk.desk.plan_started(desk.book, control, at(5))
    older = request().model_copy(update={"review_id": "review-2"})

    (published,) = desk.desk.open(desk.book, older, 2, at(6)).reviews

    assert published.status == "superseded"
    assert published.status_reason.startswith("automation started plan auto-plan")


def test_request_newer_than_auto_plan_stays_pending() -> None:
    desk = Desk()
    control = PlanControl(kind="start", incident_id="incident-1", plan_id="auto-plan", trace_id="t", issued_at=NOW)
    desk.desk.plan_started(desk.book, control, NOW)
    newer = request().model_copy(update={"review_id": "review-2", "created_at": at(30)})

    desk.desk.open(desk.book, newer, 2, at(31))

    assert desk.book.reviews["review-2"].request.status == "pending"


def test_new_request_supersedes_old() -> None:
    desk = Desk()
    later = request().model_copy(update={"review_id": "review-2"})
    effects = desk.desk.open(desk.book, later, 2, at(5))

    assert [review.status for review in effects.reviews] == ["superseded"]
    assert desk.book.reviews["review-2"].request.status == "pending"


def test_verdict_before_request_waits() -> None:
    desk = Desk()
    later = request().model_copy(update={"review_id": "review-2"})
    early = verdict(later, "approve", "bob")
    assert desk.desk.on_verdict(desk.book, early, 2, at(1)).records == []

    effects = desk.desk.open(desk.book, later, 2, at(2))

    assert effects.records[-1].reason_code == "review-approved"


def test_waiting_verdict_dropped_after_wait() -> None:
    desk = Desk()
    desk.desk.on_verdict(desk.book, verdict(request().model_copy(update={"review_id": "gone"}), "approve", "bob"),
                         2, at(1))
    desk.desk.expire(desk.book, at(62))

    assert desk.book.waiting == []


def test_same_verdict_twice_applied_once() -> None:
    desk = Desk(quorum=2)
    again = verdict(desk.request, "approve", "bob")
    desk.desk.on_verdict(desk.book, again, 2, at(1))
    effects = desk.desk.on_verdict(desk.book, again, 2, at(2))

    assert (effects.records, effects.reviews) == ([], [])
    assert len(desk.current.approvals) == 1


def test_book_round_trips_as_json() -> None:
    desk = Desk(quorum=2)
    desk.answer("approve", "bob")

    assert IncidentBook.model_validate_json(desk.book.model_dump_json()) == desk.book


def test_request_content() -> None:
    review = request(quorum=2)

    assert (review.quorum, review.on_expiry, review.revision, review.status) == (2, "escalate", 1, "pending")
    assert [step.step_id for step in review.steps] == ["rollback-config", "open-ticket", "verify"]
    assert review.risk_inputs["formula"] == "severity_weight x criticality_weight"
    assert review.predicted_impact[0].startswith("3 commands to demo-target, ticket, webhook: ")
