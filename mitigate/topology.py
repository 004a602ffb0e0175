"""Every Kafka topic the pipeline reads or writes, declared once.

topology.md documents the same topics with their producers and consumers; a
unit test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import AfterValidator

DAY_MS = 24 * 60 * 60 * 1000
DEAD_LETTER_MAX_BYTES = 2 * 1024 * 1024

# Executors that get a command topic. A policy may only name one of these, so
# that the pipeline never sends to a topic that does not exist.
EXECUTORS: tuple[str, ...] = ("demo-target", "shell", "ticket", "webhook")

CleanupPolicy = Literal["delete", "compact"]


def check_executor(name: str) -> str:
    """Return `name` if it is one of EXECUTORS; raise ValueError naming the known ones otherwise."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; use one of: {', '.join(EXECUTORS)}")
    return name


# An executor name in a configuration model: pydantic reports an unknown one with check_executor's message.
ExecutorName = Annotated[str, AfterValidator(check_executor)]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its base name (before the deployment prefix) and its settings."""

    base_name: str
    partitions: int
    cleanup_policy: CleanupPolicy
    retention_ms: int | None
    key: str
    schema: str
    description: str
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        settings: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            settings["retention.ms"] = str(self.retention_ms)
        settings.update(self.extra_config)
        return settings


@dataclass(frozen=True, slots=True)
class Topology:
    """The topics of one deployment. `prefix` separates deployments (and tests) on one cluster."""

    prefix: str = ""
    partitions: int = 4

    def name(self, base_name: str) -> str:
        return self.prefix + base_name

    @property
    def anomalies(self) -> str:
        return self.name("anomalies")

    @property
    def dead_letters(self) -> str:
        return self.name("anomalies.dead-letter")

    @property
    def decisions(self) -> str:
        return self.name("decisions")

    @property
    def review_requests(self) -> str:
        return self.name("reviews.requests")

    @property
    def review_verdicts(self) -> str:
        return self.name("reviews.verdicts")

    @property
    def metrics(self) -> str:
        return self.name("metrics")

    @property
    def signals(self) -> str:
        return self.name("signals")

    @property
    def plans(self) -> str:
        return self.name("plans")

    @property
    def action_results(self) -> str:
        return self.name("action-results")

    @property
    def silences(self) -> str:
        return self.name("silences")

    @property
    def policies(self) -> str:
        return self.name("policies")

    @property
    def assets(self) -> str:
        return self.name("assets")

    def actions(self, executor: str) -> str:
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; known executors: {', '.join(EXECUTORS)}")
        return self.name(f"actions.{executor}")

    def specs(self) -> list[TopicSpec]:
        """Return all topics, in the order topology.md lists them."""
        specs = [
            TopicSpec("anomalies", self.partitions, "delete", 7 * DAY_MS, "entity", "AnomalyEvent",
                      "Signals from detectors."),
            TopicSpec("anomalies.dead-letter", self.partitions, "delete", 30 * DAY_MS, "original key",
                      "DeadLetter", "Input the pipeline rejected, with the original bytes and the reason.",
                      # Room for a rejected input of the broker's default 1 MiB limit plus the envelope.
                      {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}),
            TopicSpec("signals", self.partitions, "delete", 1 * DAY_MS, "subsystem", "Signal",
                      "Accepted, enriched events, re-keyed so that one subsystem is on one partition."),
            TopicSpec("decisions", self.partitions, "delete", 30 * DAY_MS, "entity", "DecisionRecord",
                      "Audit log of every decision."),
            # Keyed by incident like plans and results: the orchestrate agent owns the
            # state of each request and applies the verdicts on it.
            TopicSpec("reviews.requests", self.partitions, "delete", 7 * DAY_MS, "incident id", "ReviewRequest",
                      "Decisions that need a human, and every later state of each request."),
            TopicSpec("reviews.verdicts", self.partitions, "delete", 30 * DAY_MS, "incident id", "ReviewVerdict",
                      "Operators' answers to review requests."),
            TopicSpec("policies", 1, "compact", None, "policy id@version", "PolicyVersion",
                      "Every version of every policy; feeds the policy table."),
            TopicSpec("assets", self.partitions, "compact", None, "entity", "AssetContext",
                      "Latest context of every asset; feeds the asset table."),
            TopicSpec("silences", 1, "compact", None, "silence id", "Silence",
                      "Latest state of every silence; feeds the silence table."),
            TopicSpec("plans", self.partitions, "delete", 7 * DAY_MS, "incident id", "PlanControl",
                      "Plans to start or cancel, and ticks of the orchestrator's timer."),
            TopicSpec("action-results", self.partitions, "delete", 7 * DAY_MS, "incident id", "ActionResult",
                      "What executors did with each command."),
            TopicSpec("metrics", 1, "delete", 30 * DAY_MS, "worker", "MetricsWindow",
                      "Figures of each tumbling window, per worker, for dashboards."),
        ]
        for executor in EXECUTORS:
            specs.append(
                TopicSpec(f"actions.{executor}", self.partitions, "delete", 7 * DAY_MS, "target", "ActionCommand",
                          f"Commands for the {executor} executor.")
            )
        return specs
