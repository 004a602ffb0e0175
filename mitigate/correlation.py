"""Correlate stage: signals become incidents, so an alert storm yields a handful of decisions.

- A repeat of a signal already on an open incident is counted, not acted on
  again, until the repeat interval has passed or its severity rises.
- Related signals (same subsystem, anomaly type and grouping labels) within
  the group window join the same incident.
- A signal that starts firing too often within the flapping window goes to
  review once and is then only counted.
- A resolved signal closes its incident once no signal of it is firing. Steps
  not yet sent are cancelled. An incident still waiting for review is recorded
  as resolved without action.

State is kept as JSON in string-keyed stores: Faust tables in the worker, dicts
in `mitigate simulate`. Times are the signals' event times, so a replay of the
same signals gives the same incidents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from mitigate.automation import AutomationSettings
from mitigate.decision import Decider, Decision, IncidentView, RecordBuilder, plan_steps, risk_score, stable_id
from mitigate.limits import Breaker, Budget, RunCaps, epoch_ms
from mitigate.models import SEVERITIES, GateResult, PlanControl, PlanStep, Severity, Signal, Silence
from mitigate.policy import ActivePolicy, PolicyIndex, format_duration
from mitigate.silences import active_silence

logger = logging.getLogger(__name__)

Store = MutableMapping[str, bytes]

# Key prefix, in the incidents store, of the pointer from a group key to its current incident id.
GROUP_PREFIX = "group|"


@dataclass
class Incident:
    """An incident as stored, keyed by its incident id."""

    incident_id: str
    opened_ms: int
    last_seen_ms: int
    signals: int = 0
    firing: list[str] = field(default_factory=list)  # fingerprints currently firing
    state: str = "open"  # open or resolved
    decided_severity: str | None = None  # highest severity a decision was made for
    decided_ms: int | None = None
    pending_review: str | None = None  # review id of an unanswered review request
    flapping: bool = False
    plan_id: str | None = None  # the plan the orchestrator runs for the incident, if any

    def view(self, trigger: str) -> IncidentView:
        return IncidentView(
            incident_id=self.incident_id,
            signals=self.signals,
            first_seen=_datetime(self.opened_ms),
            last_seen=_datetime(self.last_seen_ms),
            trigger=trigger,
        )


@dataclass
class Fingerprint:
    """State of one signal identity (fingerprint): its incident, its status and its recent firing starts."""

    incident: str  # id of the incident the signal was last counted on
    status: str
    last_seen_ms: int
    starts: list[int] = field(default_factory=list)  # firing starts within the flapping window
    flapping_since: int | None = None  # when it went to review for flapping; cleared once it calms down


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def _datetime(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch / 1000, UTC)


def _load(store: Store, key: str, kind: type[Any]) -> Any:
    raw = store.get(key)
    return kind(**orjson.loads(raw)) if raw else None


def _save(store: Store, key: str, value: Any) -> None:
    store[key] = orjson.dumps(value.__dict__)


class StoreLimiter:
    """Budgets, run caps and the circuit breaker, over the engine's stores."""

    def __init__(self, settings: AutomationSettings, budgets: Store, runs: Store, breaker: Breaker) -> None:
        self.budget = Budget(settings.budgets, budgets)
        self.run_caps = RunCaps(runs)
        self.breaker = breaker

    def gates(self, policy: ActivePolicy, signal: Signal, steps: list[PlanStep], now: datetime) -> list[GateResult]:
        targets = sorted({step.target for step in steps}) or [signal.event.entity]
        results = [self.budget.gate(signal.event.subsystem, len(steps), now)]
        for target in targets:
            results.extend(self.run_caps.gates(policy, signal.event.fingerprint, target, now))
        results.append(self.breaker.gate(now))
        return results

    def spend(self, policy: ActivePolicy, signal: Signal, steps: list[PlanStep], now: datetime) -> None:
        self.budget.spend(signal.event.subsystem, len(steps), now)
        for target in sorted({step.target for step in steps}) or [signal.event.entity]:
            self.run_caps.record(policy, signal.event.fingerprint, target, now)
        self.breaker.record_commands(len(steps), now)


