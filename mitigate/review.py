"""Review stage: the state of each review request, the verdicts on it, and what they set off.

A request is pending until one of these ends it:
- approvals from `quorum` distinct operators (a modify counts as its author's
  approval of the changed plan, and earlier approvals of the old plan lapse):
  the plan runs through the orchestrator;
- a veto: nothing runs, running plans of the incident are cancelled, and no
  later plan of the incident starts until it resolves or an operator approves
  a later request;
- its deadline: nothing runs; with on_expiry escalate an escalation command
  goes to the configured executor;
- the incident resolving, or a later decision on the incident (closed or
  superseded).

Every verdict is checked: the request must be pending and at the revision the
verdict answers, the operator must have the right, and a modify must leave a
valid plan. A verdict that fails a check is rejected; the request stays as it
was. Every verdict, accepted or not, gets a DecisionRecord that names it, and
every change of a request is published again on the review topic.

The functions here are pure, like the orchestrator's: the Faust agent keeps
the state in the plan table, keyed by incident id, and sends the effects.
"""

from __future__ import annotations

import difflib
import logging
import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mitigate.automation import Reviews
from mitigate.codec import AvroCodec
from mitigate.decision import predicted_impact, stable_id
from mitigate.errors import DecodeError, MitigateError
from mitigate.limits import epoch_ms
from mitigate.models import (
    Approval,
    DecisionRecord,
    Outcome,
    PlanControl,
    PlanStep,
    PlanStepSpec,
    ReviewRequest,
    ReviewStatus,
    ReviewVerdict,
)
from mitigate.operators import OperatorDirectory
from mitigate.orchestration import Effects, Orchestrator, PlanBook
from mitigate.policy import parse_policy

logger = logging.getLogger(__name__)

# Verdicts that wait for their request, per incident; beyond this the oldest is dropped.
MAX_WAITING = 50


class ChangeError(MitigateError):
    """A modify verdict does not leave a valid plan."""


class ReviewState(BaseModel):
    """One review request as the pipeline keeps it."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    request: ReviewRequest
    partition: int
    verdict_ids: list[str] = Field(default_factory=list)  # verdicts already handled, to ignore one sent again
    modifications: list[str] = Field(default_factory=list)  # each accepted modify: who changed what


class WaitingVerdict(BaseModel):
    """A verdict that arrived before its request."""

    model_config = ConfigDict(extra="forbid")

    verdict: ReviewVerdict
    partition: int
    received_ms: int


class Veto(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review_id: str
    verdict_id: str
    operator: str
    reason: str
    vetoed_ms: int


class StoredMessage(BaseModel):
    """One message the orchestrate agent sent, kept to be sent again unchanged."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = Field(default_factory=list)


class SentOutputs(BaseModel):
    """The messages one input produced, by the input's coordinates (topic[partition]@offset)."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    source: str
    messages: list[StoredMessage]


class IncidentBook(PlanBook):
    """Everything the orchestrate agent keeps for one incident: its plans, its review requests and a veto."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    reviews: dict[str, ReviewState] = Field(default_factory=dict)
    waiting: list[WaitingVerdict] = Field(default_factory=list)
    veto: Veto | None = None
    # Requests and controls reach the agent on different topics, so a request can
    # arrive after the resolution or the plan that ends it. These fields end it on arrival.
    resolved: str | None = None  # why the incident closed (the cancel's reason)
    auto_plan: str | None = None  # the latest plan automation started for the incident
    auto_plan_ms: int | None = None  # its decision time (the event time of its signal)
    # What the latest inputs of the incident produced. The book and these outputs are
    # one table write, so an input delivered again after a crash gets its outputs
    # again even when the crash lost them and kept the book.
    # NOTE: every input of the incident parses and rewrites the whole book, which grows with
    # its pending reviews and these outputs (hundreds of kilobytes in an unanswered storm).
    sent: list[SentOutputs] = Field(default_factory=list)


