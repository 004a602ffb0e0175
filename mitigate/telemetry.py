"""Metrics stage: what the pipeline did, as Prometheus metrics and as tumbling windows for the metrics topic.

The stages report each message they produce or consume to one Telemetry
object per worker. It updates the Prometheus counters and histograms (served
on the worker's /metrics page) and adds the same observations to the window
of the current wall-clock time. A timer publishes every window that has ended
as a MetricsWindow record. The counts are those of this worker's partitions:
with several workers, add up their windows of the same start.

Labels stay bounded: reason codes, outcomes, executors, statuses and verdict
kinds are fixed sets, and policies are the published policy ids.
"""

from __future__ import annotations

import os
import random
import socket
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter as PromCounter, Gauge, Histogram, disable_created_metrics

from mitigate.automation import MetricsSettings
from mitigate.models import (
    ActionCommand,
    ActionResult,
    DecisionRecord,
    MetricsWindow,
    Percentiles,
    PlanControl,
    ReviewRequest,
)

# Without this every counter also exports a *_created series with its creation time, which nothing here uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Samples kept per distribution and window; beyond this a uniform reservoir sample is kept.
MAX_SAMPLES = 10_000
RECENT_DECISIONS = 25

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SLOW_BUCKETS = (1, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def percentiles(samples: list[float]) -> Percentiles | None:
    """Summarise samples by nearest rank; None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(share: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.5) - 1))]

    return Percentiles(count=len(ordered), p50=rank(0.5), p90=rank(0.9), p99=rank(0.99), max=ordered[-1])


@dataclass
class Sample:
    """A reservoir of at most MAX_SAMPLES values, and how many were offered."""

    values: list[float] = field(default_factory=list)
    seen: int = 0

    def add(self, value: float, chooser: random.Random) -> None:
        self.seen += 1
        if len(self.values) < MAX_SAMPLES:
            self.values.append(value)
            return
        slot = chooser.randrange(self.seen)
        if slot < MAX_SAMPLES:
            self.values[slot] = value

    def summary(self) -> Percentiles | None:
        result = percentiles(self.values)
        return result.model_copy(update={"count": self.seen}) if result is not None else None


@dataclass
class Tally:
    """The counts of one window, or of everything since the worker started."""

    anomalies_in: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    incidents_opened: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    decisions_by_policy: Counter[str] = field(default_factory=Counter)
    review_requests: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    review_wait_ms: Sample = field(default_factory=Sample)
    event_to_command_ms: Sample = field(default_factory=Sample)
    ingest_to_command_ms: Sample = field(default_factory=Sample)
    time_to_containment_ms: Sample = field(default_factory=Sample)
    plans_completed_automated: int = 0
    plans_completed_approved: int = 0
    signals_confirmed: int = 0
    signals_rejected: int = 0
    cost: float = 0.0
    incidents: set[str] = field(default_factory=set)  # touched in the window; not kept for the totals

    def mitigated_without_human(self) -> float | None:
        total = self.plans_completed_automated + self.plans_completed_approved
        return self.plans_completed_automated / total if total else None

    def precision(self) -> float | None:
        total = self.signals_confirmed + self.signals_rejected
        return self.signals_confirmed / total if total else None

    def cost_per_incident(self) -> float | None:
        return self.cost / len(self.incidents) if self.incidents else None


class Telemetry:
    """Counts what one worker's stages do, for Prometheus and for the metrics topic."""

    def __init__(self, settings: MetricsSettings, worker: str | None = None) -> None:
        self.settings = settings
        self.worker = worker or default_worker_name()
        self.window_ms = int(settings.window * 1000)
        self.registry = CollectorRegistry()
        self.started = datetime.now(UTC)
        self.totals = Tally()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_DECISIONS)
        self.pending_reviews = 0
        self._windows: dict[int, Tally] = {}
        self.last_window: MetricsWindow | None = None
        self._chooser = random.Random(0)

        registry = self.registry
        self.anomalies_total = PromCounter("mitigate_anomalies", "Anomaly events consumed by intake.",
                                           registry=registry)
        self.dead_letters_total = PromCounter("mitigate_dead_letters", "Inputs dead-lettered, by reason code.",
                                              ["reason"], registry=registry)
        self.incidents_total = PromCounter("mitigate_incidents_opened", "Incidents opened by correlation.",
                                           registry=registry)
        self.decisions_total = PromCounter("mitigate_decisions", "Decisions about events, by outcome and policy id.",
                                           ["outcome", "policy"], registry=registry)
        self.review_requests_total = PromCounter("mitigate_review_requests", "Review requests raised, by reason code.",
                                                 ["reason"], registry=registry)
        self.commands_total = PromCounter("mitigate_commands", "Commands sent, by executor.", ["executor"],
                                          registry=registry)
        self.results_total = PromCounter("mitigate_results", "Action results received, by executor and status.",
                                         ["executor", "status"], registry=registry)
        self.verdicts_total = PromCounter("mitigate_verdicts", "Operator verdicts, by kind and outcome.",
                                          ["kind", "outcome"], registry=registry)
        self.plans_completed_total = PromCounter("mitigate_plans_completed",
                                                 "Plans completed, by who decided them (automation or operator).",
                                                 ["decided_by"], registry=registry)
        self.judgements_total = PromCounter("mitigate_signal_judgements",
                                            "Signals judged by verdicts and results: confirmed or rejected.",
                                            ["judgement"], registry=registry)
        self.cost_total = PromCounter("mitigate_cost", f"Cost of commands and reviews, in {settings.costs.unit}.",
                                      registry=registry)

        self.review_wait = Histogram("mitigate_review_wait_seconds",
                                     "From a review request's creation to the verdict that ended it.",
                                     buckets=SLOW_BUCKETS, registry=registry)
        self.event_to_command = Histogram("mitigate_event_to_command_seconds",
                                          "From the deciding signal's event time to its plan's first commands.",
                                          buckets=LATENCY_BUCKETS + SLOW_BUCKETS[5:], registry=registry)
        self.ingest_to_command = Histogram("mitigate_ingest_to_command_seconds",
                                           "From the deciding signal's intake to its plan's first commands.",
                                           buckets=LATENCY_BUCKETS, registry=registry)
        self.time_to_containment = Histogram("mitigate_time_to_containment_seconds",
                                             "From an incident's first signal to its plan's first successful step.",
                                             buckets=SLOW_BUCKETS, registry=registry)
        self.pending_reviews_gauge = Gauge("mitigate_pending_reviews",
                                           "Review requests waiting for a verdict on this worker's partitions.",
                                           registry=registry)

    # Windows

    def _tallies(self, now: datetime | None = None) -> tuple[Tally, Tally]:
        moment = now or datetime.now(UTC)
        start = int(moment.timestamp() * 1000) // self.window_ms * self.window_ms
        return self.totals, self._windows.setdefault(start, Tally())

    def ended_windows(self, now: datetime) -> list[MetricsWindow]:
        """Remove and return the windows that ended by `now`."""
        now_ms = int(now.timestamp() * 1000)
        ended = sorted(start for start in self._windows if start + self.window_ms <= now_ms)
        windows = [self._build(start, self._windows.pop(start), complete=True) for start in ended]
        if windows:
            self.last_window = windows[-1]
        return windows

    def flush(self, now: datetime) -> list[MetricsWindow]:
        """Remove and return every window, the current one marked incomplete (the worker is stopping)."""
        windows = self.ended_windows(now)
        for start in sorted(self._windows):
            windows.append(self._build(start, self._windows.pop(start), complete=False))
        return windows

    def _build(self, start: int, tally: Tally, *, complete: bool) -> MetricsWindow:
        return MetricsWindow(
            window_start=datetime.fromtimestamp(start / 1000, UTC),
            window_end=datetime.fromtimestamp((start + self.window_ms) / 1000, UTC),
            worker=self.worker,
            complete=complete,
            anomalies_in=tally.anomalies_in,
            dead_letters=dict(tally.dead_letters),
            incidents_opened=tally.incidents_opened,
            decisions=dict(tally.decisions),
            decisions_by_policy=dict(tally.decisions_by_policy),
            review_requests=tally.review_requests,
            commands=dict(tally.commands),
            results=dict(tally.results),
            verdicts=dict(tally.verdicts),
            review_wait_ms=tally.review_wait_ms.summary(),
            event_to_command_ms=tally.event_to_command_ms.summary(),
            ingest_to_command_ms=tally.ingest_to_command_ms.summary(),
            time_to_containment_ms=tally.time_to_containment_ms.summary(),
            plans_completed_automated=tally.plans_completed_automated,
            plans_completed_approved=tally.plans_completed_approved,
            mitigated_without_human=tally.mitigated_without_human(),
            signals_confirmed=tally.signals_confirmed,
            signals_rejected=tally.signals_rejected,
            precision=tally.precision(),
            cost=round(tally.cost, 6),
            incidents_touched=len(tally.incidents),
            cost_per_incident=tally.cost_per_incident(),
            cost_unit=self.settings.costs.unit,
        )

    # Intake and decide

    def anomaly_in(self) -> None:
        self.anomalies_total.inc()
        for tally in self._tallies():
            tally.anomalies_in += 1

    def dead_letter(self, reason: str) -> None:
        self.dead_letters_total.labels(reason).inc()
        for tally in self._tallies():
            tally.dead_letters[reason] += 1

    def decision(self, record: DecisionRecord, opened_incident: bool) -> None:
        policy = record.policy_id or "none"
        self.decisions_total.labels(record.outcome, policy).inc()
        if opened_incident:
            self.incidents_total.inc()
        for tally in self._tallies():
            tally.decisions[record.outcome] += 1
            tally.decisions_by_policy[f"{policy}@{record.policy_version}" if record.policy_id else "none"] += 1
            tally.incidents_opened += int(opened_incident)
            self._touch(tally, record.incident_id)
        self.recent.appendleft({
            "decided_at": record.decided_at.isoformat(), "outcome": record.outcome, "entity": record.entity,
            "subsystem": record.subsystem, "severity": record.severity, "reason_code": record.reason_code,
            "reason": record.reason, "policy": f"{record.policy_id} v{record.policy_version}" if record.policy_id else "",
            "incident_id": record.incident_id,
        })

    def review_request(self, request: ReviewRequest) -> None:
        self.review_requests_total.labels(request.reason_code).inc()
        self.cost_total.inc(self.settings.costs.review)
        for tally in self._tallies():
            tally.review_requests += 1
            tally.cost += self.settings.costs.review
            self._touch(tally, request.incident_id)

    # Orchestrate and review

    def command(self, command: ActionCommand) -> None:
        cost = self.settings.costs.executors.get(command.executor, 0.0)
        self.commands_total.labels(command.executor).inc()
        self.cost_total.inc(cost)
        for tally in self._tallies():
            tally.commands[command.executor] += 1
            tally.cost += cost
            self._touch(tally, command.incident_id)

    def plan_started(self, control: PlanControl, event_time: datetime, ingest_time: datetime,
                     now: datetime) -> None:
        """Observe the latency to the first commands of a plan that automation decided."""
        to_event_ms = max(0.0, (now - event_time).total_seconds() * 1000)
        to_ingest_ms = max(0.0, (now - ingest_time).total_seconds() * 1000)
        self.event_to_command.observe(to_event_ms / 1000)
        self.ingest_to_command.observe(to_ingest_ms / 1000)
        for tally in self._tallies(now):
            tally.event_to_command_ms.add(to_event_ms, self._chooser)
            tally.ingest_to_command_ms.add(to_ingest_ms, self._chooser)
            self._touch(tally, control.incident_id)

    def result(self, result: ActionResult) -> None:
        self.results_total.labels(result.executor, result.status).inc()
        for tally in self._tallies():
            tally.results[result.status] += 1
            self._touch(tally, result.incident_id)

    def contained(self, incident_id: str, first_seen: datetime, now: datetime) -> None:
        """Observe the time from an incident's first signal to its plan's first successful step."""
        elapsed_ms = max(0.0, (now - first_seen).total_seconds() * 1000)
        self.time_to_containment.observe(elapsed_ms / 1000)
        for tally in self._tallies(now):
            tally.time_to_containment_ms.add(elapsed_ms, self._chooser)
            self._touch(tally, incident_id)

    def plan_completed(self, origin: str, changed_something: bool) -> None:
        """Count a completed plan, and judge its signal by whether any step changed something."""
        decided_by = "operator" if origin == "review" else "automation"
        self.plans_completed_total.labels(decided_by).inc()
        if origin == "policy":
            # An operator's verdict judged the signals of approved plans already.
            self._judge(confirmed=changed_something)
        for tally in self._tallies():
            if origin == "review":
                tally.plans_completed_approved += 1
            else:
                tally.plans_completed_automated += 1

    def verdict(self, kind: str, applied: bool, incident_id: str | None, ended: ReviewRequest | None,
                now: datetime) -> None:
        """Count a verdict; `ended` is the request it ended, if it ended one."""
        outcome = "applied" if applied else "rejected"
        self.verdicts_total.labels(kind, outcome).inc()
        for tally in self._tallies(now):
            tally.verdicts[f"{kind}-{outcome}"] += 1
            self._touch(tally, incident_id)
        if applied and ended is not None and ended.status in ("approved", "modified", "vetoed"):
            self._judge(confirmed=ended.status != "vetoed")
            wait_ms = max(0.0, (now - ended.created_at).total_seconds() * 1000)
            self.review_wait.observe(wait_ms / 1000)
            for tally in self._tallies(now):
                tally.review_wait_ms.add(wait_ms, self._chooser)

    def reviews_pending_change(self, opened: int, ended: int) -> None:
        """Follow the requests waiting for a verdict on this worker's partitions (the orchestrate agent's)."""
        self.set_pending_reviews(max(0, self.pending_reviews + opened - ended))

    def set_pending_reviews(self, count: int) -> None:
        self.pending_reviews = count
        self.pending_reviews_gauge.set(count)

    def _judge(self, *, confirmed: bool) -> None:
        self.judgements_total.labels("confirmed" if confirmed else "rejected").inc()
        for tally in self._tallies():
            if confirmed:
                tally.signals_confirmed += 1
            else:
                tally.signals_rejected += 1

    def _touch(self, tally: Tally, incident_id: str | None) -> None:
        # The totals would keep every incident id for the worker's lifetime, so only windows track them.
        if incident_id and tally is not self.totals:
            tally.incidents.add(incident_id)

    # Dashboard

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        """Figures for the dashboard page: totals since start, the last ended window's rates, recent decisions."""
        moment = now or datetime.now(UTC)
        totals = self.totals
        uptime_s = max(1.0, (moment - self.started).total_seconds())
        containment = totals.time_to_containment_ms.summary()
        latency = totals.ingest_to_command_ms.summary()
        return {
            "worker": self.worker,
            "now": moment.isoformat(),
            "uptime_s": round(uptime_s, 1),
            "window_s": self.settings.window,
            "anomalies_in": totals.anomalies_in,
            "anomalies_per_s": round(totals.anomalies_in / uptime_s, 3),
            "last_window": self.last_window.model_dump(mode="json") if self.last_window else None,
            "recent_anomalies_per_s": self._recent_rate(moment),
            "dead_letters": dict(totals.dead_letters),
            "incidents_opened": totals.incidents_opened,
            "decisions": dict(totals.decisions),
            "commands": dict(totals.commands),
            "results": dict(totals.results),
            "verdicts": dict(totals.verdicts),
            "pending_reviews": self.pending_reviews,
            "review_requests": totals.review_requests,
            "time_to_containment_p50_s": containment.p50 / 1000 if containment else None,
            "ingest_to_command_p99_ms": latency.p99 if latency else None,
            "mitigated_without_human": totals.mitigated_without_human(),
            "precision": totals.precision(),
            "cost_per_incident": totals.cost / totals.incidents_opened if totals.incidents_opened else None,
            "cost_unit": self.settings.costs.unit,
            "recent_decisions": list(self.recent),
        }

    def _recent_rate(self, now: datetime) -> float:
        """Anomalies per second in the last ended window, or 0 when no window ended within a window's length.

        Windows without activity are not published, so an old last window means nothing arrived since.
        """
        window = self.last_window
        if window is None or (now - window.window_end).total_seconds() > self.settings.window:
            return 0.0
        return round(window.anomalies_in / self.settings.window, 3)