class IncidentEngine:
    """Correlates each signal with its incident and decides when the incident needs a decision."""

    def __init__(
        self,
        *,
        settings: AutomationSettings,
        decider: Decider,
        policies: Callable[[], PolicyIndex],
        silences: Callable[[], Iterable[Silence]],
        incidents: Store,
        fingerprints: Store,
        budgets: Store,
        runs: Store,
    ) -> None:
        self.settings = settings
        self.decider = decider
        self.policies = policies
        self.silences = silences
        self.incidents = incidents
        self.fingerprints = fingerprints
        self.budgets = budgets
        self.runs = runs

    def group_key(self, signal: Signal) -> str:
        event = signal.event
        labels = ",".join(f"{name}={event.labels.get(name, '')}" for name in self.settings.correlation.group_labels)
        entity = event.entity if self.settings.correlation.group_by_entity else ""
        return f"{event.subsystem}|{event.anomaly_type}|{entity}|{labels}"

    def process(self, signal: Signal, breaker: Breaker) -> Decision:
        # Not idempotent: the state counts every call. The decision stage keeps the
        # messages of recent signals (mitigate.redelivery) so that a signal
        # delivered again after a crash is not decided twice.
        event = signal.event
        now_ms = epoch_ms(event.event_time)
        group = self.group_key(signal)
        # Scoped by subsystem: detectors that reuse a fingerprint in two subsystems
        # must not merge their signals into one incident.
        fingerprint_key = f"{event.subsystem}|{event.fingerprint}"
        fingerprint: Fingerprint | None = _load(self.fingerprints, fingerprint_key, Fingerprint)
        own = self._open_incident(fingerprint.incident) if fingerprint is not None else None
        was_firing = own is not None and fingerprint is not None and fingerprint.status == "firing" \
            and event.fingerprint in own.firing

        if event.status == "resolved":
            return self._resolve(signal, own if was_firing else None, fingerprint, fingerprint_key, now_ms)

        # A repeat stays on its own incident however long it fires; a new signal
        # joins the group's current incident only within the group window.
        incident = own if was_firing else self._group_incident(group, now_ms)
        trigger = None
        if incident is None:
            incident = Incident(stable_id("incident", group, str(now_ms)), now_ms, now_ms)
            trigger = "new incident"
            self.incidents[GROUP_PREFIX + group] = incident.incident_id.encode()
        incident.signals += 1
        incident.last_seen_ms = now_ms
        if event.fingerprint not in incident.firing:
            incident.firing.append(event.fingerprint)

        if fingerprint is None:
            fingerprint = Fingerprint(incident=incident.incident_id, status="firing", last_seen_ms=now_ms)
        # Starts older than the flapping window are dropped on every signal, so a
        # signal that goes on firing steadily stops counting as flapping.
        window_start = now_ms - int(self.settings.correlation.flapping.window * 1000)
        fingerprint.starts = [start for start in fingerprint.starts if start > window_start]
        if not was_firing:
            fingerprint.starts.append(now_ms)
        fingerprint.incident, fingerprint.status, fingerprint.last_seen_ms = incident.incident_id, "firing", now_ms

        decision = self._decide(signal, incident, fingerprint, trigger, was_firing, breaker)
        _save(self.fingerprints, fingerprint_key, fingerprint)
        _save(self.incidents, incident.incident_id, incident)
        if trigger == "new incident":
            decision = replace(decision, opened_incident=True)
        return decision

    def _open_incident(self, incident_id: str) -> Incident | None:
        incident: Incident | None = _load(self.incidents, incident_id, Incident)
        return incident if incident is not None and incident.state == "open" else None

    def _group_incident(self, group: str, now_ms: int) -> Incident | None:
        current = self.incidents.get(GROUP_PREFIX + group)
        incident = self._open_incident(current.decode()) if current else None
        if incident is None:
            return None
        if now_ms - incident.last_seen_ms > self.settings.correlation.group_window * 1000:
            return None  # quiet for longer than the group window: a new signal opens a new incident
        return incident

    def _decide(
        self, signal: Signal, incident: Incident, fingerprint: Fingerprint, trigger: str | None,
        was_firing: bool, breaker: Breaker,
    ) -> Decision:
        event = signal.event
        now = event.event_time
        now_ms = epoch_ms(now)
        silence = active_silence(self.silences(), event, now)
        build = RecordBuilder(signal, stable_id("decision", event.event_id), now,
                              risk_score(event, signal.asset), incident.view(trigger or "signal on the incident"))

        if silence is not None:
            reason = f"silenced by {silence.author} until {silence.ends_at.isoformat()}: {silence.reason}"
            return Decision(build("suppress", "silenced", reason, silence_id=silence.silence_id))

        flapping = self.settings.correlation.flapping
        if len(fingerprint.starts) < flapping.transitions:
            fingerprint.flapping_since = None
        elif fingerprint.flapping_since is not None:
            return Decision(build("suppress", "flapping",
                                  f"signal is flapping and went to review at "
                                  f"{_datetime(fingerprint.flapping_since).isoformat()}; counted on incident "
                                  f"{incident.incident_id} ({incident.signals} signals)"))
        else:
            fingerprint.flapping_since = now_ms
            incident.flapping = True
            reason = (
                f"signal started firing {len(fingerprint.starts)} times within {format_duration(flapping.window)} "
                f"(limit {flapping.transitions}); a human decides instead of repeated actions"
            )
            return self._flapping_review(signal, build, reason, incident)

        if trigger is None:
            trigger = self._redecide_trigger(event.severity, incident, now_ms)
        if trigger is None:
            code = "duplicate" if was_firing else "correlated"
            return Decision(build("suppress", code,
                                  f"counted on incident {incident.incident_id} ({incident.signals} signals), "
                                  "which was decided already"))

        limiter = StoreLimiter(self.settings, self.budgets, self.runs, breaker)
        decision = self.decider.decide(signal, self.policies(), now, incident.view(trigger), limiter)
        self._remember(incident, decision, event.severity, now_ms)
        return decision

    def _redecide_trigger(self, severity: Severity, incident: Incident, now_ms: int) -> str | None:
        if incident.decided_ms is None:
            return "first signal of the incident that is not silenced"
        if incident.decided_severity is not None and _rank(severity) > _rank(incident.decided_severity):
            return f"severity rose from {incident.decided_severity} to {severity}"
        if incident.decided_ms is not None and \
                now_ms - incident.decided_ms >= self.settings.correlation.repeat_interval * 1000:
            return "repeat after the repeat interval"
        return None

    def _remember(self, incident: Incident, decision: Decision, severity: Severity, now_ms: int) -> None:
        record = decision.record
        if incident.decided_severity is None or _rank(severity) > _rank(incident.decided_severity):
            incident.decided_severity = severity
        incident.decided_ms = now_ms
        incident.pending_review = record.review_id if record.outcome == "review" else None
        if record.outcome == "auto":
            incident.plan_id = record.decision_id

    def _flapping_review(self, signal: Signal, build: RecordBuilder, reason: str, incident: Incident) -> Decision:
        """Send a flapping signal to review, with the plan of the policy that covers it as the recommendation."""
        match = self.policies().match(signal.event)
        policy = match.policy if match is not None else None
        steps = plan_steps(policy, signal.event) if policy is not None else []
        decision = self.decider.review(build, "flapping", reason, policy, [], steps)
        incident.pending_review = decision.record.review_id
        incident.decided_severity = signal.event.severity
        incident.decided_ms = epoch_ms(build.now)
        return decision

    def _resolve(
        self, signal: Signal, incident: Incident | None, fingerprint: Fingerprint | None, fingerprint_key: str,
        now_ms: int,
    ) -> Decision:
        event = signal.event
        if fingerprint is not None:
            fingerprint.status, fingerprint.last_seen_ms = "resolved", now_ms
            _save(self.fingerprints, fingerprint_key, fingerprint)

        if incident is not None:
            incident.signals += 1
            incident.last_seen_ms = now_ms
        view = incident.view("resolution") if incident is not None else None
        build = RecordBuilder(signal, stable_id("decision", event.event_id), event.event_time,
                              risk_score(event, signal.asset), view)
        if incident is None:
            return Decision(build("suppress", "signal-resolved",
                                  "the detector reports the signal as resolved; no open incident has it firing"))

        incident.firing.remove(event.fingerprint)
        if incident.firing:
            _save(self.incidents, incident.incident_id, incident)
            return Decision(build("suppress", "signal-resolved",
                                  f"signal resolved; still firing on the incident: {len(incident.firing)} other "
                                  f"signal{'s' if len(incident.firing) != 1 else ''}"))

        incident.state = "resolved"
        parts = [f"incident {incident.incident_id} resolved: no signal of it fires any more"]
        if incident.pending_review is not None:
            parts.append(f"review {incident.pending_review} closes without action if it is still pending")
        if incident.plan_id is not None:
            parts.append(f"plan {incident.plan_id} is cancelled: its steps not yet started will not run")
        _save(self.incidents, incident.incident_id, incident)
        record = build("suppress", "incident-resolved", "; ".join(parts))
        cancel = None
        if incident.plan_id is not None or incident.pending_review is not None:
            # Only the orchestrate agent has the state of each step and of each review request
            # (an approved request runs a plan too), so it cancels and closes what is still open.
            cancel = PlanControl(kind="cancel", incident_id=incident.incident_id,
                                 plan_id=incident.plan_id or incident.pending_review or incident.incident_id,
                                 trace_id=signal.trace_id, issued_at=event.event_time,
                                 reason=f"incident resolved by signal {event.event_id}")
        return Decision(record, plan=cancel)