def apply_changes(steps: list[PlanStepSpec], drop_steps: list[str],
                  parameters: dict[str, dict[str, str]]) -> list[PlanStepSpec]:
    """Return the plan after a modify verdict, checked like a policy's plan; raise ChangeError if it is not valid."""
    known = [step.step_id for step in steps]
    if not steps:
        raise ChangeError("the request has no plan to modify (no policy covers the signal); approve or veto it")
    for step_id in [*drop_steps, *parameters]:
        if step_id not in known:
            raise ChangeError(f"step {step_id!r} is not in the plan; its steps are: {', '.join(known)}")
    if not drop_steps and not parameters:
        raise ChangeError("the verdict changes nothing; name steps to drop or parameters to set, or approve instead")
    kept = [step for step in steps if step.step_id not in drop_steps]
    if not kept:
        raise ChangeError("dropping every step leaves nothing to run; veto the request instead")
    for step_id in parameters:
        if step_id in drop_steps:
            raise ChangeError(f"step {step_id!r} is dropped, so its parameters cannot be changed; do one or the other")
    for step in kept:
        for dependency in step.depends_on:
            if dependency in drop_steps:
                raise ChangeError(f"step {step.step_id!r} depends on {dependency!r}; drop {step.step_id!r} as well, "
                                  f"or keep {dependency!r}")
    changed = []
    for step in kept:
        values = dict(step.parameters)
        for name, value in parameters.get(step.step_id, {}).items():
            if value == "":
                if name not in values:
                    raise ChangeError(f"step {step.step_id!r} has no parameter {name!r} to remove; its parameters: "
                                      f"{', '.join(sorted(values)) or 'none'}")
                del values[name]
            else:
                if name not in values:
                    close = difflib.get_close_matches(name, list(values), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ChangeError(
                        f"step {step.step_id!r} has no parameter {name!r}{hint}; its parameters: "
                        f"{', '.join(sorted(values)) or 'none'}. A modify changes or removes the policy's "
                        "parameters; timeout, retries and the other step settings stay as the policy sets them")
                _check_value_kind(step.step_id, name, step.parameters.get(name), value)
                values[name] = value
        changed.append(step.model_copy(update={"parameters": values}))
    if changed == steps:
        raise ChangeError("the changes leave the plan as it is; approve it instead")
    _check_plan_format(changed)
    return changed


VALUE_KINDS = (
    ("an integer", re.compile(r"^[+-]?\d+$")),
    ("a number", re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")),
    ("true or false", re.compile(r"^(true|false)$")),
)


def _check_value_kind(step_id: str, name: str, old: str | None, new: str) -> None:
    """Keep a parameter's kind: the executor reads an integer parameter as an integer, so a word there is a typo.

    Only the kind of the policy's own value is known here; the executor checks the value itself when the step runs.
    """
    if old is None:
        return
    for kind, pattern in VALUE_KINDS:
        if pattern.match(old):
            if not pattern.match(new):
                raise ChangeError(f"invalid value {new!r} for {step_id}.{name}: the policy sets it to {old!r}, "
                                  f"so it must be {kind}")
            return


def _check_plan_format(steps: list[PlanStepSpec]) -> None:
    """Validate the changed plan with the policy format's own rules, so an operator cannot write what a policy could not."""
    document = {
        "id": "modified-plan",
        "plan": [
            {"id": step.step_id, "executor": step.executor, "action": step.action, "parameters": step.parameters,
             "depends_on": step.depends_on, "preconditions": step.preconditions, "retries": step.retries,
             "timeout_s": step.timeout_ms / 1000}
            for step in steps
        ],
    }
    try:
        parse_policy(document, "the modified plan")
    except MitigateError as exc:
        detail = str(exc).removeprefix("the modified plan: ")
        raise ChangeError(f"the modified plan is not valid: {detail}") from exc


def plan_summary(steps: list[PlanStepSpec]) -> list[PlanStep]:
    return [PlanStep(step_id=step.step_id, executor=step.executor, action=step.action, target=step.target,
                     parameters=dict(step.parameters), depends_on=list(step.depends_on)) for step in steps]


def describe_changes(verdict: ReviewVerdict) -> str:
    parts = []
    if verdict.drop_steps:
        parts.append(f"dropped {', '.join(verdict.drop_steps)}")
    for step_id, values in sorted(verdict.parameters.items()):
        settings = ", ".join(f"{name}={value}" if value else f"{name} removed" for name, value in sorted(values.items()))
        parts.append(f"{step_id}: {settings}")
    return "; ".join(parts)


class ReviewDesk:
    """Applies verdicts, expiry and incident changes to the review requests of one incident's book."""

    def __init__(self, settings: Reviews, operators: OperatorDirectory, orchestrator: Orchestrator,
                 codec: AvroCodec) -> None:
        self.settings = settings
        self.operators = operators
        self.orchestrator = orchestrator
        self.codec = codec

    # Requests

    def open(self, book: IncidentBook, request: ReviewRequest, partition: int, now: datetime) -> Effects:
        """Take a new request into the book; an older pending request of the incident is superseded by it."""
        if request.review_id in book.reviews or request.status != "pending" or request.decision is None:
            # Known already (this agent publishes every change of a request on the topic it reads),
            # or a state of a request this book no longer keeps.
            return Effects()
        effects = Effects()
        for state in self._pending(book):
            effects.extend(self._finish(
                state, "superseded", now, "suppress", "review-superseded",
                f"a later decision on the incident asks again in review {request.review_id} ({request.reason_code}); "
                "answer that one",
            ))
        state = ReviewState(request=request, partition=partition)
        book.reviews[request.review_id] = state
        if book.resolved is not None:
            return self._finish(state, "closed", now, "suppress", "review-closed",
                                f"closed without action: {book.resolved} before a verdict")
        if book.auto_plan is not None and book.auto_plan_ms is not None \
                and book.auto_plan_ms >= epoch_ms(request.created_at):
            return self._finish(state, "superseded", now, "suppress", "review-superseded",
                                self._superseded_by_plan(book.auto_plan))
        waiting = [item for item in book.waiting if item.verdict.review_id == request.review_id]
        book.waiting = [item for item in book.waiting if item.verdict.review_id != request.review_id]
        for item in waiting:
            effects.extend(self.on_verdict(book, item.verdict, item.partition, now))
        return effects

    def plan_started(self, book: IncidentBook, control: PlanControl, now: datetime) -> Effects:
        """Automation decided a plan for the incident: pending requests are superseded by it."""
        book.auto_plan, book.auto_plan_ms = control.plan_id, epoch_ms(control.issued_at)
        effects = Effects()
        for state in self._pending(book):
            effects.extend(self._finish(state, "superseded", now, "suppress", "review-superseded",
                                        self._superseded_by_plan(control.plan_id)))
        return effects

    @staticmethod
    def _superseded_by_plan(plan_id: str) -> str:
        return (f"automation started plan {plan_id} for the incident after a later signal; "
                "the request takes no verdict any more")

    def incident_resolved(self, book: IncidentBook, control: PlanControl, now: datetime) -> Effects:
        book.resolved = control.reason or "the incident resolved"
        effects = Effects()
        for state in self._pending(book):
            effects.extend(self._finish(state, "closed", now, "suppress", "review-closed",
                                        f"closed without action: {book.resolved} before a verdict"))
        book.veto = None
        return effects

    def expire(self, book: IncidentBook, now: datetime) -> Effects:
        """Expire pending requests past their deadline, and drop verdicts that waited too long for their request."""
        effects = Effects()
        for state in self._pending(book):
            if now >= state.request.deadline:
                effects.extend(self._expired(book, state, now))
        limit_ms = epoch_ms(now) - int(self.settings.verdict_wait * 1000)
        for item in [item for item in book.waiting if item.received_ms <= limit_ms]:
            logger.warning("verdict dropped: review %s unknown after %.0f s verdict=%s operator=%s incident=%s",
                           item.verdict.review_id, self.settings.verdict_wait, item.verdict.verdict_id,
                           item.verdict.operator, item.verdict.incident_id)
            book.waiting.remove(item)
        return effects

    @staticmethod
    def due_ms(book: IncidentBook, verdict_wait_ms: int) -> int | None:
        times = [epoch_ms(state.request.deadline) for state in book.reviews.values()
                 if state.request.status == "pending"]
        times += [item.received_ms + verdict_wait_ms for item in book.waiting]
        return min(times) if times else None

    # Verdicts

    def on_verdict(self, book: IncidentBook, verdict: ReviewVerdict, partition: int, now: datetime) -> Effects:
        state = book.reviews.get(verdict.review_id)
        if state is None:
            if all(item.verdict.verdict_id != verdict.verdict_id for item in book.waiting):
                book.waiting.append(WaitingVerdict(verdict=verdict, partition=partition, received_ms=epoch_ms(now)))
                book.waiting = book.waiting[-MAX_WAITING:]
            return Effects()
        if verdict.verdict_id in state.verdict_ids:
            return Effects()  # delivered again after a restart; it was handled
        state.verdict_ids.append(verdict.verdict_id)
        request = state.request

        if request.status != "pending":
            when = f" at {request.updated_at.isoformat()}" if request.updated_at else ""
            return self._rejected(state, verdict, now,
                                  f"review {request.review_id} is {request.status}{when} ({request.status_reason}); "
                                  "it takes no more verdicts")
        if now >= request.deadline:
            effects = self._expired(book, state, now)
            effects.extend(self._rejected(
                state, verdict, now, f"review {request.review_id} expired at {request.deadline.isoformat()}, "
                "before this verdict arrived; it takes no more verdicts"))
            return effects
        if verdict.revision > request.revision:
            return self._rejected(
                state, verdict, now,
                f"revision {verdict.revision} does not exist; the request is at revision {request.revision}; "
                "the request stays pending")
        if verdict.revision < request.revision:
            return self._rejected(
                state, verdict, now,
                f"the verdict answers revision {verdict.revision}, but the request is at revision "
                f"{request.revision} since {state.modifications[-1] if state.modifications else 'a change'}; "
                f"read it again with `mitigate review show {request.review_id}` and answer the current revision; "
                "the request stays pending")

        steps = list(request.steps)
        if verdict.kind == "modify":
            try:
                steps = apply_changes(steps, verdict.drop_steps, verdict.parameters)
            except ChangeError as exc:
                return self._rejected(state, verdict, now, f"{exc}; the request stays pending")
        elif verdict.drop_steps or verdict.parameters:
            return self._rejected(state, verdict, now,
                                  f"a {verdict.kind} verdict cannot change the plan; use modify; the request stays pending")
        if verdict.kind == "veto" and not verdict.reason.strip():
            return self._rejected(state, verdict, now, "a veto needs a reason; the request stays pending")

        problem = self.operators.check(verdict.operator, verdict.kind, request.severity, request.subsystem,
                                       {step.executor for step in steps})
        if problem is not None:
            return self._rejected(state, verdict, now, f"{problem}; the request stays pending")

        if verdict.kind == "veto":
            return self._veto(book, state, verdict, now)
        if any(approval.operator == verdict.operator for approval in request.approvals):
            return self._rejected(
                state, verdict, now,
                f"{verdict.operator} approved revision {request.revision} already; the quorum of {request.quorum} "
                "needs distinct operators; the request stays pending")
        return self._approve(book, state, verdict, steps, now)

    def _approve(self, book: IncidentBook, state: ReviewState, verdict: ReviewVerdict, steps: list[PlanStepSpec],
                 now: datetime) -> Effects:
        request = state.request
        approval = Approval(operator=verdict.operator, approved_at=now, verdict_id=verdict.verdict_id)
        if verdict.kind == "modify":
            changes = describe_changes(verdict)
            state.modifications.append(f"the modify by {verdict.operator} ({changes})")
            request = request.model_copy(update={
                "revision": request.revision + 1,
                "steps": steps,
                "recommended_plan": plan_summary(steps),
                "predicted_impact": predicted_impact(steps, self._template(request).asset),
                "approvals": [approval],
                "status_reason": f"modified by {verdict.operator}: {changes}",
                "updated_at": now,
            })
        else:
            request = request.model_copy(update={"approvals": [*request.approvals, approval], "updated_at": now})
        state.request = request
        approvers = [item.operator for item in request.approvals]
        note = f": {verdict.reason}" if verdict.reason else ""

        if len(approvers) < request.quorum:
            missing = request.quorum - len(approvers)
            what = f"modified by {verdict.operator} ({describe_changes(verdict)}), revision {request.revision}; " \
                if verdict.kind == "modify" else ""
            reason = (f"{what}approval {len(approvers)} of {request.quorum} from {verdict.operator}{note}; waiting "
                      f"for {missing} more operator{'s' if missing > 1 else ''}")
            state.request = request.model_copy(update={"status_reason": reason})
            effects = Effects()
            effects.reviews.append(state.request)
            effects.records.append(self._record(state, now, "review", "review-approval-recorded", reason,
                                                verdict=verdict, operators=approvers))
            return effects

        book.veto = None  # an operator's approval of a later request lifts an earlier veto
        # A plan changed by a modify stays "modified" whoever's approval completes the quorum.
        status: ReviewStatus = "modified" if state.modifications else "approved"
        by = ", ".join(approvers)
        if not steps:
            reason = (f"approved by {by}{note}; the request has no plan (no policy covers the signal), so nothing runs; "
                      "the incident is handled by hand")
            return self._finish(state, status, now, "suppress", "review-approved", reason, verdict=verdict,
                                operators=approvers)

        plan_id = stable_id("review-plan", request.review_id, str(request.revision))
        control = PlanControl(
            kind="start", incident_id=self._incident(request), plan_id=plan_id, trace_id=request.trace_id,
            issued_at=now, reason=f"{status} by {by}", policy_id=request.policy_id,
            policy_version=request.policy_version, steps=steps, decision=request.decision,
            signal_score=request.score, origin="review", first_seen=request.first_seen or request.created_at,
        )
        plan, started = self.orchestrator.start(control, state.partition, now)
        book.plans[plan_id] = plan
        first = ", ".join(f"{command.executor}/{command.action}" for command in started.commands)
        changes = f" as changed by {'; '.join(state.modifications)}" if state.modifications else ""
        reason = (f"{status} by {by} (quorum {request.quorum}){note}; plan {plan_id} of {len(steps)} "
                  f"step{'s' if len(steps) != 1 else ''} started{changes}, first: {first or 'none'}")
        effects = self._finish(state, status, now, "auto", f"review-{status}", reason, verdict=verdict,
                               operators=approvers, plan_id=plan_id,
                               command_ids=[command.command_id for command in started.commands])
        effects.extend(started)
        return effects

    def _veto(self, book: IncidentBook, state: ReviewState, verdict: ReviewVerdict, now: datetime) -> Effects:
        book.veto = Veto(review_id=state.request.review_id, verdict_id=verdict.verdict_id, operator=verdict.operator,
                         reason=verdict.reason, vetoed_ms=epoch_ms(now))
        effects = Effects()
        cancel = PlanControl(kind="cancel", incident_id=self._incident(state.request), plan_id="-",
                             trace_id=state.request.trace_id, issued_at=now,
                             reason=f"vetoed by {verdict.operator}: {verdict.reason}")
        stopped = [plan_id for plan_id, plan in book.plans.items() if plan.state == "running"]
        for plan in book.plans.values():
            effects.extend(self.orchestrator.cancel(plan, cancel, now))
        reason = (f"vetoed by {verdict.operator}: {verdict.reason}; the incident closes without action and no later "
                  "plan of it starts until it resolves")
        if stopped:
            reason += f"; running plans cancelled: {', '.join(stopped)}"
        effects.extend(self._finish(state, "vetoed", now, "suppress", "review-vetoed", reason, verdict=verdict,
                                    operators=[verdict.operator]))
        return effects

    def reject_vetoed_plan(self, book: IncidentBook, control: PlanControl, now: datetime) -> Effects:
        """Record why a plan that automation decided for a vetoed incident does not start."""
        assert book.veto is not None
        veto = book.veto
        effects = Effects()
        if control.decision is None:
            return effects
        template = DecisionRecord.model_validate(self.codec.decode(control.decision, "DecisionRecord").record)
        when = datetime.fromtimestamp(veto.vetoed_ms / 1000, template.decided_at.tzinfo).isoformat()
        effects.records.append(template.model_copy(update={
            "decision_id": stable_id("vetoed-plan", control.plan_id),
            "decided_at": now,
            "outcome": "suppress",
            "reason_code": "incident-vetoed",
            "reason": (f"plan {control.plan_id} not started: {veto.operator} vetoed the incident at {when} "
                       f"({veto.reason}); it stays without action until it resolves or an operator approves "
                       "a later request"),
            "command_ids": [],
            "plan_id": control.plan_id,
            "operators": [veto.operator],
        }))
        return effects

    # Internals

    def _expired(self, book: IncidentBook, state: ReviewState, now: datetime) -> Effects:
        request = state.request
        if request.on_expiry == "close":
            return self._finish(state, "expired", now, "suppress", "review-expired",
                                f"no verdict by the deadline {request.deadline.isoformat()}; closed without action "
                                "(on_expiry close)")

        escalation = self.settings.escalation
        if escalation is None:
            return self._finish(state, "expired", now, "review", "review-expired",
                                f"no verdict by the deadline {request.deadline.isoformat()}; no action taken; "
                                "escalated by this record (no escalation executor configured)")

        plan_id = stable_id("escalation", request.review_id)
        parameters = dict(escalation.parameters)
        if escalation.executor == "ticket" and escalation.action == "open-ticket":
            parameters.setdefault("title", f"Review {request.review_id} expired without a verdict")
            parameters.setdefault("description", (
                f"{request.severity} {request.anomaly_type} on {request.entity} ({request.subsystem}), "
                f"{request.signal_count} signals; needed review because {request.reason_code}: {request.reason}. "
                "No action was taken."))

        control = PlanControl(
            kind="start", incident_id=self._incident(request), plan_id=plan_id, trace_id=request.trace_id,
            issued_at=now, reason="review expired", policy_id=request.policy_id or "review-escalation",
            policy_version=request.policy_version or 0,
            steps=[PlanStepSpec(step_id="escalate", executor=escalation.executor, action=escalation.action,
                                target=request.entity, parameters=parameters,
                                timeout_ms=int(escalation.timeout * 1000))],
            decision=request.decision, signal_score=request.score, origin="escalation",
        )
        plan, started = self.orchestrator.start(control, state.partition, now)
        book.plans[plan_id] = plan
        effects = self._finish(
            state, "expired", now, "review", "review-expired",
            f"no verdict by the deadline {request.deadline.isoformat()}; no action taken; escalated with "
            f"{escalation.executor}/{escalation.action} (plan {plan_id})",
            plan_id=plan_id, command_ids=[command.command_id for command in started.commands])
        effects.extend(started)
        return effects

    def _finish(self, state: ReviewState, status: ReviewStatus, now: datetime, outcome: Outcome, reason_code: str,
                reason: str, *, verdict: ReviewVerdict | None = None, operators: list[str] | None = None,
                plan_id: str | None = None, command_ids: list[str] | None = None) -> Effects:
        state.request = state.request.model_copy(update={"status": status, "status_reason": reason, "updated_at": now})
        effects = Effects()
        effects.reviews.append(state.request)
        effects.records.append(self._record(state, now, outcome, reason_code, reason, verdict=verdict,
                                            operators=operators, plan_id=plan_id, command_ids=command_ids))
        return effects

    def _rejected(self, state: ReviewState, verdict: ReviewVerdict, now: datetime, why: str) -> Effects:
        effects = Effects()
        effects.records.append(self._record(state, now, "review", "verdict-rejected",
                                            f"{verdict.kind} by {verdict.operator} rejected: {why}",
                                            verdict=verdict, operators=[verdict.operator]))
        return effects

    def _record(self, state: ReviewState, now: datetime, outcome: Outcome, reason_code: str, reason: str, *,
                verdict: ReviewVerdict | None = None, operators: list[str] | None = None,
                plan_id: str | None = None, command_ids: list[str] | None = None) -> DecisionRecord:
        request = state.request
        template = self._template(request)
        key = verdict.verdict_id if verdict is not None else f"{reason_code}|{request.revision}"
        return template.model_copy(update={
            "decision_id": stable_id("review-record", request.review_id, key),
            "decided_at": now,
            "incident_id": request.incident_id,
            "outcome": outcome,
            "reason_code": reason_code,
            "reason": reason,
            "command_ids": command_ids or [],
            "review_id": request.review_id,
            "cancelled_steps": [],
            "silence_id": None,
            "plan_id": plan_id,
            "verdict_id": verdict.verdict_id if verdict is not None else None,
            "operators": operators or [],
        })

    def _template(self, request: ReviewRequest) -> DecisionRecord:
        if request.decision is None:
            raise DecodeError("undecodable", f"review request {request.review_id} has no decision record")
        return DecisionRecord.model_validate(self.codec.decode(request.decision, "DecisionRecord").record)

    @staticmethod
    def _incident(request: ReviewRequest) -> str:
        return request.incident_id or request.event_id

    @staticmethod
    def _pending(book: IncidentBook) -> list[ReviewState]:
        return [state for state in book.reviews.values() if state.request.status == "pending"]
