"""Limits on automation: correlation windows, blast-radius budgets and the circuit breaker.

Read from config/automation.yaml (MITIGATE_AUTOMATION_FILE); every field has a
default, so an empty file is valid.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mitigate.durations import Duration
from mitigate.errors import ConfigurationError
from mitigate.topology import ExecutorName, check_executor


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Flapping(Strict):
    """A signal that starts firing `transitions` times within `window` is flapping."""

    transitions: int = Field(4, ge=2, le=1000)
    window: Duration = 3600.0


class Correlation(Strict):
    """Rules that turn signals into incidents: grouping, repeats and flapping."""

    # Signals of one subsystem and anomaly type (and the same values of these
    # labels) within group_window of each other form one incident.
    group_labels: list[str] = Field(default_factory=list)
    # True gives every entity incidents of its own, so that one asset's context
    # (known, frozen, in maintenance) never decides for another's signals.
    group_by_entity: bool = False
    group_window: Duration = 300.0
    # A repeat of a signal already on the incident is decided again only after
    # this long, like a repeat notification.
    repeat_interval: Duration = 3600.0
    flapping: Flapping = Field(default_factory=lambda: Flapping())


class Budgets(Strict):
    """At most `max_commands` automated commands per subsystem within `window`."""

    window: Duration = 600.0
    max_commands: int = Field(10, ge=0)
    # Overrides by subsystem pattern; the first matching pattern applies.
    subsystems: dict[str, int] = Field(default_factory=dict)

    def limit_for(self, subsystem: str) -> int:
        for pattern, limit in self.subsystems.items():
            if fnmatchcase(subsystem, pattern):
                return limit
        return self.max_commands


class CircuitBreaker(Strict):
    """Trips to review-only when automation acts too often or fails too often, for `cool_down`."""

    window: Duration = 300.0
    max_commands: int = Field(100, ge=1)
    max_failure_rate: float = Field(0.5, gt=0.0, le=1.0)
    min_results: int = Field(10, ge=1)
    cool_down: Duration = 900.0


class Orchestration(Strict):
    """Retries and deadlines of plan steps."""

    retry_base: Duration = 2.0  # first retry delay; doubles per attempt, with up to 50% jitter
    retry_max: Duration = 120.0
    # Time a result may take to arrive after the command's deadline before the
    # step counts as timed out.
    result_grace: Duration = 5.0
    review_timeout: Duration = 1800.0  # deadline of the review request raised when a plan fails


class Escalation(Strict):
    """The command sent when a review request expires with on_expiry escalate: a notification, not a remedy."""

    executor: ExecutorName = "ticket"
    action: str = Field("open-ticket", pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")
    parameters: dict[str, str] = Field(default_factory=lambda: {"queue": "operations"})
    timeout: Duration = 300.0


class Reviews(Strict):
    """Settings of the review stage: the escalation of expired requests, and how long an early verdict waits."""

    # None records the escalation of an expired request without sending a command.
    escalation: Escalation | None = Field(default_factory=lambda: Escalation())
    # A verdict can overtake the request it answers (they travel on different
    # topics); it waits this long for the request before it is rejected.
    verdict_wait: Duration = 60.0


class Costs(Strict):
    """Prices for cost per incident, in one unit of your choice (operator minutes, currency)."""

    unit: str = "cost units"
    review: float = Field(0.0, ge=0.0)  # per review request
    executors: dict[str, float] = Field(default_factory=dict)  # per command, by executor; missing ones cost 0

    @field_validator("executors")
    @classmethod
    def _known_executors(cls, value: dict[str, float]) -> dict[str, float]:
        for name, price in value.items():
            check_executor(name)
            if price < 0:
                raise ValueError(f"cost of {name} is negative ({price}); use 0 or more")
        return value


class MetricsSettings(Strict):
    """The metrics stage: window length and costs."""

    window: Duration = 60.0  # tumbling windows published to the metrics topic
    costs: Costs = Field(default_factory=lambda: Costs())


class AutomationSettings(Strict):
    correlation: Correlation = Field(default_factory=lambda: Correlation())
    orchestration: Orchestration = Field(default_factory=lambda: Orchestration())
    reviews: Reviews = Field(default_factory=lambda: Reviews())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    budgets: Budgets = Field(default_factory=lambda: Budgets())
    circuit_breaker: CircuitBreaker = Field(default_factory=lambda: CircuitBreaker())

    @classmethod
    def load(cls, path: Path) -> AutomationSettings:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path}: invalid YAML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "(document)"
            message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
            raise ConfigurationError(f"{path}: {field}: {message}") from exc
